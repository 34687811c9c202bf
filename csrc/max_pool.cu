// max_pool.cu — 3×3 stride-2 padding-1 max pool (the stem's), the CUDA twin of
// hgnet_kernels/ops/max_pool.py; writes straight into slot 0 of the first block's buffer.
// NaN propagates as in PyTorch.
#include "ops.h"

namespace hgk {
namespace {

template <typename T>
__global__ void __launch_bounds__(256) max_pool_kernel(View4 x, View4 y) {
  const int64_t total = y.n * y.h * y.w * y.c;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const NhwcIndex o = nhwc_index(i, y);
  const int64_t n = o.n, c = o.c, oh = o.h, ow = o.w;
  const T* xp = static_cast<const T*>(x.data);
  float best = -INFINITY;
  for (int kh = 0; kh < 3; ++kh) {
    const int64_t ih = oh * 2 - 1 + kh;
    if (ih < 0 || ih >= x.h) continue;
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t iw = ow * 2 - 1 + kw;
      if (iw < 0 || iw >= x.w) continue;
      const float v = to_float(xp[offset(x, n, c, ih, iw)]);
      if (v > best || v != v) best = v;  // once NaN, no comparison replaces it
    }
  }
  static_cast<T*>(y.data)[offset(y, n, c, oh, ow)] = from_float<T>(best);
}

}  // namespace

void max_pool(const View4& x, const View4& y, DType dtype, cudaStream_t stream) {
  const int64_t total = y.n * y.h * y.w * y.c;
  if (total == 0) return;
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    HGK_LAUNCH(max_pool_kernel<T>, dim3(static_cast<unsigned>(cdiv(total, 256))), dim3(256), 0, stream, x, y);
  });
}

}  // namespace hgk
