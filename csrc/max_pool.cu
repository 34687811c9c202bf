// max_pool.cu — k×k max pool (k 2 or 3, stride 1 or 2), the CUDA twin of
// hgnet_kernels/kernels/triton/max_pool.py (spec.max_pool_reference): v1's stem pool (3×3/2,
// padding 1) and v2's (2×2/1, "SAME" padding bottom / right); writes straight into slot 0 of a
// block buffer. Padded taps are ignored as in PyTorch and Paddle, or, with zero_pad, zeros that
// take part in the max (timm pads with F.pad first). NaN propagates as in PyTorch.
#include "ops.h"

namespace hgk {
namespace {

template <typename T>
__global__ void __launch_bounds__(256) max_pool_kernel(View4 x, View4 y, int kernel, int stride, int pad_top,
                                                       int pad_left, bool zero_pad) {
  const int64_t total = y.n * y.h * y.w * y.c;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const NhwcIndex o = nhwc_index(i, y);
  const int64_t n = o.n, c = o.c, oh = o.h, ow = o.w;
  const T* xp = static_cast<const T*>(x.data);
  float best = -INFINITY;
  for (int kh = 0; kh < kernel; ++kh) {
    const int64_t ih = oh * stride - pad_top + kh;
    for (int kw = 0; kw < kernel; ++kw) {
      const int64_t iw = ow * stride - pad_left + kw;
      float v;
      if (ih < 0 || ih >= x.h || iw < 0 || iw >= x.w) {
        if (!zero_pad) continue;
        v = 0.f;
      } else {
        v = to_float(xp[offset(x, n, c, ih, iw)]);
      }
      if (v > best || v != v) best = v;  // once NaN, no comparison replaces it
    }
  }
  static_cast<T*>(y.data)[offset(y, n, c, oh, ow)] = from_float<T>(best);
}

}  // namespace

void max_pool(const View4& x, const View4& y, DType dtype, int kernel, int stride, int pad_top, int pad_left,
              bool zero_pad, cudaStream_t stream) {
  const int64_t total = y.n * y.h * y.w * y.c;
  if (total == 0) return;
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    HGK_LAUNCH(max_pool_kernel<T>, dim3(static_cast<unsigned>(cdiv(total, 256))), dim3(256), 0, stream, x, y, kernel,
               stride, pad_top, pad_left, zero_pad);
  });
}

}  // namespace hgk
