// cuda_emu.h — the CUDA execution model on the CPU, so the *same* kernel source compiled by g++
// can run (slowly, exactly) where no GPU exists. Included by cuda_compat.h when HGK_EMULATE is set.
//
// Supported, and nothing else (a kernel that needs more must extend this file):
//   * __global__ / __device__ / __host__ / __forceinline__ / __restrict__ qualifiers;
//   * dim3, blockIdx, threadIdx, blockDim, gridDim;
//   * __shared__ (static per-block arrays: mapped to function statics — blocks run one at a time),
//     dynamic shared memory through HGK_DYNAMIC_SMEM(type, name);
//   * __syncthreads(): a real barrier across the block's emulated threads. Each CUDA thread is a
//     fiber (ucontext) with its own stack; fibers run until they reach the barrier or finish, so
//     every interleaving a barrier allows on a GPU is one the emulator can produce;
//   * __half / __nv_bfloat16 with round-to-nearest-even conversions (__float2half, __half2float,
//     __float2bfloat16, __bfloat162float);
//   * float4 / uint4 (make_float4, make_uint4); 16-byte vector loads go through hgk::copy16, which
//     is a memcpy here;
//   * nvcuda::wmma fragments (matrix_a/matrix_b/accumulator, 16×16×16, row/col major, half and
//     bf16 inputs, float accumulators): fill_fragment, load_matrix_sync, mma_sync,
//     store_matrix_sync. Every lane holds the whole tile (a GPU spreads it over the warp); the
//     results written to memory are identical, and kernels may not index fragment elements;
//   * cudaStream_t (ignored), HGK_LAUNCH (runs the grid's blocks in order), cudaGetLastError.
// Not supported: atomics, warp shuffles/votes, cooperative groups, async copies, textures.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define HGK_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(hgk_emu::dynamic_smem())

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef void* cudaStream_t;
typedef int cudaError_t;
static const cudaError_t cudaSuccess = 0;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error (emulated)"; }

namespace hgk_emu {
inline dim3& block_idx() { static dim3 v; return v; }
inline dim3& thread_idx() { static dim3 v; return v; }
inline dim3& block_dim() { static dim3 v; return v; }
inline dim3& grid_dim() { static dim3 v; return v; }
inline std::vector<unsigned char>& dynamic_smem_storage() { static std::vector<unsigned char> v; return v; }
inline void* dynamic_smem() { return dynamic_smem_storage().data(); }
}  // namespace hgk_emu

#define blockIdx (hgk_emu::block_idx())
#define threadIdx (hgk_emu::thread_idx())
#define blockDim (hgk_emu::block_dim())
#define gridDim (hgk_emu::grid_dim())

namespace hgk_emu {

// One block's threads as fibers. A fiber runs until it calls __syncthreads() (it then yields to
// the scheduler) or returns. When every live fiber waits at the barrier, all are released.
struct BlockScheduler {
  static constexpr size_t kStackBytes = 256 * 1024;
  ucontext_t scheduler_ctx;
  std::vector<ucontext_t> ctx;
  std::vector<std::vector<unsigned char>> stacks;
  std::vector<int> state;  // 0 runnable, 1 at barrier, 2 done
  std::vector<dim3> idx;
  int current = -1;

  static BlockScheduler& instance() { static BlockScheduler s; return s; }

  void barrier() {
    state[current] = 1;
    swapcontext(&ctx[current], &scheduler_ctx);
  }

  template <typename Fn>
  void run_block(unsigned nthreads, Fn* fn) {
    if (stacks.size() < nthreads) stacks.resize(nthreads, std::vector<unsigned char>(kStackBytes));
    ctx.assign(nthreads, ucontext_t{});
    state.assign(nthreads, 0);
    idx.resize(nthreads);
    const dim3 bd = block_dim();
    for (unsigned t = 0; t < nthreads; ++t) {
      idx[t] = dim3(t % bd.x, (t / bd.x) % bd.y, t / (bd.x * bd.y));
      getcontext(&ctx[t]);
      ctx[t].uc_stack.ss_sp = stacks[t].data();
      ctx[t].uc_stack.ss_size = kStackBytes;
      ctx[t].uc_link = &scheduler_ctx;
      // makecontext passes ints: split the pointer into two halves.
      uintptr_t p = reinterpret_cast<uintptr_t>(fn);
      makecontext(&ctx[t], reinterpret_cast<void (*)()>(&trampoline<Fn>), 2,
                  static_cast<unsigned>(p & 0xffffffffu), static_cast<unsigned>(p >> 32));
    }
    for (;;) {
      bool any_runnable = false, any_waiting = false;
      for (unsigned t = 0; t < nthreads; ++t) {
        if (state[t] != 0) continue;
        any_runnable = true;
        current = static_cast<int>(t);
        thread_idx() = idx[t];
        swapcontext(&scheduler_ctx, &ctx[t]);
        // Back here when fiber t reached the barrier (state 1) or returned (still 0: mark done).
        if (state[t] == 0) state[t] = 2;
      }
      for (unsigned t = 0; t < nthreads; ++t) any_waiting |= state[t] == 1;
      if (!any_waiting) break;
      for (unsigned t = 0; t < nthreads; ++t) {
        if (state[t] == 2) {
          throw std::runtime_error("emulated __syncthreads(): a thread returned while others wait "
                                   "at a barrier (divergent barrier, undefined on a GPU)");
        }
        state[t] = 0;
      }
      (void)any_runnable;
    }
    current = -1;
  }

