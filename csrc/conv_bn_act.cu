// conv_bn_act.cu — fused conv + folded BN + epilogue as an implicit GEMM over NHWC, the CUDA twin of
// hgnet_kernels/kernels/triton/conv_bn_act.py (same math, same arguments, spec.conv_bn_act_reference):
//
//   y[n,co,oh,ow] = r[n,co,oh,ow]
//                   + aff(act(b[co] + Σ_{kh,kw,ci} x[n,ci,oh·s−pt+kh,ow·s−pl+kw] · W[kh,kw,ci,co]))
//
// k ∈ {1, 2, 3}, zero padding pt above / pl left (bottom / right follow from y's size: "SAME" 2×2
// is pt = pl = 0), act = ReLU keeping NaN, aff(v) = a·v + c, r an optional residual; optional ESE
// partial sums psum (N, T, C_out) fp32 whose T rows per image add up to Σ_{pixels of the image} y
// (one writer per entry: deterministic; the layout per path at conv_psum_tiles). x, y and r are
// any-strided views (channel slices of a block buffer included).
// Three kernels, chosen at run time by compute capability (conv_path):
//   * sm_80+: conv_mma.cuh (cp.async ring, ldmatrix, mma.sync; split-K); fp32 as 3×TF32 when asked
//     (tf32x3: opt-in until a GPU run confirms the 1e-5 guarantee);
//   * sm_75, fp16: WMMA tensor cores, 16-byte loads of input and weight tiles where strides allow;
//   * SIMT with fp32 accumulation: fp32 (IEEE) by default, bf16 before sm_80 (fp16 before sm_75); fp32
//     takes float4 loads of the input (contiguous, 4-aligned channels) and of the weight (C_out % 4 == 0).
#include <type_traits>

#include "conv_mma.cuh"
#include "ops.h"

