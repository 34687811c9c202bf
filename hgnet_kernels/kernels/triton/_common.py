"""Helpers shared by the Triton launchers: interpreter detection (and the two fixes that make
Triton's CPU interpreter compute bf16 as a GPU does), availability, tensor checks, dot precision,
and the small jit helpers of the epilogues."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
from typing import Iterator, NamedTuple, Optional

import numpy as np
import torch

from ... import configs
from ..spec import Launch

def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why the Triton kernels cannot run on ``device``, or None."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton; Linux only)"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if interpreting():
            return None
        return ("Triton kernels need a CUDA GPU; to run them on the CPU through Triton's interpreter "
                "(slow, for testing) set TRITON_INTERPRET=1 before importing hgnet_kernels")
    return f"device type {device.type!r} is not supported"


def dot_precision(dtype: torch.dtype, allow_tf32: bool, tf32x3: bool = False) -> str:
    """Triton ``input_precision`` for fp32 operands: "ieee" (FMA units, the 1e-5 guarantee) unless
    asked for "tf32x3" (each operand split into a TF32 high part and a TF32 remainder, three
    tensor-core products: close to fp32 accuracy, not yet verified on a GPU; error bound in
    ``numerics.tf32x3_error_bound``) or plain "tf32". Triton's interpreter computes every fp32 dot
    in IEEE whatever is asked, so it exercises neither TF32 path."""
    if allow_tf32 and tf32x3:
        raise ValueError("allow_tf32 and tf32x3 are exclusive: pick plain TF32 or the 3×TF32 split")
    if dtype != torch.float32:
        return "ieee"
    return "tf32x3" if tf32x3 else ("tf32" if allow_tf32 else "ieee")


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


class LaunchTarget(NamedTuple):
    """What the launch configs depend on: the GPU arch (``"sm90"``; None off the GPU), its SM count
    (None: the arch's in ``devices.json``) and whether Triton's interpreter runs the kernels."""
    arch: Optional[str]
    sms: Optional[int]
    interpreter: bool


# Set by ``compiling_for``: launches are then configured for that GPU whatever the tensors' device.
_simulated: contextvars.ContextVar[Optional[LaunchTarget]] = contextvars.ContextVar("hgk_simulated", default=None)


@contextlib.contextmanager
def compiling_for(arch: str, sms: int) -> Iterator[None]:
    """Configure every launch for GPU ``arch`` with ``sms`` SMs while the tensors live on the CPU:
    the AOT check (``hgnet_kernels.aot``) records what the launchers would launch on that GPU,
    without one. Nothing may run the kernels inside it (the AOT check records instead)."""
    token = _simulated.set(LaunchTarget(arch, sms, False))
    try:
        yield
    finally:
        _simulated.reset(token)


def launch_target(device: torch.device) -> LaunchTarget:
    """The launch target of tensors on ``device``."""
    simulated = _simulated.get()
    if simulated is not None:
        return simulated
    if device.type != "cuda":
        return LaunchTarget(None, None, interpreting())
    index = device.index if device.index is not None else torch.cuda.current_device()
    return LaunchTarget(configs.arch_name(device), _sm_count(index), False)


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")
    device = next(iter(devices.values()))
    if device.type != "cuda" and not interpreting() and _simulated.get() is None:
        raise RuntimeError(f"Triton kernels need CUDA tensors (got {device}); on the CPU set "
                           "TRITON_INTERPRET=1 before importing Triton to use its interpreter")


def kernel_launch(kernel, grid, args: tuple, constexprs: dict, out: torch.Tensor) -> Launch:
    """The resolved launch of Triton ``kernel`` on ``grid`` (None: nothing to launch, an empty
    output), its scalar ``args`` and ``constexprs`` following the tensors of each call."""
    return Launch(None if grid is None else kernel[grid], args, constexprs, out)


def tile_offsets_int64(pixels: int, block_p: int, tensors_fit: bool) -> bool:
    """``INT64`` of a ``pixel_channel_tile`` kernel: int64 indices unless every tensor's offsets fit
    int32 (``tensors_fit``) and so does every pixel index of the last tile (``pixels`` rounded up to
    whole ``block_p`` tiles)."""
    return not tensors_fit or configs.cdiv(pixels, block_p) * block_p > 2 ** 31


import triton  # noqa: E402  (after the pure-Python helpers, which tests use without Triton)
import triton.language as tl  # noqa: E402


# ---- Triton's interpreter made to compute bf16 as a GPU does --------------------------------------
# The kernels carry no interpreter branches; the stand-in is fixed here instead, in its two bf16
# deviations from the GPU (Triton 3.6 – 3.8):
#   * tl.dot on bf16 operands multiplies their raw uint16 storage (garbage): they are widened to
#     fp32 first, which is exact (bf16 products and fp32 accumulation, as the tensor cores do);
#   * fp32 → bf16 casts truncate, where the GPU (cvt.rn.bf16.f32) rounds to nearest even.
# Everything else is the interpreter's own: fp16 dots run natively (numpy, fp32 accumulation), and
# every fp32 dot is IEEE whatever its input_precision (tf32 / tf32x3 are not exercised there).

def _bf16_to_fp32(data: "np.ndarray") -> "np.ndarray":
    return (data.astype(np.uint32) << 16).view(np.float32)


def _fp32_to_bf16_nearest_even(data: "np.ndarray") -> "np.ndarray":
    bits = np.ascontiguousarray(data, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(data)
    return np.where(nan, ((bits >> 16) | 0x40).astype(np.uint16), rounded)  # NaN stays a (quiet) NaN


def _fix_interpreter() -> None:
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder, "_hgk_bf16_fixed", False):
        return
    dot, cast = builder.create_dot, builder.cast_impl

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype.scalar == tl.bfloat16:
            a = interpreter.TensorHandle(_bf16_to_fp32(a.data), tl.float32)
        if b.dtype.scalar == tl.bfloat16:
            b = interpreter.TensorHandle(_bf16_to_fp32(b.data), tl.float32)
        return dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            return interpreter.TensorHandle(_fp32_to_bf16_nearest_even(src.data), tl.bfloat16)
        return cast(self, src, dst_type)

    # create_fp_trunc / create_fp_ext call self.cast_impl, so every fp32 → bf16 cast comes here.
    builder.create_dot, builder.cast_impl = create_dot, cast_impl
    builder._hgk_bf16_fixed = True


# Only where the interpreter runs: on a GPU, Triton's own classes are left as they are.
if interpreting():
    _fix_interpreter()


@triton.jit
def pixel_channel_tile(M, HW, Wo, C, INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile of an (N, C, Ho, Wo) output, grid (pixel tiles over the M = N·Ho·Wo
    pixels of all images, C tiles): per pixel its image, row and column, the BLOCK_C channels, and
    masks. Tiles span images, so small maps fill whole tiles.

    Indices come in the kernel's offset type: int32 unless ``INT64`` (chosen per launch: a tensor
    may pass 2^31 elements, or the last tile's pixel indices would). Not only for the narrower
    maths: the int64 image division is a ptxas subroutine call, whose live registers Triton 3.6
    keeps on the stack (local memory) in the unrolled 5×5 depthwise conv."""
    pid_p = tl.program_id(0)
    if INT64:
        pid_p = pid_p.to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = offs_p // HW
    p = (offs_p - n * HW).to(tl.int32)
    oh = p // Wo
    ow = p - oh * Wo
    return n, oh.to(n.dtype), ow.to(n.dtype), offs_c.to(n.dtype), offs_p < M, offs_c < C
