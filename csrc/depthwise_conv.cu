// depthwise_conv.cu — depthwise 3×3 conv + folded BN (LDS downsample), the CUDA twin of
// hgnet_kernels/ops/depthwise_conv.py:
//   y[n,c,oh,ow] = b[c] + Σ_{kh,kw} x[n,c,oh·s−1+kh,ow·s−1+kw] · W[kh,kw,c]
// One thread per output element, channels fastest (coalesced in NHWC), fp32 accumulation.
#include "ops.h"

namespace hgk {
namespace {

template <typename T>
__global__ void __launch_bounds__(256) depthwise_kernel(View4 x, View4 y, const T* __restrict__ w,
                                                        const T* __restrict__ bias, int stride) {
  const int64_t total = y.n * y.h * y.w * y.c;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const NhwcIndex o = nhwc_index(i, y);
  const int64_t n = o.n, c = o.c, oh = o.h, ow = o.w;
  const T* xp = static_cast<const T*>(x.data);
  float acc = to_float(bias[c]);
  for (int kh = 0; kh < 3; ++kh) {
    const int64_t ih = oh * stride - 1 + kh;
    if (ih < 0 || ih >= x.h) continue;
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t iw = ow * stride - 1 + kw;
      if (iw < 0 || iw >= x.w) continue;
      acc += to_float(xp[offset(x, n, c, ih, iw)]) * to_float(w[(kh * 3 + kw) * y.c + c]);
    }
  }
  static_cast<T*>(y.data)[offset(y, n, c, oh, ow)] = from_float<T>(acc);
}

}  // namespace

void depthwise_conv(const View4& x, const View4& y, const void* weight, const void* bias, DType dtype, int stride,
                    cudaStream_t stream) {
  const int64_t total = y.n * y.h * y.w * y.c;
  if (total == 0) return;
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    HGK_LAUNCH(depthwise_kernel<T>, dim3(static_cast<unsigned>(cdiv(total, 256))), dim3(256), 0, stream, x, y,
               static_cast<const T*>(weight), static_cast<const T*>(bias), stride);
  });
}

}  // namespace hgk