namespace hgk {
namespace {

constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;

// Sums the activated tile's columns in a fixed order and writes one psum row (deterministic).
__device__ __forceinline__ void tile_column_sums(const float* tile, int ld, int rows_valid, int cols, int64_t row0_n,
                                                 int tile_index, int tiles, int64_t c_out, int64_t co0, float* psum) {
  for (int col = threadIdx.x; col < cols; col += blockDim.x) {
    if (co0 + col >= c_out) continue;
    float s = 0.f;
    for (int r = 0; r < rows_valid; ++r) s += tile[r * ld + col];
    psum[(row0_n * tiles + tile_index) * c_out + co0 + col] = s;
  }
}

// The epilogue after bias: ReLU, affine, residual (residual.data null when there is none).
struct ConvEpilogue {
  bool relu, affine;
  float a, c;
  View4 residual;
};

// bias, ReLU (NaN kept, as torch.relu), a·v + c, + residual, stored when (m, co) is inside the
// output; returns the final fp32 value (0 outside) for the partial sums.
template <typename T>
__device__ __forceinline__ float epilogue_store(float acc, const View4& y, const T* bias, int64_t n, int64_t m,
                                                int64_t co, const ConvEpilogue& e) {
  if (m >= y.h * y.w || co >= y.c) return 0.f;
  float v = acc + to_float(bias[co]);
  if (e.relu && v < 0.f) v = 0.f;  // not fmaxf: NaN must propagate as in torch.relu
  if (e.affine) v = v * e.a + e.c;
  const int64_t oh = m / y.w, ow = m % y.w;
  if (e.residual.data != nullptr)
    v += to_float(static_cast<const T*>(e.residual.data)[offset(e.residual, n, co, oh, ow)]);
  static_cast<T*>(y.data)[offset(y, n, co, oh, ow)] = from_float<T>(v);
  return v;
}

// VEC_A / VEC_B (fp32 only): float4 loads of the input / weight tiles, when the launcher has checked
// unit channel stride, multiples of 4 elements and 16-byte aligned bases.
template <typename T, bool VEC_A, bool VEC_B>
__global__ void __launch_bounds__(256) conv_simt_kernel(View4 x, View4 y, const T* __restrict__ w,
                                                        const T* __restrict__ bias, float* psum, int kernel,
                                                        int stride, int pad_top, int pad_left, ConvEpilogue epi,
                                                        int tiles) {
  __shared__ float As[kSimtBK][kSimtBM + 4];
  __shared__ float Bs[kSimtBK][kSimtBN];
  __shared__ float Cs[kSimtBM][kSimtBN + 1];
  const int tid = threadIdx.x;
  const int64_t n = blockIdx.x / tiles;
  const int tile = static_cast<int>(blockIdx.x % tiles);
  const int64_t hw_out = y.h * y.w;
  const int64_t m0 = static_cast<int64_t>(tile) * kSimtBM;
  const int64_t co0 = static_cast<int64_t>(blockIdx.y) * kSimtBN;
  const int64_t c_in = x.c, c_out = y.c;
  const int tx = tid % 16, ty = tid / 16;
  float acc[4][4] = {};

  // The input tile rows this thread loads (one float4 of 4 channels, or one channel of 4 rows
  // 16 apart) are the same in every K step: their pixel divisions happen once, here, and each
  // tap only moves their receptive-field corner.
  constexpr int kRows = VEC_A ? 1 : kSimtBM * kSimtBK / kSimtThreads;
  constexpr int kRowStep = kSimtThreads / kSimtBK;
  const int a_row = VEC_A ? tid / 4 : tid / kSimtBK, a_k = VEC_A ? (tid % 4) * 4 : tid % kSimtBK;
  int64_t corner_h[kRows], corner_w[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t m = m0 + a_row + r * kRowStep;
    corner_h[r] = m < hw_out ? (m / y.w) * stride - pad_top : -(int64_t{1} << 40);  // far outside: never loaded
    corner_w[r] = m < hw_out ? (m % y.w) * stride - pad_left : 0;
  }
  const T* x_img = static_cast<const T*>(x.data) + n * x.sn;
  // The weight tile: one float4 of 4 output channels of one K row, or 4 rows 4 apart of one column.
  const int b_k = VEC_B ? tid / (kSimtBN / 4) : tid / kSimtBN, b_col = VEC_B ? (tid % (kSimtBN / 4)) * 4 : tid % kSimtBN;

  for (int kh = 0; kh < kernel; ++kh) {
    for (int kw = 0; kw < kernel; ++kw) {
      const T* w_tap = w + static_cast<int64_t>(kh * kernel + kw) * c_in * c_out;
      const T* a_src[kRows];  // each row's input pixel for this tap, or null in the padding
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int64_t ih = corner_h[r] + kh, iw = corner_w[r] + kw;
        a_src[r] = ih >= 0 && ih < x.h && iw >= 0 && iw < x.w ? x_img + ih * x.sh + iw * x.sw : nullptr;
      }
      for (int64_t c0 = 0; c0 < c_in; c0 += kSimtBK) {
        const int64_t c = c0 + a_k;
        if constexpr (VEC_A) {
          float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
          if (a_src[0] != nullptr && c < c_in) copy16(&v, a_src[0] + c);
          As[a_k + 0][a_row] = v.x;
          As[a_k + 1][a_row] = v.y;
          As[a_k + 2][a_row] = v.z;
          As[a_k + 3][a_row] = v.w;
        } else {
#pragma unroll
          for (int r = 0; r < kRows; ++r)
            As[a_k][a_row + r * kRowStep] = a_src[r] != nullptr && c < c_in ? to_float(a_src[r][c * x.sc]) : 0.f;
        }
        if constexpr (VEC_B) {
          const int64_t ck = c0 + b_k, co = co0 + b_col;
          float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
          if (ck < c_in && co < c_out) copy16(&v, w_tap + ck * c_out + co);
          Bs[b_k][b_col + 0] = v.x;
          Bs[b_k][b_col + 1] = v.y;
          Bs[b_k][b_col + 2] = v.z;
          Bs[b_k][b_col + 3] = v.w;
        } else {
#pragma unroll
          for (int j = 0; j < kSimtBK * kSimtBN / kSimtThreads; ++j) {
            const int k = b_k + j * (kSimtThreads / kSimtBN);
            const int64_t ck = c0 + k, co = co0 + b_col;
            Bs[k][b_col] = (ck < c_in && co < c_out) ? to_float(w_tap[ck * c_out + co]) : 0.f;
          }
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kSimtBK; ++k) {
          float a[4], b[4];
#pragma unroll
          for (int i = 0; i < 4; ++i) a[i] = As[k][ty * 4 + i];
#pragma unroll
          for (int j = 0; j < 4; ++j) b[j] = Bs[k][tx * 4 + j];
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
      }
    }
  }
  // Unrolled so that acc stays in registers (a loop indexing it would put it in local memory).
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      Cs[ty * 4 + i][tx * 4 + j] = epilogue_store(acc[i][j], y, bias, n, m0 + ty * 4 + i, co0 + tx * 4 + j, epi);
  if (psum != nullptr) {
    __syncthreads();
    const int rows_valid = static_cast<int>(hw_out - m0 < kSimtBM ? hw_out - m0 : kSimtBM);
    tile_column_sums(&Cs[0][0], kSimtBN + 1, rows_valid, kSimtBN, n, tile, tiles, c_out, co0, psum);
  }
}

constexpr int kMmaBM = 64, kMmaBN = 64, kMmaBK = 32, kMmaThreads = 128;

// VEC_A / VEC_B: 16-byte (8-element) loads of the input / weight tiles, when the launcher has
// checked unit channel stride, multiples of 8 elements and 16-byte aligned bases.
template <typename T, bool VEC_A, bool VEC_B>
__global__ void __launch_bounds__(128) conv_wmma_kernel(View4 x, View4 y, const T* __restrict__ w,
                                                        const T* __restrict__ bias, float* psum, int kernel,
                                                        int stride, int pad_top, int pad_left, ConvEpilogue epi,
                                                        int tiles) {
#if defined(HGK_EMULATE) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
  constexpr bool kSupported = true;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  constexpr bool kSupported = std::is_same<T, __half>::value;  // bf16 WMMA needs sm_80
#else
  constexpr bool kSupported = false;  // host pass, or an arch without tensor cores
#endif
  if constexpr (kSupported) {
  using namespace nvcuda;
  __shared__ __align__(32) T As[kMmaBM][kMmaBK + 8];
  __shared__ __align__(32) T Bs[kMmaBK][kMmaBN + 8];
  __shared__ __align__(32) float Cs[kMmaBM][kMmaBN + 4];
  const int tid = threadIdx.x, warp = tid / 32;
  const int warp_m = warp / 2, warp_n = warp % 2;  // 2×2 warps, each a 32×32 sub-tile
  const int64_t n = blockIdx.x / tiles;
  const int tile = static_cast<int>(blockIdx.x % tiles);
  const int64_t hw_out = y.h * y.w;
  const int64_t m0 = static_cast<int64_t>(tile) * kMmaBM;
  const int64_t co0 = static_cast<int64_t>(blockIdx.y) * kMmaBN;
  const int64_t c_in = x.c, c_out = y.c;
  const T* xp = static_cast<const T*>(x.data);
  const T zero = from_float<T>(0.f);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  for (int kh = 0; kh < kernel; ++kh) {
    for (int kw = 0; kw < kernel; ++kw) {
      const T* w_tap = w + static_cast<int64_t>(kh * kernel + kw) * c_in * c_out;
      for (int64_t c0 = 0; c0 < c_in; c0 += kMmaBK) {
        if constexpr (VEC_A) {
          for (int e = tid; e < kMmaBM * kMmaBK / 8; e += kMmaThreads) {
            const int row = e / (kMmaBK / 8), k = (e % (kMmaBK / 8)) * 8;
            const int64_t m = m0 + row, c = c0 + k;
            bool loaded = false;
            if (m < hw_out && c < c_in) {
              const int64_t ih = (m / y.w) * stride - pad_top + kh, iw = (m % y.w) * stride - pad_left + kw;
              if (ih >= 0 && ih < x.h && iw >= 0 && iw < x.w) {
                copy16(&As[row][k], xp + offset(x, n, c, ih, iw));
                loaded = true;
              }
            }
            if (!loaded) zero16(&As[row][k]);
          }
        } else {
          for (int e = tid; e < kMmaBM * kMmaBK; e += kMmaThreads) {
            const int row = e / kMmaBK, k = e % kMmaBK;
            const int64_t m = m0 + row, c = c0 + k;
            T v = zero;
            if (m < hw_out && c < c_in) {
              const int64_t ih = (m / y.w) * stride - pad_top + kh, iw = (m % y.w) * stride - pad_left + kw;
              if (ih >= 0 && ih < x.h && iw >= 0 && iw < x.w) v = xp[offset(x, n, c, ih, iw)];
            }
            As[row][k] = v;
          }
        }
        if constexpr (VEC_B) {
          for (int e = tid; e < kMmaBK * kMmaBN / 8; e += kMmaThreads) {
            const int k = e / (kMmaBN / 8), col = (e % (kMmaBN / 8)) * 8;
            const int64_t c = c0 + k, co = co0 + col;
            if (c < c_in && co < c_out)
              copy16(&Bs[k][col], w_tap + c * c_out + co);
            else
              zero16(&Bs[k][col]);
          }
        } else {
          for (int e = tid; e < kMmaBK * kMmaBN; e += kMmaThreads) {
            const int k = e / kMmaBN, col = e % kMmaBN;
            const int64_t c = c0 + k, co = co0 + col;
            Bs[k][col] = (c < c_in && co < c_out) ? w_tap[c * c_out + co] : zero;
          }
        }
        __syncthreads();
        for (int kk = 0; kk < kMmaBK; kk += 16) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[2];
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b[2];
          for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &As[warp_m * 32 + i * 16][kk], kMmaBK + 8);
          for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &Bs[kk][warp_n * 32 + j * 16], kMmaBN + 8);
          for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();
      }
    }
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&Cs[warp_m * 32 + i * 16][warp_n * 32 + j * 16], acc[i][j], kMmaBN + 4,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kMmaBM * kMmaBN; e += kMmaThreads) {
    const int row = e / kMmaBN, col = e % kMmaBN;
    Cs[row][col] = epilogue_store(Cs[row][col], y, bias, n, m0 + row, co0 + col, epi);
  }
  if (psum != nullptr) {
    __syncthreads();
    const int rows_valid = static_cast<int>(hw_out - m0 < kMmaBM ? hw_out - m0 : kMmaBM);
    tile_column_sums(&Cs[0][0], kMmaBN + 4, rows_valid, kMmaBN, n, tile, tiles, c_out, co0, psum);
  }
  }
}

}  // namespace

