"""Python launchers of the CUDA C++ ops (csrc/*.cu). Each op is resolved once (``resolve_*``): its
arguments checked (``spec.prepare_*``), the sm_80+ conv's tile chosen (``configs.cuda_conv_config``)
and its split-K workspace sized, the launch function and its scalar arguments bound, into a
``spec.Launch`` / ``spec.ConvLaunch`` that later calls of the same shapes replay (the backend keeps
one per op and input shape); the public ops resolve and launch on each call.

Same arguments and references as the Triton ops (``hgnet_kernels.kernels.spec``). CUDA tensors go to the
torch extension, whose bindings check every tensor's shape, dtype and device (and the partial sums
and workspace against the tile) on each call; CPU tensors go to the emulator build of the very same
kernel source (slow: for checking numerics without a GPU), given each call's pointers, shapes and
strides.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Dict, Optional, Tuple, Union

import torch

from ... import configs
from ...plan import Stride, stride_pair
from ..spec import (ConvLaunch, Launch, Padding, prepare_conv, prepare_depthwise, prepare_ese_gate, prepare_max_pool,
                    prepare_partial_sums, prepare_scale_residual, psum_tiles, symmetric)
from . import emulator
from .capabilities import SUPPORTS

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


def device_arch(device: torch.device, arch: Optional[int]) -> int:
    """Compute capability × 10 a launch targets: ``arch`` when given, else the device's (on the
    CPU, the arch the emulator stands in for)."""
    if arch is not None:
        return arch
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major * 10 + minor
    return emulator.EMULATED_ARCH


# hgk::conv_path's answer for the sm_80+ mma.sync kernel.
MMA_PATH = 2


@functools.lru_cache(maxsize=None)
def conv_path(dtype: torch.dtype, device_type: str, arch: int, tf32x3: bool = False) -> int:
    """The kernel ``hgk::conv_path`` runs a conv on: 2 (``MMA_PATH``) the sm_80+ mma.sync kernel
    (fp16 and bf16 from sm_80; fp32 only with ``tf32x3``, 3×TF32 on the tensor cores: opt-in until a
    GPU run confirms the 1e-5 guarantee), 1 WMMA, 0 the SIMT kernel (fp32 by default: IEEE)."""
    if device_type == "cuda":
        return _ext().conv_path(DTYPE_CODES[dtype], arch, tf32x3)
    return emulator.library().hgk_emu_conv_path(DTYPE_CODES[dtype], arch, int(tf32x3))


@functools.lru_cache(maxsize=None)
def mma_tiles(dtype: torch.dtype, device_type: str) -> Tuple[Tuple[int, int, int, int, int], ...]:
    """The (BM, BN, WARPS_M, WARPS_N, STAGES) tiles the sm_80+ kernel is instantiated for at
    ``dtype``, as csrc/conv_mma.cuh declares them (HGK_MMA_TILES), read from the compiled code."""
    if device_type == "cuda":
        return tuple(tuple(int(v) for v in tile) for tile in _ext().conv_mma_tiles(DTYPE_CODES[dtype]))
    capacity = 16
    values = (ctypes.c_int64 * (5 * capacity))()
    count = emulator.library().hgk_emu_conv_mma_tiles(DTYPE_CODES[dtype], values, capacity)
    if count > capacity:
        raise RuntimeError(f"the emulator instantiates {count} sm_80+ tiles; raise the capacity ({capacity}) here")
    return tuple(tuple(values[5 * i:5 * i + 5]) for i in range(count))


@functools.lru_cache(maxsize=None)
def mma_k_step(device_type: str) -> int:
    """K elements per step of the sm_80+ kernel (``mma::kBK``), read from the compiled code."""
    if device_type == "cuda":
        return int(_ext().conv_mma_k_step())
    return emulator.library().hgk_emu_conv_mma_k_step()


def partial_sums_shape(n: int, hw: int, c_in: int, c_out: int, dtype: torch.dtype, device: torch.device, *,
                       arch: Optional[int] = None, tf32x3: bool = False, **options) -> Tuple[int, int, int]:
    """(N, T, C_out) of the aggregation's ESE partial sums (``hgk::conv_psum_tiles``, which the
    extension and the emulator hold the buffer to). The sm_80+ kernel's 64-row slabs run over all
    N·H·W rows as Triton's row tiles do: T = ``psum_tiles(n, hw, 64)``, image i's row j summing its
    pixels in slab i·hw // 64 + j. The SIMT and WMMA kernels tile each image apart: T = cdiv(hw, 64),
    row j = pixels 64·j …. ``arch`` as in ``aggregation_ese``; ``config`` (the tile) does not change it."""
    if conv_path(dtype, device.type, device_arch(device, arch), tf32x3) == MMA_PATH:
        return n, psum_tiles(n, hw, configs.CUDA_PSUM_ROWS), c_out
    return n, configs.cdiv(hw, configs.CUDA_PSUM_ROWS), c_out


@functools.lru_cache(maxsize=None)
def device_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return configs.arch_sms(f"sm{emulator.EMULATED_ARCH}")  # the emulator picks the tiles an H100 would get


TILE_FIELDS = ("BM", "BN", "WARPS_M", "WARPS_N", "STAGES", "SPLIT_K")


def conv_config(x: torch.Tensor, packed_weight: torch.Tensor, out: torch.Tensor, stride: int,
                padding: Optional[Padding], arch: int) -> Dict[str, int]:
    """The sm_80+ kernel's tile for this call (``configs.cuda_conv_config``)."""
    k, _, c_in, c_out = packed_weight.shape
    return configs.cuda_conv_config(out.shape[2] * out.shape[3], c_in, c_out, k, stride, x.dtype, f"sm{arch}",
                                    batch=x.shape[0], padding=padding, sms=device_sms(x.device),
                                    tiles=mma_tiles(x.dtype, x.device.type), k_step=mma_k_step(x.device.type))


