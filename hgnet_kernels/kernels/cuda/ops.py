"""Python launchers of the CUDA C++ ops (csrc/*.cu): check → allocate → launch.

Same arguments and references as the Triton ops (``hgnet_kernels.kernels.spec``). CUDA tensors go to the
torch extension; CPU tensors go to the emulator build of the very same kernel source (slow: for
checking numerics without a GPU).
"""
from __future__ import annotations

import ctypes
from typing import Optional, Tuple

import torch

from ..spec import (conv_psum, prepare_conv, prepare_depthwise, prepare_ese_gate, prepare_max_pool,
                    prepare_scale_residual)

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _emulated(*tensors: torch.Tensor) -> bool:
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type == "cuda":
        return False
    if device.type == "cpu":
        return True
    raise ValueError(f"the CUDA ops run on CUDA tensors (or CPU tensors through the emulator), got {device}")


def _ext():
    from .extension import load
    return load()


def _dims(t: torch.Tensor):
    return (ctypes.c_int64 * 8)(*t.shape, *t.stride())


def _ptr(t: Optional[torch.Tensor]):
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


def _arch(device: torch.device, arch: Optional[int]) -> int:
    if arch is not None:
        return arch
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major * 10 + minor
    from .emulator import EMULATED_ARCH
    return EMULATED_ARCH


def conv_tile_rows(dtype: torch.dtype, device: torch.device, arch: Optional[int] = None) -> int:
    arch = _arch(device, arch)
    if device.type == "cuda":
        return _ext().conv_tile_rows(DTYPE_CODES[dtype], arch)
    from .emulator import library
    return library().hgk_emu_conv_tile_rows(DTYPE_CODES[dtype], arch)


def _launch_conv(x, packed_weight, bias, stride, relu, out, psum, arch):
    if _emulated(x, packed_weight, bias, out, psum):
        from .emulator import call
        psum_ptr = ctypes.cast(_ptr(psum), ctypes.POINTER(ctypes.c_float))
        call("hgk_emu_conv_bn_act", _ptr(x), _dims(x), _ptr(out), _dims(out), _ptr(packed_weight), _ptr(bias),
             psum_ptr, DTYPE_CODES[x.dtype], packed_weight.shape[0], stride, int(relu), arch)
    else:
        _ext().conv_bn_act(x, packed_weight, bias, stride, relu, out, psum, arch)


def conv_bn_act(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                relu: bool = True, out: Optional[torch.Tensor] = None, arch: Optional[int] = None) -> torch.Tensor:
    """``act(conv(x, W) + b)``; see ``hgnet_kernels.kernels.triton.conv_bn_act`` for the arguments. ``arch``
    (compute capability × 10) overrides the device's, e.g. to run the SIMT path in the emulator."""
    out = prepare_conv(x, packed_weight, bias, stride, out)
    _launch_conv(x, packed_weight, bias, stride, relu, out, None, _arch(x.device, arch))
    return out


def aggregation_ese(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                    out: Optional[torch.Tensor] = None, arch: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """1×1 conv + bias + ReLU with the ESE partial sums: ``(y, psum)``."""
    if packed_weight.shape[:2] != (1, 1):
        raise ValueError(f"aggregation is a 1×1 conv; got a {tuple(packed_weight.shape[:2])} kernel")
    out = prepare_conv(x, packed_weight, bias, 1, out)
    arch = _arch(x.device, arch)
    psum = conv_psum(x, out, conv_tile_rows(x.dtype, x.device, arch))
    _launch_conv(x, packed_weight, bias, 1, True, out, psum, arch)
    return out, psum


def depthwise_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 2,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    out = prepare_depthwise(x, packed_weight, bias, stride, out)
    if _emulated(x, packed_weight, bias, out):
        from .emulator import call
        call("hgk_emu_depthwise_conv", _ptr(x), _dims(x), _ptr(out), _dims(out), _ptr(packed_weight), _ptr(bias),
             DTYPE_CODES[x.dtype], stride)
    else:
        _ext().depthwise_conv(x, packed_weight, bias, stride, out)
    return out


def max_pool(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    out = prepare_max_pool(x, out)
    if _emulated(x, out):
        from .emulator import call
        call("hgk_emu_max_pool", _ptr(x), _dims(x), _ptr(out), _dims(out), DTYPE_CODES[x.dtype])
    else:
        _ext().max_pool(x, out)
    return out


def ese_gate(psum: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: int) -> torch.Tensor:
    gate = prepare_ese_gate(psum, weight, bias, hw)
    if _emulated(psum, weight, bias):
        from .emulator import call
        n, tiles, c = psum.shape
        call("hgk_emu_ese_gate", ctypes.cast(_ptr(psum), ctypes.POINTER(ctypes.c_float)), ctypes.c_int64(n),
             ctypes.c_int64(tiles), ctypes.c_int64(c), _ptr(weight), _ptr(bias), DTYPE_CODES[weight.dtype],
             ctypes.c_float(1.0 / hw), ctypes.cast(_ptr(gate), ctypes.POINTER(ctypes.c_float)))
    else:
        _ext().ese_gate(psum, weight, bias, hw, gate)
    return gate


def scale_residual(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor] = None,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    out = prepare_scale_residual(y, gate, identity, out)
    if _emulated(y, gate, identity, out):
        from .emulator import call
        call("hgk_emu_scale_residual", _ptr(y), _dims(y), ctypes.cast(_ptr(gate), ctypes.POINTER(ctypes.c_float)),
             _ptr(identity), _dims(identity) if identity is not None else None, _ptr(out), _dims(out),
             DTYPE_CODES[y.dtype])
    else:
        _ext().scale_residual(y, gate, identity, out)
    return out
