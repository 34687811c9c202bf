"""The PyTorch kernel family: each op as PyTorch calls on the folded weights, NHWC (channels_last).

On the CPU in fp32 the convolutions call oneDNN directly with weights packed once into its
blocked layout (``mkldnn._convolution_pointwise``, the op inductor's CPU freezing path uses);
elsewhere ``F.conv2d`` (cuDNN on GPU). ReLU is an in-place pass after the conv, not oneDNN's fused
ReLU post-op: that one maps NaN to 0, and a NaN must reach the output as it does in eager.
oneDNN and cuDNN cannot write into a channel slice of a larger tensor, so when given ``out`` an
op computes into a fresh tensor, copies it into ``out`` and returns the fresh (contiguous) one,
which the executor hands to the next op that reads the same slice: each HG-Block layer output is
copied once into its block buffer, as ``torch.cat`` would.

Same names and arguments as the other families (``hgnet_kernels.backends``); the arguments come
from the plan, so they are not re-checked here.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..plan import OP_KINDS, Stride, stride_pair
from . import spec

NAME = "torch"
IN_PLACE = False  # oneDNN / cuDNN return fresh tensors, copied into their concat slots
CUDA_GRAPHS = False
OPTIONS: dict = {}
_DILATION = [1, 1]


def unavailable_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    if device.type not in ("cpu", "cuda"):
        return f"device type {device.type!r} is not supported (cpu or cuda)"
    return None


# PyTorch runs every op of the plan, in every form.
SUPPORTS = {kind: spec.Supports() for kind in OP_KINDS}


def _onednn(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"))


class PackedWeight:
    """An OIHW weight and, on the CPU in fp32, its oneDNN-blocked copy, made at the first call
    (oneDNN picks the layout from the first input's shape; it stays valid for every other shape)."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight.contiguous()
        self.onednn: Optional[torch.Tensor] = None


def pack_conv_weight(weight: torch.Tensor) -> PackedWeight:
    return PackedWeight(weight)


pack_depthwise_weight = pack_conv_weight


def _conv(x: torch.Tensor, packed: PackedWeight, bias: torch.Tensor, stride: Union[int, Stride],
          padding: Optional[spec.Padding]) -> torch.Tensor:
    weight = packed.weight
    kernel, groups = weight.shape[-1], x.shape[1] // weight.shape[1]
    top, bottom, left, right = padding if padding is not None else spec.symmetric(kernel)
    x = x.contiguous(memory_format=torch.channels_last)  # NHWC end to end (a no-op after the stem)
    if (top, left) != (bottom, right):  # asymmetric ("SAME" 2×2): pad explicitly, convolve unpadded
        x, top, left = F.pad(x, (left, right, top, bottom)), 0, 0
    padding_hw, strides = [top, left], list(stride_pair(stride))
    if _onednn(x):
        if packed.onednn is None:
            packed.onednn = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), padding_hw, strides,
                                                                      _DILATION, groups, list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, packed.onednn, bias, padding_hw, strides, _DILATION, groups,
                                                       "none", [], "")
    return F.conv2d(x, weight, bias, strides, padding_hw, 1, groups)


def _epilogue(y: torch.Tensor, relu: bool, affine: Optional[Tuple[float, float]],
              residual: Optional[torch.Tensor], out: Optional[torch.Tensor]) -> torch.Tensor:
    """In place on the conv's fresh output y: ReLU (keeps NaN), a·y + c, + residual; then y into out."""
    if relu:
        y = y.relu_()
    if affine is not None:
        y = y.mul_(affine[0]).add_(affine[1])
    if residual is not None:
        y = y.add_(residual)
    if out is not None:
        out.copy_(y)
    return y


def conv_bn_act(x: torch.Tensor, packed_weight: PackedWeight, bias: torch.Tensor, stride: int = 1,
                relu: bool = True, out: Optional[torch.Tensor] = None, *, padding: Optional[spec.Padding] = None,
                affine: Optional[Tuple[float, float]] = None, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    return _epilogue(_conv(x, packed_weight, bias, stride, padding), relu, affine, residual, out)


def depthwise_conv(x: torch.Tensor, packed_weight: PackedWeight, bias: torch.Tensor, stride: Union[int, Stride] = 2,
                   out: Optional[torch.Tensor] = None, *, relu: bool = False,
                   affine: Optional[Tuple[float, float]] = None, padding: Optional[spec.Padding] = None) -> torch.Tensor:
    return _epilogue(_conv(x, packed_weight, bias, stride, padding), relu, affine, None, out)


def max_pool(x: torch.Tensor, out: Optional[torch.Tensor] = None, *, kernel: int = 3, stride: int = 2,
             padding: Optional[spec.Padding] = None, zero_pad: bool = False) -> torch.Tensor:
    return _epilogue(spec.max_pool_reference(x, kernel, stride, padding, zero_pad), False, None, None, out)


def partial_sums_shape(n: int, hw: int, c_in: int, c_out: int, dtype: torch.dtype,
                       device: torch.device) -> Tuple[int, int, int]:
    """(N, 1, C_out): one partial sum per image, the image's channel sums."""
    return n, 1, c_out


def aggregation_ese(x: torch.Tensor, packed_weight: PackedWeight, bias: torch.Tensor,
                    out: Optional[torch.Tensor] = None, *,
                    psum: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(y, psum)`` with psum (N, 1, C) fp32 (``partial_sums_shape``), into ``psum`` when given."""
    y = conv_bn_act(x, packed_weight, bias, 1, True, out)
    sums = y.sum((2, 3), dtype=torch.float32).unsqueeze(1)
    if psum is None:
        return y, sums
    shape = partial_sums_shape(x.shape[0], y.shape[2] * y.shape[3], x.shape[1], y.shape[1], x.dtype, x.device)
    return y, spec.prepare_partial_sums(psum, shape, y).copy_(sums)


def ese_gate(psum: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: int) -> torch.Tensor:
    return spec.ese_gate_reference(psum.sum(1), weight, bias, hw)


def scale_residual(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor] = None,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    scaled = y.mul_(gate.to(y.dtype)[:, :, None, None])  # y is this block's own temporary
    return _epilogue(scaled, False, None, identity, out)