def _check_tile(config: Dict[str, int], dtype: torch.dtype, device_type: str) -> Tuple[int, ...]:
    tile = tuple(int(config.get(f, 1)) for f in TILE_FIELDS)
    tiles = mma_tiles(dtype, device_type)
    if tile[:5] not in tiles or not 1 <= tile[5] <= 64:
        raise ValueError(f"config: {config} is not an instantiated tile for {dtype}; (BM, BN, WARPS_M, WARPS_N, "
                         f"STAGES) must be one of {tiles} and 1 <= SPLIT_K <= 64")
    return tile


def _check_affine(affine) -> Optional[Tuple[float, float]]:
    if affine is None:
        return None
    if len(affine) != 2:
        raise ValueError(f"affine must be (scale, shift), got {affine!r}")
    return float(affine[0]), float(affine[1])


def _floats(t: Optional[torch.Tensor]):
    return ctypes.cast(_ptr(t), ctypes.POINTER(ctypes.c_float))


# ---- the launch functions a resolved launch calls: tensors first, then its bound arguments ---------
# On a GPU the extension's (``kernels``: the loaded module); on the CPU the emulator's, whose
# pointers, shapes and strides are read from each call's tensors.

def _conv_on_gpu(x, packed_weight, bias, out, residual, psum, workspace, kernels, stride, relu, arch, padding, affine,
                 tile, tf32x3) -> None:
    kernels.conv_bn_act(x, packed_weight, bias, stride, relu, out, psum, arch, padding=padding, affine=affine,
                        residual=residual, tile=tile, workspace=workspace, tf32x3=tf32x3)


def _conv_emulated(x, packed_weight, bias, out, residual, psum, workspace, epilogue, arch, tile, tf32x3) -> None:
    emulator.call("hgk_emu_conv_bn_act", _ptr(x), _dims(x), _ptr(out), _dims(out), _ptr(packed_weight), _ptr(bias),
                  _floats(psum), ctypes.c_int64(psum.shape[1] if psum is not None else 0), *epilogue, _ptr(residual),
                  _dims(residual) if residual is not None else None, arch, tile, _floats(workspace),
                  ctypes.c_int64(workspace.numel() if workspace is not None else 0), tf32x3)


def _depthwise_on_gpu(x, packed_weight, bias, out, kernels, stride, padding, relu, affine) -> None:
    kernels.depthwise_conv(x, packed_weight, bias, stride, out, padding=padding, relu=relu, affine=affine)


def _depthwise_emulated(x, packed_weight, bias, out, *scalars) -> None:
    emulator.call("hgk_emu_depthwise_conv", _ptr(x), _dims(x), _ptr(out), _dims(out), _ptr(packed_weight), _ptr(bias),
                  *scalars)


def _max_pool_on_gpu(x, out, kernels, kernel, stride, padding, zero_pad) -> None:
    kernels.max_pool(x, out, kernel=kernel, stride=stride, padding=padding, zero_pad=zero_pad)


def _max_pool_emulated(x, out, *scalars) -> None:
    emulator.call("hgk_emu_max_pool", _ptr(x), _dims(x), _ptr(out), _dims(out), *scalars)


def _ese_gate_on_gpu(psum, weight, bias, gate, kernels, hw) -> None:
    kernels.ese_gate(psum, weight, bias, hw, gate)


