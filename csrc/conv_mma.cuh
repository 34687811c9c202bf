// conv_mma.cuh — the conv kernel for sm_80 and newer, fp16 and bf16 with fp32 accumulation, and fp32
// as 3×TF32 (see mma_step_3xtf32): an
// implicit GEMM  Y[m, co] = Σ_k A[m, k] · W[k, co]  over NHWC, with m a pixel of the (flattened)
// batch and k = (tap, input channel) flattened: W is the packed (kh, kw, C_in, C_out) weight read as
// a (k·k·C_in) × C_out matrix, and one K step of 32 may span two taps.
//
//   * Rows: each tile computes its pixels' int32 offsets once (RowInfo, in shared memory): the
//     input offset of the window's corner, its (ih0, iw0) for the bounds test, the output and
//     residual offsets. A tap then adds kh·sh + kw·sw; no division runs in the K loop.
//   * Loads: 16-byte cp.async.cg (8 channels; 4 in fp32) with src-size 0 for padding taps, channels past C_in
//     and rows past M (zero-fill), into a STAGES-deep ring with one __syncthreads per K step. Inputs
//     whose channels are not 8-aligned and contiguous (the stem's NCHW image, odd slices) take
//     ordinary loads into the same ring: correct everywhere, fast where it matters.
//   * Shared memory: A tiles BM×32 (64-byte rows), B tiles 32×BN, 16-byte chunks XOR-swizzled so
//     that the 8 rows an ldmatrix phase reads, and the 8 chunks a cp.async phase writes, fall in
//     8 different bank groups.
//   * Fragments: ldmatrix.x4 gives a whole 16×16 A fragment; ldmatrix.x4.trans two 16×8 B
//     fragments from the row-major weight tile; mma.sync.m16n8k16 accumulates in fp32. Warp tile
//     WM×WN = (BM/WARPS_M)×(BN/WARPS_N). fp32: ldmatrix.x4 A, 32-bit loads of B, each split into
//     two tf32 halves, three mma.m16n8k8.tf32 per product.
//   * Epilogue, 64 rows at a time through the pipeline's shared memory: accumulators → fp32 tile →
//     bias, ReLU (NaN kept), a·y + c, + residual → 16-byte stores (8 channels) into any channel
//     slice; the ESE partial sums are column sums of each 64-row slab per image it holds (rows run
//     over N·Ho·Wo, so a slab may straddle images; see epilogue_slab), one writer each.
//   * Split-K (grid.z > 1, for layers whose M×N tiles do not fill the GPU): each split writes its
//     fp32 tile to the workspace and conv_splitk_reduce_kernel adds the splits in a fixed order
//     (0, 1, …) before the same epilogue: deterministic, no atomics.
//
// Instantiated per dtype in conv_mma_f16.cu / conv_mma_bf16.cu / conv_mma_f32.cu (parallel builds);
// launched by conv_bn_act() in conv_bn_act.cu for arch >= 80, with the tile configs.py chose.
#pragma once

#include <climits>
#include <stdexcept>
#include <string>

#include "ops.h"
#include "ptx.h"

