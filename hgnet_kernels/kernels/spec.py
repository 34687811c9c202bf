"""What every kernel family must do, in one place: argument checks and output allocation, the
weight layouts the Triton and CUDA kernels read, the records of launches resolved once (``Launch``,
``ConvLaunch``), and the PyTorch reference of each op.

Pure PyTorch (no Triton import, no extension): the Triton family, the CUDA family (and its CPU
emulator), the PyTorch family, the tests and the benchmarks all use it. Each ``prepare_*``
validates every argument with a message that says what to fix and returns the output tensor(s),
allocated channels_last unless the caller passed a destination view. Each ``*_reference`` is the
op's math in PyTorch, computed in the input's dtype (float64 inputs give the exact reference).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..models import global_pool
from ..plan import Stride, output_size, stride_label, stride_pair

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


Padding = Tuple[int, int, int, int]  # top, bottom, left, right


def symmetric(kernel: int) -> Padding:
    return (kernel // 2,) * 4


# ---- weight layouts -----------------------------------------------------------------------------

def pack_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """OIHW → (KH, KW, C_in, C_out): the kernels stream the weight along C_out."""
    return weight.permute(2, 3, 1, 0).contiguous()


def pack_depthwise_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, k, k) → (k, k, C): the taps, channels contiguous."""
    return weight[:, 0].permute(1, 2, 0).contiguous()


# ---- what a family runs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Supports:
    """What one family's kernels compute exactly of one op kind: each field lists the values they
    run (None: any), ``strides`` those of each axis; ``square_stride``: sh = sw only;
    ``padding_below_kernel``: zero padding in [0, k) on every side; ``groups``:
    "dense" (1 group) or "depthwise" (groups = input channels = output channels)."""
    kernels: Optional[Tuple[int, ...]] = None
    strides: Optional[Tuple[int, ...]] = None
    square_stride: bool = False
    padding_below_kernel: bool = False
    groups: Optional[str] = None
    relu: Optional[Tuple[bool, ...]] = None
    affine: Optional[Tuple[bool, ...]] = None
    residual: Optional[Tuple[bool, ...]] = None


# A family's capabilities: op kind → what it runs of that kind (a kind missing: none of it).
Capabilities = Mapping[str, Supports]

# What the Triton and the CUDA C++ kernels compute exactly: both were written to the same forms, so
# both families' tables are this one, read-only (a family whose kernels diverge gets a table of its own).
TILED_KERNELS: Capabilities = MappingProxyType({
    # k×k convs, any zero padding below k per side ("SAME" 2×2 included), ReLU, the scalar affine
    # and a residual in the epilogue.
    "conv": Supports(kernels=(1, 2, 3), strides=(1, 2), square_stride=True, padding_below_kernel=True,
                     groups="dense"),
    # The HG-Block aggregation: a 1×1 conv + ReLU with the ESE partial sums, nothing after the ReLU.
    "aggregation": Supports(kernels=(1,), strides=(1,), square_stride=True, padding_below_kernel=True, groups="dense",
                            relu=(True,), affine=(False,), residual=(False,)),
    # Strides per axis: PP-OCR's text-recognition downsamples are (2, 1) and (1, 2).
    "depthwise": Supports(kernels=(3, 5), strides=(1, 2), padding_below_kernel=True, groups="depthwise",
                          residual=(False,)),
    # Padded taps ignored or zeros (``zero_pad``); no epilogue.
    "max_pool": Supports(kernels=(2, 3), strides=(1, 2), square_stride=True, padding_below_kernel=True,
                         relu=(False,), affine=(False,), residual=(False,)),
    "ese_gate": Supports(), "scale_residual": Supports(), "copy": Supports(), "head": Supports(),
})


def _stride_covered(supports: Supports, stride: Stride) -> bool:
    return ((supports.strides is None or all(s in supports.strides for s in stride))
            and not (supports.square_stride and stride[0] != stride[1]))