def _ese_gate_emulated(psum, weight, bias, gate, dtype, inv_hw) -> None:
    n, tiles, c = psum.shape
    emulator.call("hgk_emu_ese_gate", _floats(psum), ctypes.c_int64(n), ctypes.c_int64(tiles), ctypes.c_int64(c),
                  _ptr(weight), _ptr(bias), dtype, inv_hw, _floats(gate))


# ``identity`` is y (the backend's unused argument) when the launch was resolved without one.
def _scale_residual_on_gpu(y, gate, identity, out, kernels, residual) -> None:
    kernels.scale_residual(y, gate, identity if residual else None, out)


def _scale_residual_emulated(y, gate, identity, out, dtype, residual) -> None:
    identity = identity if residual else None
    emulator.call("hgk_emu_scale_residual", _ptr(y), _dims(y), _floats(gate), _ptr(identity),
                  _dims(identity) if identity is not None else None, _ptr(out), _dims(out), dtype)


# ---- resolution and the public ops ------------------------------------------------------------------

class CudaConvLaunch(ConvLaunch):
    """One conv call resolved once (``_resolve_conv``): the launch function (the extension's or the
    emulator's) and its bound arguments — stride, epilogue, arch, tile, tf32x3."""
    __slots__ = ("run", "args")

    def launch(self, x, packed_weight, bias, out, residual, psum, workspace) -> None:
        self.run(x, packed_weight, bias, out, residual, psum, workspace, *self.args)


def _resolve_conv(x, packed_weight, bias, stride, relu, out, psum, psum_shape, arch, padding, affine, residual, config,
                  tf32x3) -> CudaConvLaunch:
    """The launch of checked conv arguments (``prepare_conv``'s): the conv path, the sm_80+ tile
    (``config``, else ``conv_config``) and its split-K workspace, the launch function for the
    tensors' device with everything it takes bound."""
    k = packed_weight.shape[0]
    pad = tuple(padding) if padding is not None else symmetric(k)
    tile, workspace_shape = (64, 64, 2, 2, 4, 1), None
    if conv_path(x.dtype, x.device.type, arch, tf32x3) == MMA_PATH:
        config = config or conv_config(x, packed_weight, out, stride, padding, arch)
        tile = _check_tile(config, x.dtype, x.device.type)
        floats = configs.cuda_conv_workspace(x.shape[0], out.shape[2] * out.shape[3], packed_weight.shape[2],
                                             packed_weight.shape[3], k, dict(zip(TILE_FIELDS, tile)),
                                             k_step=mma_k_step(x.device.type))
        workspace_shape = (floats,) if floats else None
    a, c = affine if affine is not None else (1.0, 0.0)
    launch = CudaConvLaunch()
    launch.out_shape, launch.psum_shape, launch.workspace_shape = tuple(out.shape), psum_shape, workspace_shape
    if _emulated(x, packed_weight, bias, out, psum, residual):
        launch.run = _conv_emulated
        launch.args = ((DTYPE_CODES[x.dtype], k, stride, pad[0], pad[2], int(relu), int(affine is not None),
                        ctypes.c_float(a), ctypes.c_float(c)), arch, (ctypes.c_int64 * 6)(*tile), int(tf32x3))
    else:
        launch.run = _conv_on_gpu
        launch.args = (_ext(), stride, relu, arch, list(pad), list(affine) if affine is not None else None,
                       list(tile), tf32x3)
    return launch


def resolve_conv_bn_act(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                        relu: bool = True, out: Optional[torch.Tensor] = None, arch: Optional[int] = None, *,
                        padding: Optional[Padding] = None, affine: Optional[Tuple[float, float]] = None,
                        residual: Optional[torch.Tensor] = None, config: Optional[Dict[str, int]] = None,
                        tf32x3: bool = False) -> Tuple[CudaConvLaunch, torch.Tensor]:
    """Check ``conv_bn_act``'s arguments and resolve its launch: (the ``CudaConvLaunch``, called with
    (x, packed_weight, bias, out, residual); the destination)."""
    out = prepare_conv(SUPPORTS["conv"], x, packed_weight, bias, stride, out, padding, residual)
    return _resolve_conv(x, packed_weight, bias, stride, relu, out, None, None, device_arch(x.device, arch), padding,
                         _check_affine(affine), residual, config, tf32x3), out


