"""The CUDA kernels compiled for the CPU: g++ builds csrc/*.cu with ``-DHGK_EMULATE`` against
``csrc/emulator/cuda_emu.h`` (the CUDA execution model on the CPU: fibers for threads, real
``__syncthreads`` barriers, per-block shared memory, host WMMA, and host versions of the warp-level
PTX the sm_80+ kernel issues: ldmatrix, mma.sync, cp.async), and ctypes calls the same host
launchers the torch extension calls. Built once per source hash into the cache directory.
It exists to check the CUDA source's numerics where no GPU is: it is slow.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import os
import shutil
import subprocess
import tempfile

from . import build as cuda_build

EMULATED_ARCH = 90  # the arch the emulated launchers see: fp16/bf16 take the sm_80+ mma.sync kernel

_P, _I, _F, _I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_int64
_DIMS = ctypes.POINTER(ctypes.c_int64)  # n, c, h, w, then the four strides
_FLOATS = ctypes.POINTER(ctypes.c_float)

# The C signature of every entry point of emulator/emu_api.cpp: (argument types, result type).
# ctypes checks each call against it, so a mismatch is an error here, never a corrupted stack.
# tests/test_ops.py checks this table against the C source.
SIGNATURES = {
    "hgk_emu_last_error": ([], ctypes.c_char_p),
    "hgk_emu_conv_path": ([_I, _I, _I], _I),
    "hgk_emu_conv_mma_tiles": ([_I, _DIMS, _I], _I),  # dtype, out (5 × capacity int64), capacity
    "hgk_emu_conv_mma_k_step": ([], _I),
    # x, dims, y, dims, weight, bias, psum, psum rows per image, dtype, kernel, stride, pad top, pad left, relu,
    # affine, a, c, residual, dims, arch, tile (6 × int64), workspace, workspace floats, tf32x3
    "hgk_emu_conv_bn_act": ([_P, _DIMS, _P, _DIMS, _P, _P, _FLOATS, _I64, _I, _I, _I, _I, _I, _I, _I, _F, _F, _P,
                             _DIMS, _I, _DIMS, _FLOATS, _I64, _I], _I),
    # x, dims, y, dims, weight, bias, dtype, kernel, stride h, stride w, pad top, pad left, relu, affine, a, c
    "hgk_emu_depthwise_conv": ([_P, _DIMS, _P, _DIMS, _P, _P, _I, _I, _I, _I, _I, _I, _I, _I, _F, _F], _I),
    # x, dims, y, dims, dtype, kernel, stride, pad top, pad left, zero_pad
    "hgk_emu_max_pool": ([_P, _DIMS, _P, _DIMS, _I, _I, _I, _I, _I, _I], _I),
    "hgk_emu_ese_gate": ([_FLOATS, _I64, _I64, _I64, _P, _P, _I, _F, _FLOATS], _I),
    "hgk_emu_scale_residual": ([_P, _DIMS, _FLOATS, _P, _DIMS, _P, _DIMS, _I], _I),
    "hgk_emu_channels_vectorizable": ([_P, _DIMS], _I),
    "hgk_emu_set_int32_index_limit": ([_I64], _I),
    "hgk_emu_ptx_probe": ([_I, _P, _P], _I),
}


# -O1: 26 s of CPU to build instead of -O2's 35, and the test suite's emulated kernels ran no slower
# in all (-O0: 19 s, and its kernels cost more than that saves). No level changes a result: ISO C++
# without -ffast-math or -march, so no contraction into FMA and no reassociation.
FLAGS = ["-O1", "-std=c++17", "-DHGK_EMULATE", "-fPIC"]


def compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("the CUDA emulator needs a C++17 compiler (g++); install one or set CXX")
    return cxx


def _build(path: str) -> None:
    """Compile the emulator into ``path``: one g++ per source, as many at once as there are cores
    (a single g++ over every source used one core for ~40 s of CPU), then link."""
    csrc = cuda_build.csrc_dir()
    sources = [os.path.join(csrc, s) for s in cuda_build.KERNEL_SOURCES] + [os.path.join(csrc, "emulator", "emu_api.cpp")]
    flags = [*FLAGS, "-I", csrc]
    with tempfile.TemporaryDirectory(dir=cuda_build.cache_dir()) as work:
        def run(cmd):
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError("building the CUDA emulator failed:\n" + " ".join(cmd) + "\n" + result.stderr[-4000:])
        objects = [os.path.join(work, f"{i}.o") for i in range(len(sources))]
        compiles = [[compiler(), *flags, "-x", "c++", "-c", src, "-o", obj] for src, obj in zip(sources, objects)]
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(run, compiles))
        tmp = os.path.join(work, "emulator.so")
        run([compiler(), "-shared", *objects, "-o", tmp])
        os.replace(tmp, path)  # atomic: a reader never sees half a library


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    key = cuda_build.source_hash(" ".join(["emulator", *FLAGS]))
    path = os.path.join(cuda_build.cache_dir(), f"cuda-emulator-{key}.so")
    if not os.path.exists(path):
        os.makedirs(cuda_build.cache_dir(), exist_ok=True)
        with cuda_build.exclusive(path + ".lock"):  # one build per machine
            if not os.path.exists(path):
                _build(path)
    lib = ctypes.CDLL(path)
    for name, (argtypes, restype) in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def call(name: str, *args) -> None:
    lib = library()
    if getattr(lib, name)(*args) != 0:
        raise RuntimeError(f"emulated {name}: {lib.hgk_emu_last_error().decode()}")