namespace hgk {
namespace mma {

constexpr int kBK = 32;         // K elements per step: 4 chunks of 8 halves, or 8 of 4 floats
constexpr int kPsumRows = 64;   // rows per epilogue slab, whose ESE partial sums it writes (configs.CUDA_PSUM_ROWS)

// One output pixel of a tile, computed once per tile (offsets in elements, int32).
struct RowInfo {
  int x;   // input offset of the window's top-left tap (may be negative: it is padding)
  int hw;  // (ih0 << 16) | (iw0 & 0xffff); ih0 = -32768 for rows outside the output
  int y;   // output offset, -1 outside the output
  int r;   // residual offset
};

struct Params {
  const void* x;
  const void* weight;
  const void* bias;
  void* y;
  const void* res;
  float* psum;
  float* ws;
  int xs_n, xs_c, xs_h, xs_w;
  int ys_n, ys_c, ys_h, ys_w;
  int rs_n, rs_c, rs_h, rs_w;
  int h, w, c_in, ho, wo, c_out;
  int ksize, stride, pad_top, pad_left;
  int hw;          // rows per image: Ho·Wo (images are laid end to end, no padding rows)
  int m_total;     // images × hw
  int psum_tiles;  // T, the partial-sum rows per image (conv_psum_tiles)
  int k_total;  // ksize² · C_in
  int k_steps, steps_per_split, splits, tiles_m, tiles_n;
  float aff_a, aff_c;
  bool relu, affine, residual, vec_a, vec_b, vec_y, vec_r;
};

__device__ __forceinline__ RowInfo row_info(const Params& p, int m) {
  RowInfo ri;
  const int img = m / p.hw, pix = m - img * p.hw;
  if (m < p.m_total) {
    const int oh = pix / p.wo, ow = pix - oh * p.wo;
    const int ih0 = oh * p.stride - p.pad_top, iw0 = ow * p.stride - p.pad_left;
    ri.x = img * p.xs_n + ih0 * p.xs_h + iw0 * p.xs_w;
    ri.hw = static_cast<int>((static_cast<unsigned>(ih0) << 16) | (static_cast<unsigned>(iw0) & 0xffffu));
    ri.y = img * p.ys_n + oh * p.ys_h + ow * p.ys_w;
    ri.r = img * p.rs_n + oh * p.rs_h + ow * p.rs_w;
  } else {
    ri.x = 0;
    ri.hw = static_cast<int>(0x80000000u);  // ih0 = -32768: every tap is outside
    ri.y = -1;
    ri.r = 0;
  }
  return ri;
}
__device__ __forceinline__ int row_ih0(int hw) { return hw >> 16; }
__device__ __forceinline__ int row_iw0(int hw) { return static_cast<int16_t>(hw & 0xffff); }

// Physical 16-byte chunk of logical chunk `chunk` in row `row` of a tile with CHUNKS chunks per
// row: rows of 128 bytes or more XOR with row % 8; 64-byte rows (two per 128-byte bank line) with
// (row / 2) % 4. Either way 8 consecutive rows at one logical chunk hit 8 different bank groups.
template <int CHUNKS>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  if constexpr (CHUNKS >= 8)
    return chunk ^ (row & 7);
  else if constexpr (CHUNKS == 4)
    return chunk ^ ((row >> 1) & 3);
  else
    return chunk;
}

// The fp32 weight tile is read by plain 32-bit loads (ldmatrix cannot transpose 32-bit elements):
// lanes (g, t) read row t (and t + 4) at column g of an 8-column pair of chunks; XOR with
// 2·(row % 4) puts the four rows' chunk pairs in four different bank groups.
template <typename T, int CHUNKS>
__device__ __forceinline__ int swizzle_b(int row, int chunk) {
  if constexpr (sizeof(T) == 4) {
    static_assert(CHUNKS >= 8, "fp32 weight tiles of at least 32 columns");
    return chunk ^ ((row & 3) << 1);
  } else {
    return swizzle<CHUNKS>(row, chunk);
  }
}

__device__ __forceinline__ void store_float2(float* p, float a, float b) {
#ifdef HGK_EMULATE
  p[0] = a;
  p[1] = b;
#else
  *reinterpret_cast<float2*>(p) = make_float2(a, b);
#endif
}

// The epilogue of 64 rows × BN columns staged as fp32 in C (row stride BN + 8): bias, ReLU, affine,
// residual, store; then, with psum, the ESE partial sums of slab `group` (rows 64·group … of the
// N·Ho·Wo rows), laid out as the Triton kernels' with BLOCK_M = 64: for each image `im` the slab
// holds rows of, psum[im, group − first(im)] = the column sums of those rows, first(im) =
// im·hw / 64 being the image's first slab; that slab also zeroes the image's rows past its last
// slab, up to T. Each entry has one writer and sums in a fixed order: deterministic. Every thread
// of the block calls it.
template <typename T, int BN, int THREADS>
__device__ __forceinline__ void epilogue_slab(const Params& p, float* C, const RowInfo* rows, int n0, int group) {
  constexpr int LDC = BN + 8, CHUNKS = BN / 8, ROW_STEP = THREADS / CHUNKS, VW = 16 / sizeof(T);
  static_assert(THREADS % CHUNKS == 0, "whole rows per pass");
  const int tid = threadIdx.x;
  const int cc = tid % CHUNKS, co = n0 + cc * 8;
  const int valid = p.c_out - co < 8 ? p.c_out - co : 8;  // columns of this chunk inside C_out (may be ≤ 0)
  const T* bias = static_cast<const T*>(p.bias);
  const T* res = static_cast<const T*>(p.res);
  T* y = static_cast<T*>(p.y);
  const bool psum = p.psum != nullptr;
  float b[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) b[e] = e < valid ? to_float(bias[co + e]) : 0.f;
  for (int r = tid / CHUNKS; r < kPsumRows; r += ROW_STEP) {
    const RowInfo ri = rows[r];
    float* c = C + r * LDC + cc * 8;
    float v[8];
    if (ri.y < 0 || valid <= 0) {
      if (psum) {
#pragma unroll
        for (int e = 0; e < 8; ++e) c[e] = 0.f;
      }
      continue;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[e] = c[e] + b[e];
      if (p.relu && v[e] < 0.f) v[e] = 0.f;  // not fmaxf: NaN must propagate as in torch.relu
      if (p.affine) v[e] = v[e] * p.aff_a + p.aff_c;
    }
    if (p.residual) {
      if (p.vec_r && valid == 8) {
        __align__(16) T rv[8];
#pragma unroll
        for (int e = 0; e < 8; e += VW) copy16(rv + e, res + ri.r + co + e);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] += to_float(rv[e]);
      } else {
        for (int e = 0; e < valid; ++e) v[e] += to_float(res[ri.r + (co + e) * p.rs_c]);
      }
    }
    if (p.vec_y && valid == 8) {
      __align__(16) T out[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) out[e] = from_float<T>(v[e]);
#pragma unroll
      for (int e = 0; e < 8; e += VW) copy16(y + ri.y + co + e, out + e);
    } else {
      for (int e = 0; e < valid; ++e) y[ri.y + (co + e) * p.ys_c] = from_float<T>(v[e]);
    }
    if (psum) {
#pragma unroll
      for (int e = 0; e < 8; ++e) c[e] = e < valid ? v[e] : 0.f;
    }
  }
  if (psum) {
    __syncthreads();
    const int row0 = group * kPsumRows;
    if (row0 < p.m_total) {
      const int row_end = p.m_total - row0 < kPsumRows ? p.m_total : row0 + kPsumRows;
      for (int im = row0 / p.hw; im * p.hw < row_end; ++im) {
        // The image's rows inside the slab are one contiguous range [lo, hi) of the tile.
        const int lo = im * p.hw > row0 ? im * p.hw - row0 : 0;
        const int hi = (im + 1) * p.hw < row_end ? (im + 1) * p.hw - row0 : row_end - row0;
        const int first = im * p.hw / kPsumRows;
        const int count = ((im + 1) * p.hw - 1) / kPsumRows - first + 1;  // slabs the image overlaps
        float* const out = p.psum + static_cast<int64_t>(im) * p.psum_tiles * p.c_out + n0;
        for (int col = tid; col < BN; col += THREADS) {
          if (n0 + col >= p.c_out) continue;
          float s = 0.f;
          for (int r = lo; r < hi; ++r) s += C[r * LDC + col];  // fixed order: deterministic
          out[static_cast<int64_t>(group - first) * p.c_out + col] = s;
          if (group == first)
            for (int j = count; j < p.psum_tiles; ++j) out[static_cast<int64_t>(j) * p.c_out + col] = 0.f;
        }
      }
    }
  }
}

