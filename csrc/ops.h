// ops.h — host launchers of the fused ops (one .cu file each). Plain C++ parameters, no torch:
// the torch bindings (bindings.cpp) and the CPU emulator (emulator/emu_api.cpp) both call these.
// The launchers assume checked arguments (the bindings and spec.prepare_* check them).
#pragma once

#include <vector>

#include "cuda_compat.h"

namespace hgk {

// The sm_80+ conv kernel's tile (conv_mma.cuh): BM pixels × BN output channels per block, a
// WARPS_M × WARPS_N grid of warps, STAGES-deep cp.async ring, and `splits` K slices (split-K,
// reduced in a fixed order through the workspace). Only the combinations of HGK_MMA_TILES exist.
struct ConvTile {
  int bm = 64, bn = 64, warps_m = 2, warps_n = 2, stages = 4, splits = 1;
};

struct ConvArgs {
  View4 x, y;
  const void* weight = nullptr;  // (k, k, C_in, C_out), dtype
  const void* bias = nullptr;    // (C_out,), dtype
  float* psum = nullptr;         // (N, psum_tiles, C_out) fp32 for the ESE sums, or null
  int64_t psum_tiles = 0;        // T, psum's rows per image: conv_psum_tiles()
  DType dtype = DType::f32;
  int kernel = 1, stride = 1;
  int pad_top = 0, pad_left = 0;  // zero rows above / columns left of the input; bottom / right follow from y
  bool relu = false;
  bool affine = false;            // y = affine_a · y + affine_c after the ReLU
  float affine_a = 1.f, affine_c = 0.f;
  const View4* residual = nullptr;  // added last, or null
  int arch = 0;                   // compute capability ×10 (e.g. 90): selects the kernel
  bool tf32x3 = false;            // fp32 on sm_80+ tensor cores as 3×TF32 (opt-in until verified on a GPU)
  ConvTile tile;                  // the sm_80+ kernel's tile (ignored by the SIMT and WMMA kernels)
  float* workspace = nullptr;     // split-K partial tiles, conv_workspace_floats() floats
  int64_t workspace_floats = 0;
};

// T, the ESE partial-sum rows per image the conv's path writes (psum is (N, T, C_out), the T rows
// of an image adding up to its channel sums). The SIMT and WMMA kernels tile each image apart, 64
// pixels a tile: cdiv(Ho·Wo, 64). The sm_80+ kernel's 64-row slabs run over all N·Ho·Wo rows, as
// the Triton kernels' row tiles do: the most slabs one image overlaps (spec.psum_tiles in Python,
// which the launchers size psum with; the bindings and the emulator refuse any other T).
int64_t conv_psum_tiles(const ConvArgs& a);
// Which kernel runs a conv: 2 = sm_80+ mma.sync (fp16/bf16; fp32 as 3×TF32 when tf32x3), 1 = WMMA
// (fp16 on sm_75), 0 = SIMT (fp32 by default: IEEE, the 1e-5 guarantee; everything older).
int conv_path(DType dtype, int arch, bool tf32x3);
// Whether `tile` is one of the sm_80+ tiles instantiated for dtype.
bool conv_tile_supported(DType dtype, const ConvTile& tile);
// The sm_80+ tiles instantiated for dtype (conv_mma.cuh: HGK_MMA_TILES), splits = 1: the Python
// launchers and tile heuristics read them through the bindings / emulator, never a copy.
std::vector<ConvTile> conv_mma_tiles(DType dtype);
// K elements per step of the sm_80+ kernel (its split-K slices are whole steps).
int conv_mma_k_step();
// fp32 floats of split-K workspace the conv needs (0 without split-K or off the sm_80+ path).
int64_t conv_workspace_floats(const ConvArgs& a);
void conv_bn_act(const ConvArgs& a, cudaStream_t stream);

// Internal: the sm_80+ kernel per dtype (conv_mma_f16.cu, conv_mma_bf16.cu).
void conv_mma_f16(const ConvArgs& a, cudaStream_t stream);
void conv_mma_bf16(const ConvArgs& a, cudaStream_t stream);
void conv_mma_f32(const ConvArgs& a, cudaStream_t stream);

struct Epilogue {
  bool relu = false;
  bool affine = false;
  float a = 1.f, c = 0.f;
};

// Depthwise k×k (k 3 or 5) conv + bias, then ReLU / affine; stride (sh, sw), zero padding top / left as given.
void depthwise_conv(const View4& x, const View4& y, const void* weight, const void* bias, DType dtype, int kernel,
                    int stride_h, int stride_w, int pad_top, int pad_left, const Epilogue& epilogue,
                    cudaStream_t stream);
// k×k (k 2 or 3) max pool; padded taps are ignored, or zeros that take part with zero_pad.
void max_pool(const View4& x, const View4& y, DType dtype, int kernel, int stride, int pad_top, int pad_left,
              bool zero_pad, cudaStream_t stream);
void ese_gate(const float* psum, int64_t n, int64_t tiles, int64_t c, const void* weight, const void* bias,
              DType dtype, float inv_hw, float* gate, cudaStream_t stream);
void scale_residual(const View4& y, const float* gate, const View4* identity, const View4& out, DType dtype,
                    cudaStream_t stream);

// Runs one PTX wrapper of ptx.h in a one-warp kernel on probe-defined inputs (ptx_probe.cu):
// the fragment-layout tests compare what each lane holds with the PTX ISA's tables.
enum class PtxProbe : int {
  ldmatrix_x1 = 0, ldmatrix_x2 = 1, ldmatrix_x4 = 2,
  ldmatrix_x1_trans = 3, ldmatrix_x2_trans = 4, ldmatrix_x4_trans = 5,
  mma_f16 = 6, mma_bf16 = 7, mma_tf32 = 8, cp_async = 9,
};
// Bytes of input / output of each probe (see ptx_probe.cu); in and out are device memory.
int64_t ptx_probe_in_bytes(PtxProbe probe);
int64_t ptx_probe_out_bytes(PtxProbe probe);
void ptx_probe(PtxProbe probe, const void* in, void* out, cudaStream_t stream);

}  // namespace hgk