def window_reasons(supports: Supports, kind: str, kernel: int, stride: Stride, padding: Padding) -> List[str]:
    """The parts of a k×k window (kernel, (sh, sw) stride, padding) that ``supports`` does not cover."""
    reasons = []
    if supports.kernels is not None and kernel not in supports.kernels:
        reasons.append(f"a {kernel}×{kernel} {kind}")
    if not _stride_covered(supports, stride):
        reasons.append(f"{kind} stride {stride_label(stride)}")
    if supports.padding_below_kernel and (len(padding) != 4 or any(not 0 <= p < kernel for p in padding)):
        reasons.append(f"padding {padding}")
    return reasons


def not_supported_reasons(op, capabilities: Capabilities) -> List[str]:
    """Why a family with these ``capabilities`` cannot run the plan op ``op`` exactly: one reason
    per property its table does not cover, each naming it; empty when it can run it."""
    supports = capabilities.get(op.kind)
    if supports is None:
        return [f"a {op.kind} op"]
    reasons = window_reasons(supports, op.kind, op.kernel, op.stride, op.padding)
    if supports.groups == "dense" and op.groups != 1:
        reasons.append(f"a grouped {op.kind} with {op.groups} groups")
    if supports.groups == "depthwise" and not op.groups == op.reads[0].channels == op.writes[0].channels:
        reasons.append(f"a grouped conv with {op.groups} groups (only depthwise: groups = channels)")
    for flag, label in (("relu", "ReLU"), ("affine", "the affine"), ("residual", "a residual")):
        allowed, value = getattr(supports, flag), getattr(op, flag)
        if allowed is not None and value not in allowed:
            reasons.append(f"{op.kind} {'with' if value else 'without'} {label}")
    return reasons