// One K step (32) of a warp's WM×WN tile from a stage of 16-bit operands.
template <typename T, int BN, int WM, int WN, int FM, int FN, int A_CHUNKS, int B_CHUNKS>
__device__ __forceinline__ void mma_step_16bit(float (&acc)[FM][FN][4], const T* a_st, const T* b_st, int lane,
                                               int warp_m, int warp_n) {
  static_assert(FN % 2 == 0, "B fragments come in pairs from one ldmatrix.x4.trans");
  // ldmatrix.x4: lanes 0-7 / 8-15 / 16-23 / 24-31 address rows 0-7 / 8-15 / 0-7 / 8-15 of
  // k-chunk 0 / 0 / 1 / 1: registers a0..a3 of the m16n8k16 A fragment.
  const int lrow = (lane % 8) + ((lane / 8) % 2) * 8, lchunk = lane / 16;
#pragma unroll
  for (int kk = 0; kk < kBK / 16; ++kk) {
    uint32_t af[FM][4], bf[FN][2];
#pragma unroll
    for (int i = 0; i < FM; ++i) {
      const int row = warp_m * WM + i * 16 + lrow;
      ptx::ldmatrix<4, false>(af[i], a_st + row * kBK + swizzle<A_CHUNKS>(row, kk * 2 + lchunk) * 8);
    }
    // ldmatrix.x4.trans on the row-major k×n weight tile: k rows 0-7 / 8-15 of n-chunk 0, then
    // of n-chunk 1: b0, b1 of two neighbouring n8 fragments.
#pragma unroll
    for (int j = 0; j < FN / 2; ++j) {
      const int krow = kk * 16 + lrow, chunk = (warp_n * WN + j * 16) / 8 + lchunk;
      uint32_t r[4];
      ptx::ldmatrix<4, true>(r, b_st + krow * BN + swizzle<B_CHUNKS>(krow, chunk) * 8);
      bf[2 * j][0] = r[0];
      bf[2 * j][1] = r[1];
      bf[2 * j + 1][0] = r[2];
      bf[2 * j + 1][1] = r[3];
    }
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) ptx::mma_m16n8k16<T>(acc[i][j], af[i], bf[j], acc[i][j]);
  }
}

__device__ __forceinline__ uint32_t f2u(float f) {
#ifdef HGK_EMULATE
  return hgk_float_bits(f);
#else
  return __float_as_uint(f);
#endif
}
__device__ __forceinline__ float u2f(uint32_t u) {
#ifdef HGK_EMULATE
  return hgk_bits_float(u);
#else
  return __uint_as_float(u);
#endif
}

// x = big + small with big = tf32(x) and small = tf32(x − big): 22 of fp32's 24 significand bits.
__device__ __forceinline__ void split_tf32(uint32_t x, uint32_t& big, uint32_t& small) {
  const float f = u2f(x);
  const float b = ptx::cvt_tf32(f);
  big = f2u(b);
  small = f2u(ptx::cvt_tf32(f - b));
}

