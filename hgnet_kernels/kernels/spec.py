"""What every kernel family must do, in one place: argument checks and output allocation, the
weight layouts the Triton and CUDA kernels read, and the PyTorch reference of each op.

Pure PyTorch (no Triton import, no extension): the Triton family, the CUDA family (and its CPU
emulator), the PyTorch family, the tests and the benchmarks all use it. Each ``prepare_*``
validates every argument with a message that says what to fix and returns the output tensor(s),
allocated channels_last unless the caller passed a destination view. Each ``*_reference`` is the
op's math in PyTorch, computed in the input's dtype (float64 inputs give the exact reference).
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..models import global_pool
from ..plan import Stride, output_size, stride_pair

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


Padding = Tuple[int, int, int, int]  # top, bottom, left, right


def symmetric(kernel: int) -> Padding:
    return (kernel // 2,) * 4


def check_depthwise_stride(stride: Union[int, Stride]) -> Stride:
    """(sh, sw) of a depthwise stride (an int, or a pair: PP-OCR's (2, 1) / (1, 2)), each 1 or 2."""
    pair = (stride, stride) if isinstance(stride, int) else tuple(stride) if isinstance(stride, (tuple, list)) else ()
    if len(pair) != 2 or any(s not in (1, 2) for s in pair):
        raise ValueError(f"stride must be 1, 2 or a pair (sh, sw) of them, got {stride!r}")
    return pair


# ---- weight layouts -----------------------------------------------------------------------------

def pack_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """OIHW → (KH, KW, C_in, C_out): the kernels stream the weight along C_out."""
    return weight.permute(2, 3, 1, 0).contiguous()


def pack_depthwise_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, k, k) → (k, k, C): the taps, channels contiguous."""
    return weight[:, 0].permute(1, 2, 0).contiguous()


# ---- argument checks and output allocation --------------------------------------------------------

def check_activation(name: str, t: torch.Tensor, channels: Optional[int] = None) -> None:
    if not torch.is_tensor(t) or t.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D (N, C, H, W) tensor, got "
                         f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name}: dtype {t.dtype} is not supported; use one of {SUPPORTED_DTYPES}")
    if channels is not None and t.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got {t.shape[1]} (shape {tuple(t.shape)})")


def _output(out: Optional[torch.Tensor], shape, like: torch.Tensor) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, device=like.device, dtype=like.dtype, memory_format=torch.channels_last)
    if tuple(out.shape) != tuple(shape) or out.dtype != like.dtype:
        raise ValueError(f"out: expected {tuple(shape)} {like.dtype}, got {tuple(out.shape)} {out.dtype}")
    return out


def _check_vector(name: str, t: torch.Tensor, size: int) -> None:
    if not torch.is_tensor(t) or tuple(t.shape) != (size,) or not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous ({size},) tensor, got "
                         f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")


def _check_padding(padding: Optional[Padding], kernel: int) -> Padding:
    if padding is None:
        return symmetric(kernel)
    if len(padding) != 4 or any(not isinstance(p, int) or p < 0 or p >= kernel for p in padding):
        raise ValueError(f"padding must be (top, bottom, left, right), each in [0, {kernel}), got {padding}")
    return tuple(padding)


def prepare_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int,
                 out: Optional[torch.Tensor], padding: Optional[Padding] = None,
                 residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    check_activation("x", x)
    if packed_weight.dim() != 4 or packed_weight.shape[0] != packed_weight.shape[1] or \
            packed_weight.shape[0] not in (1, 2, 3):
        raise ValueError(f"packed_weight: expected (k, k, C_in, C_out) with k 1, 2 or 3, got "
                         f"{tuple(packed_weight.shape)}; pack OIHW weights with pack_conv_weight()")
    kernel, _, c_in, c_out = packed_weight.shape
    check_activation("x", x, channels=c_in)
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    _check_vector("bias", bias, c_out)
    if packed_weight.dtype != x.dtype or not packed_weight.is_contiguous():
        raise TypeError(f"packed_weight must be contiguous and {x.dtype}, got {packed_weight.dtype}")
    n, _, h, w = x.shape
    shape = (n, c_out, *output_size(h, w, kernel, stride, _check_padding(padding, kernel)))
    if residual is not None and (tuple(residual.shape) != shape or residual.dtype != x.dtype):
        raise ValueError(f"residual: expected {shape} {x.dtype}, got {tuple(residual.shape)} {residual.dtype}")
    return _output(out, shape, x)


def prepare_depthwise(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: Union[int, Stride],
                      out: Optional[torch.Tensor], padding: Optional[Padding] = None) -> torch.Tensor:
    check_activation("x", x)
    n, c, h, w = x.shape
    kernel = packed_weight.shape[0] if packed_weight.dim() == 3 else 0
    if kernel not in (3, 5) or tuple(packed_weight.shape) != (kernel, kernel, c) or not packed_weight.is_contiguous():
        raise ValueError(f"packed_weight: expected a contiguous (k, k, {c}) tensor with k 3 or 5 from "
                         f"pack_depthwise_weight(), got {tuple(packed_weight.shape)}")
    if packed_weight.dtype != x.dtype:
        raise TypeError(f"packed_weight must be {x.dtype}, got {packed_weight.dtype}")
    _check_vector("bias", bias, c)
    stride = check_depthwise_stride(stride)
    return _output(out, (n, c, *output_size(h, w, kernel, stride, _check_padding(padding, kernel))), x)


def prepare_max_pool(x: torch.Tensor, out: Optional[torch.Tensor], kernel: int = 3, stride: int = 2,
                     padding: Optional[Padding] = None) -> torch.Tensor:
    check_activation("x", x)
    if kernel not in (2, 3) or stride not in (1, 2):
        raise ValueError(f"max pool: kernel must be 2 or 3 and stride 1 or 2, got {kernel} and {stride}")
    n, c, h, w = x.shape
    return _output(out, (n, c, *output_size(h, w, kernel, stride, _check_padding(padding, kernel))), x)


def prepare_ese_gate(psum: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: int) -> torch.Tensor:
    if not torch.is_tensor(psum) or psum.dim() != 3 or psum.dtype != torch.float32 or not psum.is_contiguous():
        raise ValueError(f"psum: expected a contiguous fp32 (N, tiles, C) tensor, got "
                         f"{tuple(psum.shape) if torch.is_tensor(psum) else type(psum).__name__}")
    n, _, c = psum.shape
    if tuple(weight.shape) != (c, c) or not weight.is_contiguous():
        raise ValueError(f"weight: expected a contiguous ({c}, {c}) tensor, got {tuple(weight.shape)}")
    _check_vector("bias", bias, c)
    if bias.dtype != weight.dtype:
        raise TypeError(f"bias and weight must share a dtype, got {bias.dtype} and {weight.dtype}")
    if hw <= 0:
        raise ValueError(f"hw must be positive, got {hw}")
    return torch.empty((n, c), device=psum.device, dtype=torch.float32)


def prepare_scale_residual(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor],
                           out: Optional[torch.Tensor]) -> torch.Tensor:
    check_activation("y", y)
    n, c, _, _ = y.shape
    if tuple(gate.shape) != (n, c) or gate.dtype != torch.float32 or not gate.is_contiguous():
        raise ValueError(f"gate: expected a contiguous fp32 ({n}, {c}) tensor, got {tuple(gate.shape)} {gate.dtype}")
    if identity is not None and (identity.shape != y.shape or identity.dtype != y.dtype):
        raise ValueError(f"identity: expected {tuple(y.shape)} {y.dtype}, got {tuple(identity.shape)} {identity.dtype}")
    return _output(out, tuple(y.shape), y)


# ---- the ESE partial sums ------------------------------------------------------------------------
# The aggregation writes (N, T, C_out) fp32 partial sums whose T rows per image add up to the image's
# channel sums; T and which pixels each row sums are the kernel family's, which says so through its
# ``partial_sums_shape(n, hw, c_in, c_out, dtype, device, **options)`` (the plan's "partial_sums"
# buffers, the executor, the ``plan`` report). ``ese_gate`` of the same family adds the T rows.

@functools.lru_cache(maxsize=1024)
def psum_tiles(n: int, hw: int, block_rows: int) -> int:
    """T of a cross-image row tiling (the Triton kernels', the sm_80+ CUDA kernel's): the most tiles
    of ``block_rows`` rows that one image of ``hw`` pixels overlaps when the n images are laid end
    to end (image i starts at row i·hw). Image i's row j sums its pixels inside tile
    ``i·hw // block_rows + j``; rows past its last tile are zeros."""
    if n == 0:
        return max(1, -(-hw // block_rows))
    # The offsets i·hw mod block_rows repeat with period block_rows / gcd(hw, block_rows).
    period = block_rows // math.gcd(hw, block_rows)
    return max((i * hw % block_rows + hw - 1) // block_rows + 1 for i in range(min(n, period)))


def prepare_partial_sums(psum: Optional[torch.Tensor], shape: Tuple[int, int, int],
                         like: torch.Tensor) -> torch.Tensor:
    """The partial-sum buffer of the family's ``shape`` on ``like``'s device: ``psum`` (a caller's
    buffer, checked) or a new one."""
    if psum is None:
        return torch.empty(shape, device=like.device, dtype=torch.float32)
    if (not torch.is_tensor(psum) or tuple(psum.shape) != tuple(shape) or psum.dtype != torch.float32
            or not psum.is_contiguous() or psum.device != like.device):
        got = f"{tuple(psum.shape)} {psum.dtype} on {psum.device}" if torch.is_tensor(psum) else type(psum).__name__
        raise ValueError(f"psum: expected a contiguous fp32 {tuple(shape)} tensor on {like.device} (this family's "
                         f"partial_sums_shape), got {got}")
    return psum


# ---- PyTorch references ---------------------------------------------------------------------------

def _pad(x: torch.Tensor, padding: Optional[Padding], kernel: int, value: float = 0.0) -> torch.Tensor:
    top, bottom, left, right = padding if padding is not None else symmetric(kernel)
    return F.pad(x, (left, right, top, bottom), value=value)


def _epilogue(y: torch.Tensor, relu: bool, affine: Optional[Tuple[float, float]],
              residual: Optional[torch.Tensor]) -> torch.Tensor:
    if relu:
        y = torch.relu(y)
    if affine is not None:
        y = y * affine[0] + affine[1]
    return y + residual if residual is not None else y


def conv_bn_act_reference(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                          relu: bool = True, padding: Optional[Padding] = None,
                          affine: Optional[Tuple[float, float]] = None,
                          residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``residual + affine(act(conv(x, W) + b))`` with zero padding (top, bottom, left, right)
    (default k // 2 all round) and ``affine(y) = a·y + c``, computed in x's dtype."""
    weight = packed_weight.permute(3, 2, 0, 1).to(x.dtype)
    y = F.conv2d(_pad(x, padding, packed_weight.shape[0]), weight, bias.to(x.dtype), stride)
    return _epilogue(y, relu, affine, residual)


def aggregation_ese_reference(x: torch.Tensor, packed_weight: torch.Tensor,
                              bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(y, per-image channel sums of y)``: the sums are what the partial sums add up to."""
    y = conv_bn_act_reference(x, packed_weight, bias, 1, True)
    return y, y.sum((2, 3))


def depthwise_conv_reference(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                             stride: Union[int, Stride] = 2, relu: bool = False,
                             affine: Optional[Tuple[float, float]] = None,
                             padding: Optional[Padding] = None) -> torch.Tensor:
    """Per channel: ``affine(act(conv(x_c, W_c) + b_c))``, k×k taps (k = 3 or 5), stride s or
    (sh, sw), zero padding."""
    weight = packed_weight.permute(2, 0, 1).unsqueeze(1).to(x.dtype)
    y = F.conv2d(_pad(x, padding, packed_weight.shape[0]), weight, bias.to(x.dtype), stride_pair(stride), 0, 1,
                 x.shape[1])
    return _epilogue(y, relu, affine, None)


def max_pool_reference(x: torch.Tensor, kernel: int = 3, stride: int = 2, padding: Optional[Padding] = None,
                       zero_pad: bool = False) -> torch.Tensor:
    """k×k max pool. Padded taps are ignored (−∞), as in PyTorch and Paddle; with ``zero_pad`` they
    are zeros that take part in the max (timm's PP-HGNetV2 stem pads with ``F.pad`` first)."""
    return F.max_pool2d(_pad(x, padding, kernel, 0.0 if zero_pad else float("-inf")), kernel, stride)


def ese_gate_reference(channel_sums: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: int) -> torch.Tensor:
    """The gate from per-image channel sums (N, C) — equal to ``psum.sum(1)``."""
    mean = channel_sums / hw
    return torch.sigmoid(mean @ weight.to(mean.dtype).t() + bias.to(mean.dtype))


def scale_residual_reference(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor] = None) -> torch.Tensor:
    out = y * gate.to(y.dtype)[:, :, None, None]
    return out + identity if identity is not None else out


def head_reference(x: torch.Tensor, pool: str, last_conv_weight: Optional[torch.Tensor],
                   affine: Optional[Tuple[float, float]], fc_weight: Optional[torch.Tensor],
                   fc_bias: Optional[torch.Tensor]) -> torch.Tensor:
    """global pool → 1×1 conv (no bias, a GEMV on the pooled vector) → ReLU → affine (LAB) →
    (eval dropout: identity) → FC; the conv, affine and FC only where the model has them. A few
    GEMVs: every family runs it in PyTorch."""
    x = global_pool(x, pool)
    if last_conv_weight is not None:
        x = _epilogue(F.linear(x, last_conv_weight), True, affine, None)
    return F.linear(x, fc_weight, fc_bias) if fc_weight is not None else x