int conv_path(DType dtype, int arch, bool tf32x3) {
  if (arch >= 80 && (dtype != DType::f32 || tf32x3)) return 2;
  if (dtype == DType::f16 && arch >= 75) return 1;
  return 0;
}

int64_t conv_psum_tiles(const ConvArgs& a) {
  const int64_t hw = a.y.h * a.y.w;
  if (conv_path(a.dtype, a.arch, a.tf32x3) != 2) return cdiv(hw, kSimtBM);
  if (a.x.n == 0) return std::max<int64_t>(1, cdiv(hw, mma::kPsumRows));
  // Image i starts at row i·hw; the offsets i·hw mod 64 repeat within 64 images.
  int64_t most = 0;
  for (int64_t i = 0; hw > 0 && i < std::min<int64_t>(a.x.n, mma::kPsumRows); ++i)
    most = std::max(most, (i * hw % mma::kPsumRows + hw - 1) / mma::kPsumRows + 1);
  return most;
}

bool conv_tile_supported(DType dtype, const ConvTile& tile) {
  return tile.splits >= 1 && tile.splits <= 64 && mma::tile_instantiated(dtype, tile);
}

std::vector<ConvTile> conv_mma_tiles(DType dtype) { return mma::instantiated_tiles(dtype); }

int conv_mma_k_step() { return mma::kBK; }

