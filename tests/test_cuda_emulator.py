"""The CUDA emulator (csrc/emulator/cuda_emu.h) reports what would be undefined on a GPU instead of
computing something: an exception in one emulated thread, a warp-level instruction that not every
lane of the warp reaches, a misaligned ldmatrix row; and it runs the next launch normally after.

A small C++ program against the emulator header (g++, as the emulator build itself needs)."""
import subprocess

import pytest

from hgnet_kernels.kernels.cuda import build as cuda_build
from hgnet_kernels.kernels.cuda import emulator as cuda_emulator

PROGRAM = r"""
#include <cstdio>
#include "cuda_compat.h"
#include "ptx.h"

__global__ void throws(int* out) {
  out[threadIdx.x] = threadIdx.x;
  __syncthreads();
  if (threadIdx.x == 5) throw std::runtime_error("thread 5 failed");
  __syncthreads();
}
__global__ void half_warp_ldmatrix(int* out) {
  __shared__ __align__(16) unsigned char tile[128];
  if (threadIdx.x < 16) { uint32_t r[1]; hgk::ptx::ldmatrix<1, false>(r, tile); }
}
__global__ void misaligned_ldmatrix(int*) {
  __shared__ __align__(16) unsigned char tile[128];
  uint32_t r[1];
  hgk::ptx::ldmatrix<1, false>(r, tile + 4);
}
__global__ void warps_exchange(int* out) {  // lane l's register 0 after an x1 ldmatrix of rows 0..7
  __shared__ __align__(16) uint16_t tile[64];
  for (int i = threadIdx.x; i < 64; i += blockDim.x) tile[i] = static_cast<uint16_t>(i);
  __syncthreads();
  uint32_t r[1];
  hgk::ptx::ldmatrix<1, false>(r, tile + (threadIdx.x % 8) * 8);
  out[threadIdx.x] = static_cast<int>(r[0]);
}

template <typename K>
void attempt(const char* name, K kernel, unsigned threads, int* out) {
  try {
    HGK_LAUNCH(kernel, dim3(2), dim3(threads), 0, nullptr, out);
    std::printf("%s: ran\n", name);
  } catch (const std::exception& e) {
    std::printf("%s: %s\n", name, e.what());
  }
}

int main() {
  static int out[128];
  attempt("throws", throws, 64, out);
  attempt("half_warp", half_warp_ldmatrix, 32, out);
  attempt("misaligned", misaligned_ldmatrix, 32, out);
  attempt("exchange", warps_exchange, 64, out);
  std::printf("lanes: %d %d %d\n", out[0], out[5], out[32 + 5]);
}
"""


def test_emulator_reports_undefined_behaviour(tmp_path):
    source = tmp_path / "probe.cpp"
    source.write_text(PROGRAM)
    binary = tmp_path / "probe"
    try:
        compiler = cuda_emulator.compiler()
    except RuntimeError as e:
        pytest.skip(str(e))
    build = subprocess.run([compiler, "-O1", "-std=c++17", "-DHGK_EMULATE", "-I", cuda_build.csrc_dir(), str(source),
                            "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in subprocess.run([str(binary)], capture_output=True, text=True,
                                                                  check=True).stdout.splitlines())
    assert lines["throws"] == "thread 5 failed"
    assert "some lanes of a warp never reached it" in lines["half_warp"]
    assert "not 16-byte aligned" in lines["misaligned"]
    assert lines["exchange"] == "ran"
    # lane 5 of each warp: row 1, elements 2 and 3 of the 8×8 matrix holding 0..63 row by row
    assert lines["lanes"] == f"{0 | 1 << 16} {10 | 11 << 16} {10 | 11 << 16}"
