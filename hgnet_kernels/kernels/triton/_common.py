"""Helpers shared by the Triton launchers: interpreter detection, availability, tensor checks,
dot precision, and the small jit helpers of the epilogues."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
from typing import Iterator, NamedTuple, Optional

import torch

from ... import configs

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


def upcast_dot(dtype: torch.dtype) -> bool:
    # The interpreter's bf16 tl.dot returns garbage; its fp32 dot is exact, so upcast there.
    return interpreting() and dtype != torch.float32


def dot_precision(dtype: torch.dtype, allow_tf32: bool, tf32x3: bool = False) -> str:
    """Triton ``input_precision`` for fp32 operands: "ieee" (FMA units, the 1e-5 guarantee) unless
    asked for "tf32x3" (each operand split into a TF32 high part and a TF32 remainder, three
    tensor-core products: close to fp32 accuracy, not yet verified on a GPU) or plain "tf32"."""
    if allow_tf32 and tf32x3:
        raise ValueError("allow_tf32 and tf32x3 are exclusive: pick plain TF32 or the 3×TF32 split")
    if dtype != torch.float32 or interpreting():  # the interpreter's fp32 dot is IEEE whatever is asked
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


def round_bf16_by_hand(dtype: torch.dtype) -> bool:
    # The interpreter casts fp32 → bf16 by truncation; GPUs round to nearest even.
    return interpreting() and dtype == torch.bfloat16


import triton  # noqa: E402  (after the pure-Python helpers, which tests use without Triton)
import triton.language as tl  # noqa: E402


@triton.jit
def cast_for_store(x, dst_ptr, ROUND_BF16: tl.constexpr):
    """fp32 → the destination's dtype, rounding to nearest even also under the interpreter."""
    if ROUND_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dst_ptr.dtype.element_ty)


@triton.jit
def pixel_channel_tile(M, HW, Wo, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile of an (N, C, Ho, Wo) output, grid (pixel tiles over the M = N·Ho·Wo
    pixels of all images, C tiles): per pixel its image (int64), row and column (int32), the
    BLOCK_C channels (int64), and masks. Tiles span images, so small maps fill whole tiles."""
    offs_p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n = offs_p // HW
    p = (offs_p - n * HW).to(tl.int32)
    oh = p // Wo
    return n, oh, p - oh * Wo, offs_c.to(tl.int64), offs_p < M, offs_c < C