  template <typename Fn>
  static void trampoline(unsigned lo, unsigned hi) {
    Fn* fn = reinterpret_cast<Fn*>(static_cast<uintptr_t>(lo) | (static_cast<uintptr_t>(hi) << 32));
    (*fn)();
  }
};

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, size_t smem_bytes, Args... args) {
  grid_dim() = grid;
  block_dim() = block;
  dynamic_smem_storage().assign(smem_bytes + 16, 0);
  auto body = [&]() { kernel(args...); };
  const unsigned nthreads = block.x * block.y * block.z;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        block_idx() = dim3(x, y, z);
        BlockScheduler::instance().run_block(nthreads, &body);
      }
}

}  // namespace hgk_emu

inline void __syncthreads() { hgk_emu::BlockScheduler::instance().barrier(); }

#define HGK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  hgk_emu::launch(kernel, grid, block, smem, __VA_ARGS__)

// ---- 16-bit floating point types, round to nearest even -------------------------------------
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

inline uint32_t hgk_float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float hgk_bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u = hgk_float_bits(f);
  __nv_bfloat16 h;
  if (std::isnan(f)) { h.bits = static_cast<uint16_t>((u >> 16) | 0x40); return h; }
  u += 0x7fffu + ((u >> 16) & 1u);
  h.bits = static_cast<uint16_t>(u >> 16);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 h) { return hgk_bits_float(static_cast<uint32_t>(h.bits) << 16); }

inline __half __float2half(float f) {
  // IEEE binary16 with round to nearest even, subnormals, overflow to inf, NaN kept.
  uint32_t u = hgk_float_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t exp = (u >> 23) & 0xffu;
  uint32_t man = u & 0x7fffffu;
  __half h;
  if (exp == 0xffu) { h.bits = static_cast<uint16_t>(sign | 0x7c00u | (man ? 0x200u : 0)); return h; }
  int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) { h.bits = static_cast<uint16_t>(sign | 0x7c00u); return h; }
  if (e <= 0) {
    if (e < -10) { h.bits = static_cast<uint16_t>(sign); return h; }
    man |= 0x800000u;
    int shift = 14 - e;
    uint32_t half_man = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_man & 1u))) ++half_man;
    h.bits = static_cast<uint16_t>(sign | half_man);
    return h;
  }
  uint32_t half_man = man >> 13;
  uint32_t rem = man & 0x1fffu;
  uint32_t bits = sign | (static_cast<uint32_t>(e) << 10) | half_man;
  if (rem > 0x1000u || (rem == 0x1000u && (half_man & 1u))) ++bits;  // may carry into exponent: correct
  h.bits = static_cast<uint16_t>(bits);
  return h;
}
inline float __half2float(__half h) {
  uint32_t sign = (h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t man = h.bits & 0x3ffu;
  if (exp == 0) {
    float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return hgk_bits_float(sign | 0x7f800000u | (man << 13));
  return hgk_bits_float(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

// ---- WMMA ---------------------------------------------------------------------------------------
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
  static constexpr int num_elements = rows * cols;
  float x[rows * cols];  // the whole tile, row-major, in fp32 (inputs are exact in fp32)
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  using Frag = fragment<Use, M, N, K, T, Layout>;
  const bool col = std::is_same<Layout, col_major>::value;
  for (int r = 0; r < Frag::rows; ++r)
    for (int c = 0; c < Frag::cols; ++c) f.x[r * Frag::cols + c] = to_float(col ? p[c * ldm + r] : p[r * ldm + c]);
}

template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const float* p, unsigned ldm, layout_t layout) {
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

template <int M, int N, int K, typename Ti, typename La, typename Lb, typename Tc>
inline void mma_sync(fragment<accumulator, M, N, K, Tc, void>& d, const fragment<matrix_a, M, N, K, Ti, La>& a,
                     const fragment<matrix_b, M, N, K, Ti, Lb>& b, const fragment<accumulator, M, N, K, Tc, void>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc += a.x[i * K + k] * b.x[k * N + j];
      out[i * N + j] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
}

template <int M, int N, int K, typename T>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t layout) {
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}
}  // namespace wmma
}  // namespace nvcuda