def _either(values: Tuple[int, ...]) -> str:
    """``1, 2 or 3``."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def check_window(supports: Supports, what: str, kernel: int, stride: Union[int, Stride]) -> Stride:
    """A launcher's k×k window (stride s, or (sh, sw) where the family runs non-square ones) is one
    its family runs, else a ``ValueError`` saying what it takes; returns the stride as (sh, sw)."""
    if supports.kernels is not None and kernel not in supports.kernels:
        raise ValueError(f"{what}: kernel must be {_either(supports.kernels)}, got {kernel}")
    square = isinstance(stride, int) and not isinstance(stride, bool)
    pair = (stride, stride) if square else tuple(stride) if isinstance(stride, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(s, int) for s in pair) or not _stride_covered(supports, pair) \
            or (supports.square_stride and not square):
        allowed = _either(supports.strides) if supports.strides is not None else "positive"
        pairs = "" if supports.square_stride else " or a pair (sh, sw) of them"
        raise ValueError(f"{what}: stride must be {allowed}{pairs}, got {stride!r}")
    return pair


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


def prepare_conv(supports: Supports, x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int,
                 out: Optional[torch.Tensor], padding: Optional[Padding] = None,
                 residual: Optional[torch.Tensor] = None, what: str = "conv") -> torch.Tensor:
    """``supports``: what the calling family runs of this conv (its ``SUPPORTS`` entry for ``what``)."""
    check_activation("x", x)
    if packed_weight.dim() != 4 or packed_weight.shape[0] != packed_weight.shape[1]:
        raise ValueError(f"packed_weight: expected (k, k, C_in, C_out), got {tuple(packed_weight.shape)}; "
                         f"pack OIHW weights with pack_conv_weight()")
    kernel, _, c_in, c_out = packed_weight.shape
    check_window(supports, what, kernel, stride)
    check_activation("x", x, channels=c_in)
    _check_vector("bias", bias, c_out)
    if packed_weight.dtype != x.dtype or not packed_weight.is_contiguous():
        raise TypeError(f"packed_weight must be contiguous and {x.dtype}, got {packed_weight.dtype}")
    n, _, h, w = x.shape
    shape = (n, c_out, *output_size(h, w, kernel, stride, _check_padding(padding, kernel)))
    if residual is not None and (tuple(residual.shape) != shape or residual.dtype != x.dtype):
        raise ValueError(f"residual: expected {shape} {x.dtype}, got {tuple(residual.shape)} {residual.dtype}")
    return _output(out, shape, x)


def prepare_depthwise(supports: Supports, x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                      stride: Union[int, Stride], out: Optional[torch.Tensor],
                      padding: Optional[Padding] = None) -> torch.Tensor:
    check_activation("x", x)
    n, c, h, w = x.shape
    kernel = packed_weight.shape[0] if packed_weight.dim() == 3 else 0
    if tuple(packed_weight.shape) != (kernel, kernel, c) or not packed_weight.is_contiguous():
        raise ValueError(f"packed_weight: expected a contiguous (k, k, {c}) tensor from pack_depthwise_weight(), "
                         f"got {tuple(packed_weight.shape)}")
    stride = check_window(supports, "depthwise conv", kernel, stride)
    if packed_weight.dtype != x.dtype:
        raise TypeError(f"packed_weight must be {x.dtype}, got {packed_weight.dtype}")
    _check_vector("bias", bias, c)
    return _output(out, (n, c, *output_size(h, w, kernel, stride, _check_padding(padding, kernel))), x)


def prepare_max_pool(supports: Supports, x: torch.Tensor, out: Optional[torch.Tensor], kernel: int = 3,
                     stride: int = 2, padding: Optional[Padding] = None) -> torch.Tensor:
    check_activation("x", x)
    check_window(supports, "max pool", kernel, stride)
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


# ---- launches resolved once -----------------------------------------------------------------------
# A family with ``RESOLVES`` (Triton, CUDA) turns each op's checks, config, grid and workspace sizes
# into one of these records once per input shape (its ``resolve_*`` functions); the backend keys
# its resolved steps by the input's shape, strides, dtype and device, which fix them all, and calls
# the records on later inputs of that key.

class Launch:
    """One kernel launch resolved once: ``run`` (None: nothing to launch, an empty output) with the
    arguments the resolution computed, and the destination's shape, strides and dtype (allocated by
    a call given none). Calling it with tensors of the shapes, strides, dtype and device it was
    resolved for runs ``run(*tensors, *args, **kwargs)``, checking and computing nothing again."""
    __slots__ = ("run", "args", "kwargs", "out_shape", "out_stride", "out_dtype")

    def __init__(self, run, args: tuple, kwargs: dict, out: torch.Tensor):
        self.run, self.args, self.kwargs = run, args, kwargs
        self.out_shape, self.out_stride, self.out_dtype = tuple(out.shape), out.stride(), out.dtype

    def output(self, out: Optional[torch.Tensor], device: torch.device) -> torch.Tensor:
        """``out``, or a fresh destination laid out as the resolved one."""
        if out is not None:
            return out
        return torch.empty_strided(self.out_shape, self.out_stride, dtype=self.out_dtype, device=device)

    def __call__(self, *tensors: torch.Tensor) -> None:
        if self.run is not None:
            self.run(*tensors, *self.args, **self.kwargs)


class ConvLaunch:
    """One conv (or aggregation) call resolved once: the shapes of what each call allocates — the
    output (channels_last) when not given, the ESE partial sums (None: not an aggregation) when not
    given, the split-K workspace (None: none) — and, in the family's subclass, its ``launch``.
    Calling it with (x, packed_weight, bias, out, residual, psum) returns (out, psum)."""
    __slots__ = ("out_shape", "psum_shape", "workspace_shape")

    def launch(self, x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor,
               residual: Optional[torch.Tensor], psum: Optional[torch.Tensor],
               workspace: Optional[torch.Tensor]) -> None:
        """Launches the resolved kernel(s) on these tensors (the family's)."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                 out: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None,
                 psum: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        if out is None:
            out = torch.empty(self.out_shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
        if psum is None and self.psum_shape is not None:
            psum = torch.empty(self.psum_shape, device=x.device, dtype=torch.float32)
        # A workspace per call, never one kept in the record: concurrent callers of one resolved
        # launch, and CUDA graphs captured from it, each need their own.
        workspace = None if self.workspace_shape is None else torch.empty(self.workspace_shape, device=x.device,
                                                                          dtype=torch.float32)
        self.launch(x, packed_weight, bias, out, residual, psum, workspace)
        return out, psum


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
