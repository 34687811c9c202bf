// scale_residual.cu — out = y · gate[n,c] (+ identity), the CUDA twin of
// hgnet_kernels/kernels/triton/scale_residual.py; out is slot 0 of the next block's buffer or the stage output.
// Each thread takes 8 channels of one pixel with 16-byte accesses where the views allow (else 1),
// indexing in int32 where every offset fits.
#include "ops.h"

namespace hgk {
namespace {

template <typename T, bool RESIDUAL, int V, typename I>
__global__ void __launch_bounds__(256) scale_residual_kernel(View4 y, const float* __restrict__ gate, View4 identity,
                                                             View4 out) {
  const I i = global_thread<I>();
  if (i >= static_cast<I>(y.n * y.h * y.w * (y.c / V))) return;
  const ChannelGroup<I> o = channel_group<I, V>(i, y);
  float v[V], g[V];
  load_channels<V>(static_cast<const T*>(y.data) + offset_in<I>(y, o.n, o.c, o.h, o.w), v);
  load_channels<V>(gate + o.n * static_cast<I>(y.c) + o.c, g);
#pragma unroll
  for (int e = 0; e < V; ++e) v[e] *= g[e];
  if (RESIDUAL) {
    float r[V];
    load_channels<V>(static_cast<const T*>(identity.data) + offset_in<I>(identity, o.n, o.c, o.h, o.w), r);
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] += r[e];
  }
  store_channels<V>(static_cast<T*>(out.data) + offset_in<I>(out, o.n, o.c, o.h, o.w), v);
}

}  // namespace

void scale_residual(const View4& y, const float* gate, const View4* identity, const View4& out, DType dtype,
                    cudaStream_t stream) {
  if (y.n * y.h * y.w * y.c == 0) return;
  // The gate (N, C) fp32 is read 8 channels at a time too (32 bytes, C % 8 == 0 comes with y's).
  const View4 id = identity != nullptr ? *identity : y;
  dispatch_channels({y, id, out}, {gate}, {}, [&](auto vec, auto index) {
    constexpr int V = decltype(vec)::value;
    using I = decltype(index);
    const dim3 grid(static_cast<unsigned>(cdiv(y.n * y.h * y.w * (y.c / V), 256)));
    dispatch(dtype, [&](auto zero) {
      using T = decltype(zero);
      if (identity != nullptr)
        HGK_LAUNCH((scale_residual_kernel<T, true, V, I>), grid, dim3(256), 0, stream, y, gate, id, out);
      else
        HGK_LAUNCH((scale_residual_kernel<T, false, V, I>), grid, dim3(256), 0, stream, y, gate, id, out);
    });
  });
}

}  // namespace hgk