int64_t conv_workspace_floats(const ConvArgs& a) {
  if (conv_path(a.dtype, a.arch, a.tf32x3) != 2 || a.tile.splits <= 1) return 0;
  const int64_t k_steps = cdiv(static_cast<int64_t>(a.kernel) * a.kernel * a.x.c, mma::kBK);
  const int64_t per_split = cdiv(k_steps, a.tile.splits);
  const int64_t splits = cdiv(k_steps, per_split);
  if (splits <= 1) return 0;
  return splits * cdiv(a.x.n * a.y.h * a.y.w, a.tile.bm) * cdiv(a.y.c, a.tile.bn) * a.tile.bm * a.tile.bn;
}

void conv_bn_act(const ConvArgs& a, cudaStream_t stream) {
  const int64_t hw_out = a.y.h * a.y.w;
  if (a.x.n == 0 || hw_out == 0 || a.y.c == 0) return;
  const int path = conv_path(a.dtype, a.arch, a.tf32x3);
  if (path == 2) {
    if (a.dtype == DType::f16)
      conv_mma_f16(a, stream);
    else if (a.dtype == DType::bf16)
      conv_mma_bf16(a, stream);
    else
      conv_mma_f32(a, stream);
    return;
  }
  const int tiles = static_cast<int>(cdiv(hw_out, 64));
  const dim3 grid(static_cast<unsigned>(a.x.n * tiles), static_cast<unsigned>(cdiv(a.y.c, 64)));
  const ConvEpilogue epi{a.relu, a.affine, a.affine_a, a.affine_c, a.residual ? *a.residual : View4{}};
  if (path == 1) {
    const __half* w = static_cast<const __half*>(a.weight);
    const __half* b = static_cast<const __half*>(a.bias);
    // 16-byte loads: 8 halves with unit channel stride, every stride and C a multiple of 8.
    const bool vec_a = a.x.sc == 1 && a.x.c % 8 == 0 && a.x.sn % 8 == 0 && a.x.sh % 8 == 0 && a.x.sw % 8 == 0 &&
                       aligned16(a.x.data);
    const bool vec_b = a.y.c % 8 == 0 && aligned16(a.weight);
    const dim3 block(kMmaThreads);
#define HGK_WMMA(VA, VB)                                                                                      \
  HGK_LAUNCH((conv_wmma_kernel<__half, VA, VB>), grid, block, 0, stream, a.x, a.y, w, b, a.psum, a.kernel, \
             a.stride, a.pad_top, a.pad_left, epi, tiles)
    if (vec_a && vec_b)
      HGK_WMMA(true, true);
    else if (vec_a)
      HGK_WMMA(true, false);
    else if (vec_b)
      HGK_WMMA(false, true);
    else
      HGK_WMMA(false, false);
#undef HGK_WMMA
    return;
  }
  dispatch(a.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* w = static_cast<const T*>(a.weight);
    const T* b = static_cast<const T*>(a.bias);
#define HGK_SIMT(VA, VB)                                                                                          \
  HGK_LAUNCH((conv_simt_kernel<T, VA, VB>), grid, dim3(kSimtThreads), 0, stream, a.x, a.y, w, b, a.psum, a.kernel, \
             a.stride, a.pad_top, a.pad_left, epi, tiles)
    if constexpr (std::is_same<T, float>::value) {
      // float4 loads: the input with unit channel stride and C_in, every other stride and the base
      // multiples of 4 elements (16 bytes); the weight (k, k, C_in, C_out) with C_out a multiple of 4
      // and an aligned base.
      const bool vec_a = a.x.sc == 1 && a.x.c % 4 == 0 && a.x.sn % 4 == 0 && a.x.sh % 4 == 0 && a.x.sw % 4 == 0 &&
                         aligned16(a.x.data);
      const bool vec_b = a.y.c % 4 == 0 && aligned16(a.weight);
      if (vec_a && vec_b)
        HGK_SIMT(true, true);
      else if (vec_a)
        HGK_SIMT(true, false);
      else if (vec_b)
        HGK_SIMT(false, true);
      else
        HGK_SIMT(false, false);
    } else {
      HGK_SIMT(false, false);  // bf16 / fp16 before the tensor-core paths
    }
#undef HGK_SIMT
  });
}

}  // namespace hgk