def conv_bn_act(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                relu: bool = True, out: Optional[torch.Tensor] = None, arch: Optional[int] = None, *,
                padding: Optional[Padding] = None, affine: Optional[Tuple[float, float]] = None,
                residual: Optional[torch.Tensor] = None, config: Optional[Dict[str, int]] = None,
                tf32x3: bool = False) -> torch.Tensor:
    """``residual + affine(act(conv(x, W) + b))`` (``spec.conv_bn_act_reference``) with k 1, 2 or 3 and
    zero padding (top, bottom, left, right). ``arch`` (compute capability × 10) overrides the
    device's, e.g. to run the SIMT or WMMA path in the emulator; ``config`` overrides the sm_80+
    kernel's tile (``configs.cuda_conv_config``'s fields); ``tf32x3`` runs fp32 on the sm_80+
    tensor cores as 3×TF32 (see ``conv_path``)."""
    launch, out = resolve_conv_bn_act(x, packed_weight, bias, stride, relu, out, arch, padding=padding, affine=affine,
                                      residual=residual, config=config, tf32x3=tf32x3)
    return launch(x, packed_weight, bias, out, residual)[0]


def resolve_aggregation_ese(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                            out: Optional[torch.Tensor] = None, arch: Optional[int] = None, *,
                            config: Optional[Dict[str, int]] = None, tf32x3: bool = False,
                            psum: Optional[torch.Tensor] = None) -> Tuple[CudaConvLaunch, torch.Tensor]:
    """Check ``aggregation_ese``'s arguments (``psum``: a destination to check, or None) and resolve
    its launch: (the ``CudaConvLaunch``, called with (x, packed_weight, bias, out, psum=…) and
    returning (y, psum); the destination)."""
    out = prepare_conv(SUPPORTS["aggregation"], x, packed_weight, bias, 1, out, what="aggregation")
    arch = device_arch(x.device, arch)
    shape = partial_sums_shape(x.shape[0], out.shape[2] * out.shape[3], x.shape[1], out.shape[1], x.dtype, x.device,
                               arch=arch, tf32x3=tf32x3)
    if psum is not None:
        prepare_partial_sums(psum, shape, x)  # a caller's destination: checked once here
    return _resolve_conv(x, packed_weight, bias, 1, True, out, psum, shape, arch, None, None, None, config,
                         tf32x3), out


def aggregation_ese(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                    out: Optional[torch.Tensor] = None, arch: Optional[int] = None, *,
                    config: Optional[Dict[str, int]] = None, tf32x3: bool = False,
                    psum: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """1×1 conv + bias + ReLU with the ESE partial sums: ``(y, psum)``, psum (N, T, C_out) fp32 of
    ``partial_sums_shape`` (written into ``psum`` when given), which ``ese_gate`` consumes."""
    launch, out = resolve_aggregation_ese(x, packed_weight, bias, out, arch, config=config, tf32x3=tf32x3, psum=psum)
    return launch(x, packed_weight, bias, out, psum=psum)


def resolve_depthwise(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                      stride: Union[int, Stride] = 2, out: Optional[torch.Tensor] = None, *, relu: bool = False,
                      affine: Optional[Tuple[float, float]] = None,
                      padding: Optional[Padding] = None) -> Tuple[Launch, torch.Tensor]:
    """Check ``depthwise_conv``'s arguments and resolve its launch: (the ``Launch``, called with
    (x, packed_weight, bias, out); the destination)."""
    out = prepare_depthwise(SUPPORTS["depthwise"], x, packed_weight, bias, stride, out, padding)
    stride_h, stride_w = stride_pair(stride)
    k = packed_weight.shape[0]
    pad = tuple(padding) if padding is not None else symmetric(k)
    affine = _check_affine(affine)
    a, c = affine if affine is not None else (1.0, 0.0)
    if _emulated(x, packed_weight, bias, out):
        return Launch(_depthwise_emulated, (DTYPE_CODES[x.dtype], k, stride_h, stride_w, pad[0], pad[2], int(relu),
                                            int(affine is not None), ctypes.c_float(a), ctypes.c_float(c)), {},
                      out), out
    return Launch(_depthwise_on_gpu, (_ext(), [stride_h, stride_w], list(pad), relu,
                                      list(affine) if affine is not None else None), {}, out), out


def depthwise_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: Union[int, Stride] = 2,
                   out: Optional[torch.Tensor] = None, *, relu: bool = False,
                   affine: Optional[Tuple[float, float]] = None, padding: Optional[Padding] = None) -> torch.Tensor:
    """``affine(act(depthwise(x, W) + b))`` with k 3 or 5, stride s or (sh, sw)
    (``spec.depthwise_conv_reference``)."""
    launch, out = resolve_depthwise(x, packed_weight, bias, stride, out, relu=relu, affine=affine, padding=padding)
    launch(x, packed_weight, bias, out)
    return out


