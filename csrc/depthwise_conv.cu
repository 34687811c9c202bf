// depthwise_conv.cu — depthwise k×k conv (k 3 or 5) + folded BN, then optional ReLU and affine: the
// CUDA twin of hgnet_kernels/kernels/triton/depthwise_conv.py (spec.depthwise_conv_reference):
//   y[n,c,oh,ow] = aff(act(b[c] + Σ_{kh,kw} x[n,c,oh·sh−pt+kh,ow·sw−pl+kw] · W[kh,kw,c]))
// v1's LDS downsample (3×3/2, no activation; PP-OCR text recognition's at (sh, sw) = (2, 1) or
// (1, 2)) and v2's LightConv depthwise (3×3 or 5×5, stride 1, ReLU and the LAB affine). Each thread computes 8 channels of one output pixel with 16-byte loads
// and stores where the views allow (else 1 channel), channels fastest (coalesced in NHWC), indexing
// in int32 where every offset fits; fp32 accumulation in the same order either way.
#include "ops.h"

namespace hgk {
namespace {

template <typename T, int K, int V, typename I>
__global__ void __launch_bounds__(256) depthwise_kernel(View4 x, View4 y, const T* __restrict__ w,
                                                        const T* __restrict__ bias, int stride_h, int stride_w,
                                                        int pad_top, int pad_left, Epilogue epi) {
  const I i = global_thread<I>();
  if (i >= static_cast<I>(y.n * y.h * y.w * (y.c / V))) return;
  const ChannelGroup<I> o = channel_group<I, V>(i, y);
  const T* xp = static_cast<const T*>(x.data) + offset_in<I>(x, o.n, o.c, 0, 0);
  const I c_total = static_cast<I>(y.c);
  float acc[V];
  load_channels<V>(bias + o.c, acc);
#pragma unroll
  for (int kh = 0; kh < K; ++kh) {
    const I ih = o.h * stride_h - pad_top + kh;
    if (ih < 0 || ih >= static_cast<I>(x.h)) continue;
#pragma unroll
    for (int kw = 0; kw < K; ++kw) {
      const I iw = o.w * stride_w - pad_left + kw;
      if (iw < 0 || iw >= static_cast<I>(x.w)) continue;
      float xv[V], wv[V];
      load_channels<V>(xp + ih * static_cast<I>(x.sh) + iw * static_cast<I>(x.sw), xv);
      load_channels<V>(w + (kh * K + kw) * c_total + o.c, wv);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] += xv[e] * wv[e];
    }
  }
#pragma unroll
  for (int e = 0; e < V; ++e) {
    if (epi.relu && acc[e] < 0.f) acc[e] = 0.f;  // not fmaxf: NaN must propagate as in torch.relu
    if (epi.affine) acc[e] = acc[e] * epi.a + epi.c;
  }
  store_channels<V>(static_cast<T*>(y.data) + offset_in<I>(y, o.n, o.c, o.h, o.w), acc);
}

}  // namespace

void depthwise_conv(const View4& x, const View4& y, const void* weight, const void* bias, DType dtype, int kernel,
                    int stride_h, int stride_w, int pad_top, int pad_left, const Epilogue& epilogue,
                    cudaStream_t stream) {
  if (y.n * y.h * y.w * y.c == 0) return;
  // The weight (k, k, C) and bias (C,) are read 8 channels at a time too: C % 8 == 0 comes with y's.
  dispatch_channels({x, y}, {weight, bias}, {int64_t{kernel} * kernel * y.c}, [&](auto vec, auto index) {
    constexpr int V = decltype(vec)::value;
    using I = decltype(index);
    const dim3 grid(static_cast<unsigned>(cdiv(y.n * y.h * y.w * (y.c / V), 256)));
    dispatch(dtype, [&](auto zero) {
      using T = decltype(zero);
      const T* w = static_cast<const T*>(weight);
      const T* b = static_cast<const T*>(bias);
      if (kernel == 5)
        HGK_LAUNCH((depthwise_kernel<T, 5, V, I>), grid, dim3(256), 0, stream, x, y, w, b, stride_h, stride_w,
                   pad_top, pad_left, epilogue);
      else
        HGK_LAUNCH((depthwise_kernel<T, 3, V, I>), grid, dim3(256), 0, stream, x, y, w, b, stride_h, stride_w,
                   pad_top, pad_left, epilogue);
    });
  });
}

}  // namespace hgk
