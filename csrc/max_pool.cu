// max_pool.cu — k×k max pool (k 2 or 3, stride 1 or 2), the CUDA twin of
// hgnet_kernels/kernels/triton/max_pool.py (spec.max_pool_reference): v1's stem pool (3×3/2,
// padding 1) and v2's (2×2/1, "SAME" padding bottom / right); writes straight into slot 0 of a
// block buffer. Padded taps are ignored as in PyTorch and Paddle, or, with zero_pad, zeros that
// take part in the max (timm pads with F.pad first). NaN propagates as in PyTorch.
// Each thread takes 8 channels of one output pixel with 16-byte accesses where the views allow
// (else 1), indexing in int32 where every offset fits.
#include "ops.h"

namespace hgk {
namespace {

template <typename T, int K, int V, typename I>
__global__ void __launch_bounds__(256) max_pool_kernel(View4 x, View4 y, int stride, int pad_top, int pad_left,
                                                       bool zero_pad) {
  const I i = global_thread<I>();
  if (i >= static_cast<I>(y.n * y.h * y.w * (y.c / V))) return;
  const ChannelGroup<I> o = channel_group<I, V>(i, y);
  const T* xp = static_cast<const T*>(x.data) + offset_in<I>(x, o.n, o.c, 0, 0);
  float best[V];
#pragma unroll
  for (int e = 0; e < V; ++e) best[e] = -INFINITY;
#pragma unroll
  for (int kh = 0; kh < K; ++kh) {
    const I ih = o.h * stride - pad_top + kh;
    const bool row_inside = ih >= 0 && ih < static_cast<I>(x.h);
    const T* x_row = xp + ih * static_cast<I>(x.sh);
#pragma unroll
    for (int kw = 0; kw < K; ++kw) {
      const I iw = o.w * stride - pad_left + kw;
      const bool inside = row_inside && iw >= 0 && iw < static_cast<I>(x.w);
      if (!inside && !zero_pad) continue;
      float v[V] = {};  // a zero-padded tap
      if (inside) load_channels<V>(x_row + iw * static_cast<I>(x.sw), v);
#pragma unroll
      for (int e = 0; e < V; ++e)
        if (v[e] > best[e] || v[e] != v[e]) best[e] = v[e];  // once NaN, no comparison replaces it
    }
  }
  store_channels<V>(static_cast<T*>(y.data) + offset_in<I>(y, o.n, o.c, o.h, o.w), best);
}

}  // namespace

void max_pool(const View4& x, const View4& y, DType dtype, int kernel, int stride, int pad_top, int pad_left,
              bool zero_pad, cudaStream_t stream) {
  if (y.n * y.h * y.w * y.c == 0) return;
  dispatch_channels({x, y}, {}, {}, [&](auto vec, auto index) {
    constexpr int V = decltype(vec)::value;
    using I = decltype(index);
    const dim3 grid(static_cast<unsigned>(cdiv(y.n * y.h * y.w * (y.c / V), 256)));
    dispatch(dtype, [&](auto zero) {
      using T = decltype(zero);
      if (kernel == 3)
        HGK_LAUNCH((max_pool_kernel<T, 3, V, I>), grid, dim3(256), 0, stream, x, y, stride, pad_top, pad_left,
                   zero_pad);
      else
        HGK_LAUNCH((max_pool_kernel<T, 2, V, I>), grid, dim3(256), 0, stream, x, y, stride, pad_top, pad_left,
                   zero_pad);
    });
  });
}

}  // namespace hgk