def resolve_max_pool(x: torch.Tensor, out: Optional[torch.Tensor] = None, *, kernel: int = 3, stride: int = 2,
                     padding: Optional[Padding] = None, zero_pad: bool = False) -> Tuple[Launch, torch.Tensor]:
    """Check ``max_pool``'s arguments and resolve its launch: (the ``Launch``, called with (x, out);
    the destination)."""
    out = prepare_max_pool(SUPPORTS["max_pool"], x, out, kernel, stride, padding)
    pad = tuple(padding) if padding is not None else symmetric(kernel)
    if _emulated(x, out):
        return Launch(_max_pool_emulated, (DTYPE_CODES[x.dtype], kernel, stride, pad[0], pad[2], int(zero_pad)), {},
                      out), out
    return Launch(_max_pool_on_gpu, (_ext(), kernel, stride, list(pad), zero_pad), {}, out), out


def max_pool(x: torch.Tensor, out: Optional[torch.Tensor] = None, *, kernel: int = 3, stride: int = 2,
             padding: Optional[Padding] = None, zero_pad: bool = False) -> torch.Tensor:
    """k×k max pool (k 2 or 3); padded taps ignored, or zeros in the max with ``zero_pad``."""
    launch, out = resolve_max_pool(x, out, kernel=kernel, stride=stride, padding=padding, zero_pad=zero_pad)
    launch(x, out)
    return out


def resolve_ese_gate(psum: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     hw: int) -> Tuple[Launch, torch.Tensor]:
    """Check ``ese_gate``'s arguments and resolve its launch: (the ``Launch``, called with
    (psum, weight, bias, gate); the gate)."""
    gate = prepare_ese_gate(psum, weight, bias, hw)
    if _emulated(psum, weight, bias):
        return Launch(_ese_gate_emulated, (DTYPE_CODES[weight.dtype], ctypes.c_float(1.0 / hw)), {}, gate), gate
    return Launch(_ese_gate_on_gpu, (_ext(), hw), {}, gate), gate


def ese_gate(psum: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: int) -> torch.Tensor:
    launch, gate = resolve_ese_gate(psum, weight, bias, hw)
    launch(psum, weight, bias, gate)
    return gate


def resolve_scale_residual(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor] = None,
                           out: Optional[torch.Tensor] = None) -> Tuple[Launch, torch.Tensor]:
    """Check ``scale_residual``'s arguments and resolve its launch: (the ``Launch``, called with
    (y, gate, identity or y, out); the destination)."""
    out = prepare_scale_residual(y, gate, identity, out)
    if _emulated(y, gate, identity, out):
        return Launch(_scale_residual_emulated, (DTYPE_CODES[y.dtype], identity is not None), {}, out), out
    return Launch(_scale_residual_on_gpu, (_ext(), identity is not None), {}, out), out


def scale_residual(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor] = None,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    launch, out = resolve_scale_residual(y, gate, identity, out)
    launch(y, gate, identity if identity is not None else y, out)
    return out


# The probes of csrc/ptx_probe.cu (hgk::PtxProbe): name → (code, input bytes, output bytes).
PTX_PROBES = {"ldmatrix_x1": (0, 640, 512), "ldmatrix_x2": (1, 640, 512), "ldmatrix_x4": (2, 640, 512),
              "ldmatrix_x1_trans": (3, 640, 512), "ldmatrix_x2_trans": (4, 640, 512),
              "ldmatrix_x4_trans": (5, 640, 512), "mma_f16": (6, 1280, 512), "mma_bf16": (7, 1280, 512),
              "mma_tf32": (8, 1280, 512), "cp_async": (9, 576, 640)}


def ptx_probe(name: str, data: torch.Tensor) -> torch.Tensor:
    """Runs one PTX wrapper of csrc/ptx.h in a one-warp kernel on ``data`` (uint8, the probe's input
    layout, see csrc/ptx_probe.cu) and returns what the lanes wrote (uint8): on a GPU the hardware's
    answer, on the CPU the emulator's."""
    code, in_bytes, out_bytes = PTX_PROBES[name]
    if data.dtype != torch.uint8 or data.numel() != in_bytes or not data.is_contiguous():
        raise ValueError(f"{name}: expected {in_bytes} contiguous uint8 bytes, got {data.numel()} {data.dtype}")
    out = torch.zeros(out_bytes, dtype=torch.uint8, device=data.device)
    if _emulated(data, out):
        emulator.call("hgk_emu_ptx_probe", code, _ptr(data), _ptr(out))
    else:
        _ext().ptx_probe(code, data, out)
    return out