// One K step (32) of a warp's tile from fp32 operands, 3×TF32: A·B ≈ As·Bb + Ab·Bs + Ab·Bb, each an
// mma.m16n8k8.tf32 with fp32 accumulation; the dropped As·Bs is below fp32's rounding. Each
// m16n8k8's 24 products are summed from zero, small terms first, and added to the running sum
// once: added to it directly, the small terms (~2^-11 of a product) fall below half an ulp of a
// sum of many same-sign products and are rounded away (base's K = 11520: 1.4e-4 instead of < 1e-6;
// the bound and its tests: numerics.tf32x3_error_bound with blocks of 8, tests/test_tf32x3_bound.py).
// A fragments by ldmatrix.x4 on 32-bit data (each 16-byte row holds 4 fp32: thread T gets word
// T % 4 of row T / 4, which is exactly the m16n8k8 tf32 A layout); B by plain 32-bit loads
// (b0 = B[t][g], b1 = B[t + 4][g]).
template <int BN, int WM, int WN, int FM, int FN, int A_CHUNKS, int B_CHUNKS>
__device__ __forceinline__ void mma_step_3xtf32(float (&acc)[FM][FN][4], const float* a_st, const float* b_st,
                                                int lane, int warp_m, int warp_n) {
  const int lrow = (lane % 8) + ((lane / 8) % 2) * 8, lchunk = lane / 16;
  const int g = lane / 4, t = lane % 4;
  // Not unrolled: hoisting the next k-slice's splits over these sums spills the 128-register
  // budget of the 4-blocks-per-SM variant; one slice's 3·FM·FN mma.sync give the ILP.
#pragma unroll 1
  for (int kk = 0; kk < kBK / 8; ++kk) {
    uint32_t a_big[FM][4], a_small[FM][4], b_big[FN][2], b_small[FN][2];
#pragma unroll
    for (int i = 0; i < FM; ++i) {
      const int row = warp_m * WM + i * 16 + lrow;
      uint32_t r[4];
      ptx::ldmatrix<4, false>(r, a_st + row * kBK + swizzle<A_CHUNKS>(row, kk * 2 + lchunk) * 4);
#pragma unroll
      for (int q = 0; q < 4; ++q) split_tf32(r[q], a_big[i][q], a_small[i][q]);
    }
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      const int n = warp_n * WN + j * 8 + g;
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int k = kk * 8 + t + 4 * q;
        split_tf32(f2u(b_st[k * BN + swizzle_b<float, B_CHUNKS>(k, n / 4) * 4 + n % 4]), b_big[j][q], b_small[j][q]);
      }
    }
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        float sum[4] = {0.f, 0.f, 0.f, 0.f};
        ptx::mma_m16n8k8_tf32(sum, a_small[i], b_big[j], sum);
        ptx::mma_m16n8k8_tf32(sum, a_big[i], b_small[j], sum);
        ptx::mma_m16n8k8_tf32(sum, a_big[i], b_big[j], sum);
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[i][j][q] += sum[q];
      }
  }
}

template <typename T, int BM, int BN, int WARPS_M, int WARPS_N, int STAGES>
struct Tile {
  static constexpr int kThreads = WARPS_M * WARPS_N * 32;
  static constexpr int kWM = BM / WARPS_M, kWN = BN / WARPS_N;
  static constexpr int kFM = kWM / 16, kFN = kWN / 8;
  static constexpr int kAStage = BM * kBK, kBStage = kBK * BN;  // elements
  static constexpr int kChunk = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte chunk
  static constexpr int kAChunks = kBK / kChunk, kBChunks = BN / kChunk;  // chunks per row
  static constexpr int kAIters = BM * kAChunks / kThreads, kBIters = kBK * kBChunks / kThreads;
  static constexpr int kPipeBytes = STAGES * (kAStage + kBStage) * static_cast<int>(sizeof(T));
  static constexpr int kStageCBytes = kPsumRows * (BN + 8) * 4;
  static constexpr int kSmemBytes = kPipeBytes + BM * static_cast<int>(sizeof(RowInfo));
  static_assert(kWM % 16 == 0 && kWN % 16 == 0, "warp tile: 16-row A and 16-column B fragment pairs");
  static_assert(BM % kPsumRows == 0 && kWM <= kPsumRows, "warp rows inside one epilogue slab");
  static_assert(BM * kAChunks % kThreads == 0 && kBK * kBChunks % kThreads == 0, "whole chunks per thread");
  static_assert(kStageCBytes <= kPipeBytes, "the epilogue tile fits in the pipeline's shared memory");
};

