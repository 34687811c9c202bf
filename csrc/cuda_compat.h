// cuda_compat.h — the one include every kernel file starts with. Under nvcc it is plain CUDA;
// with -DHGK_EMULATE (g++) it pulls in emulator/cuda_emu.h, which provides the same names on the
// CPU. Kernels launch only through HGK_LAUNCH, so nvcc and the emulator share each call site.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

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

// ---- the memory-bound kernels (depthwise, max pool, scale + residual) -------------------------------
// Each thread handles V consecutive channels of one pixel: V = 8 (16-byte accesses) where every
// view allows it, else 1; and indexes in I = int32_t where every offset fits, else int64_t.
constexpr int kVecChannels = 8;

// Whether v can be read or written 8 channels at a time with 16-byte accesses: unit channel stride,
// C and the other strides multiples of 8 elements and a 16-byte aligned base, so every 8-channel
// group (16 or 32 bytes) starts 16-byte aligned.
inline bool channels_vectorizable(const View4& v) {
  return v.sc == 1 && v.c % kVecChannels == 0 && v.sn % kVecChannels == 0 && v.sh % kVecChannels == 0 &&
         v.sw % kVecChannels == 0 && aligned16(v.data);
}

// One past the largest element offset v reaches (torch strides are never negative), 0 when empty.
inline int64_t view_extent(const View4& v) {
  if (v.n == 0 || v.c == 0 || v.h == 0 || v.w == 0) return 0;
  return 1 + (v.n - 1) * v.sn + (v.c - 1) * v.sc + (v.h - 1) * v.sh + (v.w - 1) * v.sw;
}

// Element counts and offsets up to this index in int32: a launch's thread index (block start + up
// to 1023) must not overflow either. The emulator can lower it, so the tests run the int64 kernels.
inline int64_t int32_index_limit() {
#ifdef HGK_EMULATE
  if (hgk_emu::int32_index_limit_override() >= 0) return hgk_emu::int32_index_limit_override();
#endif
  return INT32_MAX - 1024;
}

// Calls f(std::integral_constant<int, V>{}, I{}) with V = 8 when every view is
// channels_vectorizable and every pointer of `aligned` 16-byte aligned, else 1, and I = int32_t
// when every view's extent and every count of `counts` fit int32_index_limit(), else int64_t.
template <typename F>
void dispatch_channels(std::initializer_list<View4> views, std::initializer_list<const void*> aligned,
                       std::initializer_list<int64_t> counts, F&& f) {
  bool vec = true;
  int64_t largest = 0;
  for (const View4& v : views) {
    vec = vec && channels_vectorizable(v);
    largest = std::max(largest, std::max(view_extent(v), v.n * v.c * v.h * v.w));
  }
  for (const void* p : aligned) vec = vec && aligned16(p);
  for (int64_t c : counts) largest = std::max(largest, c);
  const bool narrow = largest <= int32_index_limit();
  if (vec && narrow) f(std::integral_constant<int, kVecChannels>{}, int32_t{});
  else if (vec) f(std::integral_constant<int, kVecChannels>{}, int64_t{});
  else if (narrow) f(std::integral_constant<int, 1>{}, int32_t{});
  else f(std::integral_constant<int, 1>{}, int64_t{});
}

// The channel group a thread of a memory-bound kernel handles: thread i of N·H·W·(C / V) threads,
// V channels each, decomposed once (the only divisions of the thread, in I).
template <typename I>
struct ChannelGroup {
  I n, c, h, w;
};
template <typename I, int V>
__device__ __forceinline__ ChannelGroup<I> channel_group(I i, const View4& v) {
  const I groups = static_cast<I>(v.c) / V, width = static_cast<I>(v.w), height = static_cast<I>(v.h);
  const I pixel = i / groups, row = pixel / width, n = row / height;
  return ChannelGroup<I>{n, (i - pixel * groups) * V, row - n * height, pixel - row * width};
}

#if defined(__CUDACC__) || defined(HGK_EMULATE)  // not in bindings.cpp's host-only compile
// The global thread index of a 1-D launch, in I.
template <typename I>
__device__ __forceinline__ I global_thread() {
  return static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
}
#endif

template <typename I>
__device__ __forceinline__ I offset_in(const View4& v, I n, I c, I h, I w) {
  return n * static_cast<I>(v.sn) + c * static_cast<I>(v.sc) + h * static_cast<I>(v.sh) + w * static_cast<I>(v.sw);
}

// V consecutive elements at p as floats; V = 8 reads them with 16-byte loads (p 16-byte aligned).
template <int V, typename T>
__device__ __forceinline__ void load_channels(const T* p, float (&out)[V]) {
  if constexpr (V == 1) {
    out[0] = to_float(*p);
  } else {
    static_assert(V * sizeof(T) % 16 == 0, "vector groups are whole 16-byte words");
    alignas(16) T raw[V];
#pragma unroll
    for (int b = 0; b < static_cast<int>(V * sizeof(T) / 16); ++b)
      copy16(reinterpret_cast<char*>(raw) + 16 * b, reinterpret_cast<const char*>(p) + 16 * b);
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = to_float(raw[e]);
  }
}

// Rounds V floats to T and writes them at p; V = 8 with 16-byte stores (p 16-byte aligned).
template <int V, typename T>
__device__ __forceinline__ void store_channels(T* p, const float (&in)[V]) {
  if constexpr (V == 1) {
    *p = from_float<T>(in[0]);
  } else {
    alignas(16) T raw[V];
#pragma unroll
    for (int e = 0; e < V; ++e) raw[e] = from_float<T>(in[e]);
#pragma unroll
    for (int b = 0; b < static_cast<int>(V * sizeof(T) / 16); ++b)
      copy16(reinterpret_cast<char*>(p) + 16 * b, reinterpret_cast<const char*>(raw) + 16 * b);
  }
}

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
