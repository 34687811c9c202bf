"""Launch configurations of the Triton kernels, as data, and device facts.

Tuned configs live in ``hgnet_kernels/configs/triton_<arch>.json`` (``arch`` like ``sm90``),
written by ``bench/tune_triton.py`` on that GPU: ``{"op": {"shape key": {param: value}}}``. At run
time they are only looked up (users never pay tuning time, and nothing is tuned during CUDA-graph
capture); a shape without an entry gets the op's heuristic below, each commented with its reason.
Under Triton's interpreter every op uses one fixed large-tile config, the interpreter's cost being
per program and loop iteration.

Everything here is pure Python (no Triton import), so ``python -m hgnet_kernels plan`` can show
the launch grid a config gives on a GPU this machine does not have.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Dict, Optional, Tuple

import torch

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def arch_name(device: torch.device) -> Optional[str]:
    """``"sm90"`` for a CUDA device of compute capability 9.0; None off the GPU."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


@functools.lru_cache(maxsize=None)
def _load(directory: str, arch: str) -> Dict[str, Dict[str, Dict[str, int]]]:
    path = os.path.join(directory, f"triton_{arch}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def tuned(op: str, key: str, arch: Optional[str]) -> Optional[Dict[str, int]]:
    """The tuned config of ``op`` for shape ``key`` on ``arch``, or None."""
    if arch is None:
        return None
    entry = _load(CONFIG_DIR, arch).get(op, {}).get(key)
    return dict(entry) if entry else None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).split(".")[-1]


# ---- conv (implicit GEMM) ----------------------------------------------------------------------

def conv_key(hw_out: int, c_in: int, c_out: int, kernel: int, stride: int, dtype: torch.dtype) -> str:
    """The shape key of a tuned conv config."""
    return f"k{kernel}s{stride}_cin{c_in}_cout{c_out}_hw{hw_out}_{_dtype_name(dtype)}"


def conv_config(hw_out: int, c_in: int, c_out: int, kernel: int, stride: int, dtype: torch.dtype,
                arch: Optional[str], interpreter: bool = False) -> Dict[str, int]:
    """BLOCK_M (pixels) × BLOCK_N (output channels) × BLOCK_K (input channels per step), warps and
    pipeline stages of the conv kernel for this layer."""
    if interpreter:  # few, large programs: the interpreter's cost is per program and iteration
        return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, num_warps=4, num_stages=1)
    found = tuned("conv_bn_act", conv_key(hw_out, c_in, c_out, kernel, stride, dtype), arch)
    if found:
        return found
    # The stem's first conv has 3 input channels: a 16-wide K step wastes the least. fp32 operands
    # are twice as wide, so their K step is halved to keep the shared-memory tile the same size.
    block_k = 16 if c_in <= 16 else (32 if dtype == torch.float32 else 64)
    # Large maps get 128-pixel tiles (fewer programs re-reading the weights); small maps 64 so that
    # the late stages still launch a few programs per image. Wide layers get 128 output channels.
    return dict(BLOCK_M=128 if hw_out >= 4096 else 64, BLOCK_N=128 if c_out >= 128 else 64,
                BLOCK_K=block_k, num_warps=4, num_stages=3)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def conv_grid(n: int, hw_out: int, c_out: int, cfg: Dict[str, int]) -> Tuple[int, int]:
    """The conv kernel's launch grid: (images × pixel tiles, output-channel tiles)."""
    return n * cdiv(hw_out, cfg["BLOCK_M"]), cdiv(c_out, cfg["BLOCK_N"])


# ---- the small ops: depthwise conv, max pool, scale + residual, ESE gate -------------------------

def tile_config(op: str, channels: int, dtype: torch.dtype, arch: Optional[str],
                interpreter: bool = False) -> Dict[str, int]:
    """BLOCK_P (pixels) × BLOCK_C (channels) of the memory-bound NHWC ops (``depthwise_conv``,
    ``max_pool``, ``scale_residual``)."""
    if interpreter:
        return dict(BLOCK_P=128, BLOCK_C=128, num_warps=4)
    found = tuned(op, f"c{channels}_{_dtype_name(dtype)}", arch)
    if found:
        return found
    # 64 contiguous channels are 128 bytes in fp16: one full line per pixel row of the tile, and
    # 32 pixels × 64 channels keep 4 warps busy with one element per thread per tap.
    return dict(BLOCK_P=32, BLOCK_C=64, num_warps=4)


def tile_grid(n: int, hw: int, channels: int, cfg: Dict[str, int]) -> Tuple[int, int]:
    """Launch grid of the pixel × channel tiled ops: (images × pixel tiles, channel tiles)."""
    return n * cdiv(hw, cfg["BLOCK_P"]), cdiv(channels, cfg["BLOCK_C"])


def gate_config(channels: int, dtype: torch.dtype, arch: Optional[str], interpreter: bool = False) -> Dict[str, int]:
    """BLOCK_CO × BLOCK_CI of the ESE gate's GEMV and BLOCK_T, the partial-sum rows per step."""
    if interpreter:
        return dict(BLOCK_CO=128, BLOCK_CI=128, BLOCK_T=64, num_warps=4)
    found = tuned("ese_gate", f"c{channels}_{_dtype_name(dtype)}", arch)
    if found:
        return found
    # A GEMV per image with C ≤ 1280: 32 output channels per program gives N · C / 32 programs
    # (enough to spread over the SMs at batch ≥ 4), each streaming 64-wide rows of the weight.
    return dict(BLOCK_CO=32, BLOCK_CI=64, BLOCK_T=16, num_warps=4)


def gate_grid(n: int, channels: int, cfg: Dict[str, int]) -> Tuple[int, int]:
    return n, cdiv(channels, cfg["BLOCK_CO"])


# ---- devices --------------------------------------------------------------------------------------

def _devices() -> Dict[str, Dict[str, float]]:
    with open(os.path.join(CONFIG_DIR, "devices.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def known_gpus() -> Dict[str, Dict[str, float]]:
    """Every GPU of ``configs/devices.json``: data-sheet peaks, SM count and arch."""
    return _devices()


def device_peaks(device: torch.device) -> Optional[Dict[str, float]]:
    """Data-sheet peak FLOP/s per dtype, bandwidth, SM count and arch of a known GPU (None: unknown,
    e.g. a CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in _devices().items():  # most specific names first in the file
        if key in name:
            return peaks
    return None