// VEC: input and weight tiles by 16-byte cp.async (unit channel stride, C_in and C_out multiples
// of 8, every stride and base 16-byte aligned: what the network's NHWC buffers always give);
// otherwise element loads (the stem's NCHW image, odd test slices). Separate instantiations: the
// element path's registers would otherwise cap the fast one's occupancy. The fast one is held to
// 128 registers (2 blocks of 256 or 4 of 128 threads per SM).
template <typename T, int BM, int BN, int WARPS_M, int WARPS_N, int STAGES, bool VEC>
__global__ void __launch_bounds__(WARPS_M * WARPS_N * 32, VEC ? 256 / (WARPS_M * WARPS_N * 16) : 1)
    conv_mma_kernel(const Params p) {
#if defined(HGK_EMULATE) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
  using Cfg = Tile<T, BM, BN, WARPS_M, WARPS_N, STAGES>;
  constexpr int THREADS = Cfg::kThreads, WM = Cfg::kWM, WN = Cfg::kWN, FM = Cfg::kFM, FN = Cfg::kFN;
  constexpr int A_CHUNKS = Cfg::kAChunks, B_CHUNKS = Cfg::kBChunks, CH = Cfg::kChunk;
  constexpr int A_ROWS_PER_PASS = THREADS / A_CHUNKS;
  HGK_DYNAMIC_SMEM(uint4, smem);
  T* const As = reinterpret_cast<T*>(smem);
  T* const Bs = As + STAGES * Cfg::kAStage;
  RowInfo* const rows = reinterpret_cast<RowInfo*>(Bs + STAGES * Cfg::kBStage);
  float* const C = reinterpret_cast<float*>(smem);  // the epilogue's tile reuses the pipeline

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warp_m = warp / WARPS_N, warp_n = warp % WARPS_N;
  const int tile_m = blockIdx.x, tile_n = blockIdx.y, split = blockIdx.z;
  const int m0 = tile_m * BM, n0 = tile_n * BN;
  const int step0 = split * p.steps_per_split;
  const int nsteps = (p.k_steps - step0 < p.steps_per_split ? p.k_steps - step0 : p.steps_per_split);
  const T* const xp = static_cast<const T*>(p.x);
  const T* const wp = static_cast<const T*>(p.weight);

  for (int r = tid; r < BM; r += THREADS) rows[r] = row_info(p, m0 + r);
  __syncthreads();

  // 16-byte A loads: this thread's chunk column a_cc of rows a_row0 + i·A_ROWS_PER_PASS, and the
  // (tap, channel) of its chunk, advanced by one K step per load (C_in % CH == 0: a chunk never
  // straddles two taps).
  const int a_cc = tid % A_CHUNKS, a_row0 = tid / A_CHUNKS;
  int a_x[Cfg::kAIters], a_hw[Cfg::kAIters];
#pragma unroll
  for (int i = 0; i < Cfg::kAIters; ++i) {
    const RowInfo ri = rows[a_row0 + i * A_ROWS_PER_PASS];
    a_x[i] = ri.x;
    a_hw[i] = ri.hw;
  }
  int kc, kh, kw;
  {
    const int k = step0 * kBK + a_cc * CH;
    const int tap = k / p.c_in;
    kc = k - tap * p.c_in;
    kh = tap / p.ksize;
    kw = tap - kh * p.ksize;
  }

  auto load_stage = [&](int stage, int step) {
    T* const a_dst = As + stage * Cfg::kAStage;
    T* const b_dst = Bs + stage * Cfg::kBStage;
    if constexpr (VEC) {
      const bool tap_ok = kh < p.ksize;
      const int tap_off = kh * p.xs_h + kw * p.xs_w + kc;
#pragma unroll
      for (int i = 0; i < Cfg::kAIters; ++i) {
        const int r = a_row0 + i * A_ROWS_PER_PASS;
        const int ih = row_ih0(a_hw[i]) + kh, iw = row_iw0(a_hw[i]) + kw;
        const bool ok = tap_ok && static_cast<unsigned>(ih) < static_cast<unsigned>(p.h) &&
                        static_cast<unsigned>(iw) < static_cast<unsigned>(p.w);
        ptx::cp_async_16(a_dst + r * kBK + swizzle<A_CHUNKS>(r, a_cc) * CH, ok ? xp + a_x[i] + tap_off : xp, ok);
      }
      kc += kBK;
      while (kc >= p.c_in) {
        kc -= p.c_in;
        if (++kw == p.ksize) {
          kw = 0;
          ++kh;
        }
      }
    } else {
      // Element by element (any strides, any C_in): the divisions stay out of the fast path.
      for (int e = tid; e < BM * kBK; e += THREADS) {
        const int r = e / kBK, kk = e % kBK, k = step * kBK + kk;
        T v = from_float<T>(0.f);
        if (k < p.k_total) {
          const int tap = k / p.c_in, c = k - tap * p.c_in;
          const int th = tap / p.ksize, tw = tap - th * p.ksize;
          const RowInfo ri = rows[r];
          const int ih = row_ih0(ri.hw) + th, iw = row_iw0(ri.hw) + tw;
          if (static_cast<unsigned>(ih) < static_cast<unsigned>(p.h) &&
              static_cast<unsigned>(iw) < static_cast<unsigned>(p.w))
            v = xp[ri.x + th * p.xs_h + tw * p.xs_w + c * p.xs_c];
        }
        a_dst[r * kBK + swizzle<A_CHUNKS>(r, kk / CH) * CH + kk % CH] = v;
      }
    }
    if constexpr (VEC) {
#pragma unroll
      for (int j = 0; j < Cfg::kBIters; ++j) {
        const int e = tid + j * THREADS;
        const int kr = e / B_CHUNKS, cc = e % B_CHUNKS;
        const int k = step * kBK + kr, co = n0 + cc * CH;
        const bool ok = k < p.k_total && co < p.c_out;
        ptx::cp_async_16(b_dst + kr * BN + swizzle_b<T, B_CHUNKS>(kr, cc) * CH, ok ? wp + k * p.c_out + co : wp, ok);
      }
    } else {
      for (int e = tid; e < kBK * BN; e += THREADS) {
        const int kr = e / BN, col = e % BN;
        const int k = step * kBK + kr, co = n0 + col;
        b_dst[kr * BN + swizzle_b<T, B_CHUNKS>(kr, col / CH) * CH + col % CH] =
            k < p.k_total && co < p.c_out ? wp[k * p.c_out + co] : from_float<T>(0.f);
      }
    }
  };

  // Prologue: STAGES - 1 steps in flight. One commit per step, even when nothing is left to load,
  // so that wait_group<STAGES - 2> always means "the step about to be computed has landed".
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nsteps) load_stage(s, step0 + s);
    ptx::cp_async_commit();
  }

  float acc[FM][FN][4];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

  for (int it = 0; it < nsteps; ++it) {
    ptx::cp_async_wait<STAGES - 2>();
    // One barrier per step: step `it` is visible to every warp, and every warp is done with the
    // stage the load below overwrites (computed at it - 1).
    __syncthreads();
    if (it + STAGES - 1 < nsteps) load_stage((it + STAGES - 1) % STAGES, step0 + it + STAGES - 1);
    ptx::cp_async_commit();
    const T* const a_st = As + (it % STAGES) * Cfg::kAStage;
    const T* const b_st = Bs + (it % STAGES) * Cfg::kBStage;
    if constexpr (sizeof(T) == 2)
      mma_step_16bit<T, BN, WM, WN, FM, FN, A_CHUNKS, B_CHUNKS>(acc, a_st, b_st, lane, warp_m, warp_n);
    else
      mma_step_3xtf32<BN, WM, WN, FM, FN, A_CHUNKS, B_CHUNKS>(acc, a_st, b_st, lane, warp_m, warp_n);
  }
  ptx::cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the epilogue's tile

  constexpr int LDC = BN + 8;  // 8 floats of padding: a half-warp's float2 stores hit 32 banks once
  for (int slab = 0; slab < BM / kPsumRows; ++slab) {
#pragma unroll
    for (int i = 0; i < FM; ++i) {
      const int row = warp_m * WM + i * 16 + lane / 4 - slab * kPsumRows;
      if (row < 0 || row >= kPsumRows) continue;  // uniform per warp: fragments never straddle slabs
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        const int col = warp_n * WN + j * 8 + 2 * (lane % 4);
        store_float2(C + row * LDC + col, acc[i][j][0], acc[i][j][1]);
        store_float2(C + (row + 8) * LDC + col, acc[i][j][2], acc[i][j][3]);
      }
    }
    __syncthreads();
    if (p.splits > 1) {
      float* dst = p.ws + ((static_cast<int64_t>(split) * p.tiles_m + tile_m) * p.tiles_n + tile_n) * (BM * BN) +
                   slab * kPsumRows * BN;
      for (int e = tid; e < kPsumRows * BN / 4; e += THREADS) {
        const int r = e / (BN / 4), c4 = (e % (BN / 4)) * 4;
        copy16(dst + r * BN + c4, C + r * LDC + c4);
      }
    } else {
      epilogue_slab<T, BN, THREADS>(p, C, rows + slab * kPsumRows, n0, (m0 + slab * kPsumRows) / kPsumRows);
    }
    __syncthreads();
  }
