// cuda_compat.h — the one include every kernel file starts with. Under nvcc it is plain CUDA;
// with -DHGK_EMULATE (g++) it pulls in emulator/cuda_emu.h, which provides the same names on the
// CPU. Kernels launch only through HGK_LAUNCH, so nvcc and the emulator share each call site.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef HGK_EMULATE
#include "emulator/cuda_emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#define HGK_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#define HGK_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif

namespace hgk {

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

// A 4-D (N, C, H, W) view with element strides: NCHW, channels_last or a channel slice alike.
struct View4 {
  void* data;
  int64_t n, c, h, w;
  int64_t sn, sc, sh, sw;
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

__device__ __forceinline__ int64_t offset(const View4& v, int64_t n, int64_t c, int64_t h, int64_t w) {
  return n * v.sn + c * v.sc + h * v.sh + w * v.sw;
}

// Element i of an (N, C, H, W) tensor enumerated channels fastest (coalesced in NHWC).
struct NhwcIndex {
  int64_t n, c, h, w;
};
__device__ __forceinline__ NhwcIndex nhwc_index(int64_t i, const View4& v) {
  const int64_t p = i / v.c;
  return NhwcIndex{p / (v.w * v.h), i % v.c, (p / v.w) % v.h, p % v.w};
}

// 16-byte copies for vectorised loads; both addresses must be 16-byte aligned (the launchers check).
__device__ __forceinline__ void copy16(void* dst, const void* src) {
#ifdef HGK_EMULATE
  std::memcpy(dst, src, 16);
#else
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#endif
}
__device__ __forceinline__ void zero16(void* dst) {
#ifdef HGK_EMULATE
  std::memset(dst, 0, 16);
#else
  *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
#endif
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Calls f.template operator()<T>() with T the C++ type of dtype.
template <typename F>
void dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(__half{}); break;
    case DType::bf16: f(__nv_bfloat16{}); break;
  }
}

}  // namespace hgk