#endif
}

constexpr int kReduceThreads = 256;

// Split-K: adds the splits' fp32 tiles in split order (deterministic), then the epilogue.
template <typename T, int BN>
__global__ void __launch_bounds__(kReduceThreads) conv_splitk_reduce_kernel(const Params p, int bm) {
  constexpr int LDC = BN + 8;
  HGK_DYNAMIC_SMEM(uint4, smem);
  float* const C = reinterpret_cast<float*>(smem);
  RowInfo* const rows = reinterpret_cast<RowInfo*>(C + kPsumRows * LDC);
  const int tid = threadIdx.x;
  const int tile_m = blockIdx.x, tile_n = blockIdx.y;
  const int m0 = tile_m * bm, n0 = tile_n * BN;
  for (int r = tid; r < bm; r += kReduceThreads) rows[r] = row_info(p, m0 + r);
  const int64_t tile_elems = static_cast<int64_t>(bm) * BN;
  const int64_t split_stride = static_cast<int64_t>(p.tiles_m) * p.tiles_n * tile_elems;
  const float* src = p.ws + (static_cast<int64_t>(tile_m) * p.tiles_n + tile_n) * tile_elems;
  for (int slab = 0; slab < bm / kPsumRows; ++slab) {
    for (int e = tid; e < kPsumRows * BN / 4; e += kReduceThreads) {
      const int r = e / (BN / 4), c4 = (e % (BN / 4)) * 4;
      const float* s0 = src + static_cast<int64_t>(slab * kPsumRows + r) * BN + c4;
      __align__(16) float sum[4];
      copy16(sum, s0);
      for (int s = 1; s < p.splits; ++s) {
        __align__(16) float part[4];
        copy16(part, s0 + s * split_stride);
#pragma unroll
        for (int q = 0; q < 4; ++q) sum[q] += part[q];
      }
      copy16(C + r * LDC + c4, sum);
    }
    __syncthreads();
    epilogue_slab<T, BN, kReduceThreads>(p, C, rows + slab * kPsumRows, n0, (m0 + slab * kPsumRows) / kPsumRows);
    __syncthreads();
  }
}

// Large dynamic shared memory (> 48 KB) must be allowed for each kernel (every tile is a kernel of
// its own, all of one function type, so a cache keyed by the type would allow only the first) on
// each device; the call is a host-side attribute write, cheap next to a launch, and legal while a
// CUDA graph is being captured.
template <typename K>
void allow_smem(K kernel, int bytes) {
  if (bytes > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

// The instantiated tiles: (BM, BN, WARPS_M, WARPS_N, STAGES); configs.cuda_conv_config chooses
// among these, read through conv_mma_tiles() (the bindings and the emulator expose it). fp16 / bf16: four shapes, 48 KB of pipeline each. fp32 (3×TF32): one, its operands
// being twice as wide and its fragments (big and small halves) twice as many.
#define HGK_MMA_TILES(X)  \
  X(128, 128, 2, 4, 3)    \
  X(128, 64, 2, 2, 4)     \
  X(64, 128, 2, 2, 4)     \
  X(64, 64, 2, 2, 4)
#define HGK_MMA_TILES_F32(X) X(64, 64, 2, 2, 3)

inline std::vector<ConvTile> instantiated_tiles(DType dtype) {
  std::vector<ConvTile> tiles;
#define HGK_MMA_LIST(BM_, BN_, WM_, WN_, ST_) tiles.push_back(ConvTile{BM_, BN_, WM_, WN_, ST_, 1});
  if (dtype == DType::f32) {
    HGK_MMA_TILES_F32(HGK_MMA_LIST)
  } else {
    HGK_MMA_TILES(HGK_MMA_LIST)
  }
#undef HGK_MMA_LIST
  return tiles;
}

inline bool tile_instantiated(DType dtype, const ConvTile& t) {
#define HGK_MMA_MATCH(BM_, BN_, WM_, WN_, ST_) \
  if (t.bm == BM_ && t.bn == BN_ && t.warps_m == WM_ && t.warps_n == WN_ && t.stages == ST_) return true;
  if (dtype == DType::f32) {
    HGK_MMA_TILES_F32(HGK_MMA_MATCH)
  } else {
    HGK_MMA_TILES(HGK_MMA_MATCH)
  }
#undef HGK_MMA_MATCH
  return false;
}

inline int64_t max_offset(const View4& v, int64_t images) {
  if (images <= 0 || v.c == 0 || v.h == 0 || v.w == 0) return 0;
  return (images - 1) * v.sn + (v.c - 1) * v.sc + (v.h - 1) * v.sh + (v.w - 1) * v.sw;
}

// Unit channel stride, every other stride a whole 16-byte chunk (`chunk` elements), 16-byte base.
inline bool vec_view(const View4& v, int chunk) {
  return v.sc == 1 && v.sn % chunk == 0 && v.sh % chunk == 0 && v.sw % chunk == 0 && aligned16(v.data);
}

// Images per launch so that every element offset fits in int32 (a chunk of the batch per launch).
inline int64_t images_per_launch(const ConvArgs& a, int64_t hw) {
  int64_t n = a.x.n;
  auto limit = [&](const View4& v) {
    const int64_t one = max_offset(v, 1);
    if (one >= INT_MAX) throw std::invalid_argument("conv: one image's tensor exceeds 2^31 elements");
    if (v.sn > 0) n = std::min<int64_t>(n, (INT_MAX - one) / v.sn + 1);
  };
  limit(a.x);
  limit(a.y);
  if (a.residual) limit(*a.residual);
  n = std::min<int64_t>(n, (INT_MAX - 2 * hw) / hw);
  if (n < 1) throw std::invalid_argument("conv: one image's tensor exceeds 2^31 elements");
  return n;
}

template <typename T>
void launch(const ConvArgs& a, cudaStream_t stream) {
  const ConvTile t = a.tile;
  constexpr DType dtype = sizeof(T) == 4 ? DType::f32 : (std::is_same<T, __half>::value ? DType::f16 : DType::bf16);
  if (!tile_instantiated(dtype, t)) throw std::invalid_argument("conv: tile configuration not instantiated");
  const int64_t hw = a.y.h * a.y.w;
  const int64_t k_total = static_cast<int64_t>(a.kernel) * a.kernel * a.x.c;
  if (a.x.h >= 32768 || a.x.w >= 32768 || k_total * a.y.c >= INT_MAX)
    throw std::invalid_argument("conv: input extent or weight too large for the int32 kernel");
  const int k_steps = static_cast<int>(cdiv(k_total, kBK));
  const int per_split = static_cast<int>(cdiv(k_steps, std::max(t.splits, 1)));
  const int splits = static_cast<int>(cdiv(k_steps, per_split));
  const int64_t chunk = images_per_launch(a, hw);
  const int tiles_n = static_cast<int>(cdiv(a.y.c, t.bn));
  const View4 none{};
  const View4& res = a.residual ? *a.residual : none;
  for (int64_t n0 = 0; n0 < a.x.n; n0 += chunk) {
    const int64_t nb = std::min(chunk, a.x.n - n0);
    Params p{};
    p.x = static_cast<const T*>(a.x.data) + n0 * a.x.sn;
    p.weight = a.weight;
    p.bias = a.bias;
    p.y = static_cast<T*>(a.y.data) + n0 * a.y.sn;
    p.res = a.residual ? static_cast<const T*>(res.data) + n0 * res.sn : nullptr;
    // A chunk's images keep their T rows; its slabs start at its first image, so the rows of an
    // image may be attributed differently than in one launch, always within T and adding up the same.
    p.psum = a.psum ? a.psum + n0 * a.psum_tiles * a.y.c : nullptr;
    p.ws = a.workspace;
    p.xs_n = static_cast<int>(a.x.sn), p.xs_c = static_cast<int>(a.x.sc);
    p.xs_h = static_cast<int>(a.x.sh), p.xs_w = static_cast<int>(a.x.sw);
    p.ys_n = static_cast<int>(a.y.sn), p.ys_c = static_cast<int>(a.y.sc);
    p.ys_h = static_cast<int>(a.y.sh), p.ys_w = static_cast<int>(a.y.sw);
    p.rs_n = static_cast<int>(res.sn), p.rs_c = static_cast<int>(res.sc);
    p.rs_h = static_cast<int>(res.sh), p.rs_w = static_cast<int>(res.sw);
    p.h = static_cast<int>(a.x.h), p.w = static_cast<int>(a.x.w), p.c_in = static_cast<int>(a.x.c);
    p.ho = static_cast<int>(a.y.h), p.wo = static_cast<int>(a.y.w), p.c_out = static_cast<int>(a.y.c);
    p.ksize = a.kernel, p.stride = a.stride, p.pad_top = a.pad_top, p.pad_left = a.pad_left;
    p.hw = static_cast<int>(hw);
    p.m_total = static_cast<int>(nb * hw);
    p.psum_tiles = static_cast<int>(a.psum_tiles);
    p.k_total = static_cast<int>(k_total);
    p.k_steps = k_steps, p.steps_per_split = per_split, p.splits = splits;
    p.tiles_m = static_cast<int>(cdiv(p.m_total, t.bm));
    p.tiles_n = tiles_n;
    p.aff_a = a.affine_a, p.aff_c = a.affine_c;
    p.relu = a.relu, p.affine = a.affine, p.residual = a.residual != nullptr;
    constexpr int ch = 16 / static_cast<int>(sizeof(T));
    p.vec_a = a.x.c % ch == 0 &&
              vec_view(View4{const_cast<void*>(p.x), 0, 0, 0, 0, a.x.sn, a.x.sc, a.x.sh, a.x.sw}, ch);
    p.vec_b = a.y.c % ch == 0 && aligned16(a.weight);
    p.vec_y = vec_view(View4{p.y, 0, 0, 0, 0, a.y.sn, a.y.sc, a.y.sh, a.y.sw}, ch);
    p.vec_r = a.residual && vec_view(View4{const_cast<void*>(p.res), 0, 0, 0, 0, res.sn, res.sc, res.sh, res.sw}, ch);
    if (splits > 1) {
      const int64_t need = static_cast<int64_t>(splits) * p.tiles_m * tiles_n * t.bm * t.bn;
      if (a.workspace == nullptr || a.workspace_floats < need)
        throw std::invalid_argument("conv: split-K needs a larger fp32 workspace");
    }
    const dim3 grid(static_cast<unsigned>(p.tiles_m), static_cast<unsigned>(tiles_n), static_cast<unsigned>(splits));
#define HGK_MMA_LAUNCH(BM_, BN_, WM_, WN_, ST_)                                                        \
  if (t.bm == BM_ && t.bn == BN_ && t.warps_m == WM_ && t.warps_n == WN_ && t.stages == ST_) {          \
    using Cfg = Tile<T, BM_, BN_, WM_, WN_, ST_>;                                                        \
    if (p.vec_a && p.vec_b) {                                                                            \
      allow_smem(conv_mma_kernel<T, BM_, BN_, WM_, WN_, ST_, true>, Cfg::kSmemBytes);                    \
      HGK_LAUNCH((conv_mma_kernel<T, BM_, BN_, WM_, WN_, ST_, true>), grid, dim3(Cfg::kThreads),         \
                 Cfg::kSmemBytes, stream, p);                                                            \
    } else {                                                                                             \
      allow_smem(conv_mma_kernel<T, BM_, BN_, WM_, WN_, ST_, false>, Cfg::kSmemBytes);                   \
      HGK_LAUNCH((conv_mma_kernel<T, BM_, BN_, WM_, WN_, ST_, false>), grid, dim3(Cfg::kThreads),        \
                 Cfg::kSmemBytes, stream, p);                                                            \
    }                                                                                                    \
  }
    if constexpr (sizeof(T) == 4) {
      HGK_MMA_TILES_F32(HGK_MMA_LAUNCH)
    } else {
      HGK_MMA_TILES(HGK_MMA_LAUNCH)
    }
#undef HGK_MMA_LAUNCH
    if (splits > 1) {
      const dim3 rgrid(static_cast<unsigned>(p.tiles_m), static_cast<unsigned>(tiles_n));
      const int bytes = kPsumRows * (t.bn + 8) * 4 + t.bm * static_cast<int>(sizeof(RowInfo));
      if constexpr (sizeof(T) == 2) {
        if (t.bn == 128) {
          HGK_LAUNCH((conv_splitk_reduce_kernel<T, 128>), rgrid, dim3(kReduceThreads), bytes, stream, p, t.bm);
          return;
        }
      }
      HGK_LAUNCH((conv_splitk_reduce_kernel<T, 64>), rgrid, dim3(kReduceThreads), bytes, stream, p, t.bm);
    }
  }
}

}  // namespace mma
}  // namespace hgk
