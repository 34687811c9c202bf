// depthwise_conv.cu — depthwise k×k conv (k 3 or 5) + folded BN, then optional ReLU and affine: the
// CUDA twin of hgnet_kernels/kernels/triton/depthwise_conv.py (spec.depthwise_conv_reference):
//   y[n,c,oh,ow] = aff(act(b[c] + Σ_{kh,kw} x[n,c,oh·s−pt+kh,ow·s−pl+kw] · W[kh,kw,c]))
// v1's LDS downsample (3×3/2, no activation) and v2's LightConv depthwise (3×3 or 5×5, stride 1,
// ReLU and the LAB affine). One thread per output element, channels fastest (coalesced in NHWC),
// fp32 accumulation.
#include "ops.h"

namespace hgk {
namespace {

template <typename T, int K>
__global__ void __launch_bounds__(256) depthwise_kernel(View4 x, View4 y, const T* __restrict__ w,
                                                        const T* __restrict__ bias, int stride, int pad_top,
                                                        int pad_left, Epilogue epi) {
  const int64_t total = y.n * y.h * y.w * y.c;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const NhwcIndex o = nhwc_index(i, y);
  const int64_t n = o.n, c = o.c, oh = o.h, ow = o.w;
  const T* xp = static_cast<const T*>(x.data);
  float acc = to_float(bias[c]);
#pragma unroll
  for (int kh = 0; kh < K; ++kh) {
    const int64_t ih = oh * stride - pad_top + kh;
    if (ih < 0 || ih >= x.h) continue;
#pragma unroll
    for (int kw = 0; kw < K; ++kw) {
      const int64_t iw = ow * stride - pad_left + kw;
      if (iw < 0 || iw >= x.w) continue;
      acc += to_float(xp[offset(x, n, c, ih, iw)]) * to_float(w[(kh * K + kw) * y.c + c]);
    }
  }
  if (epi.relu && acc < 0.f) acc = 0.f;  // not fmaxf: NaN must propagate as in torch.relu
  if (epi.affine) acc = acc * epi.a + epi.c;
  static_cast<T*>(y.data)[offset(y, n, c, oh, ow)] = from_float<T>(acc);
}

}  // namespace

void depthwise_conv(const View4& x, const View4& y, const void* weight, const void* bias, DType dtype, int kernel,
                    int stride, int pad_top, int pad_left, const Epilogue& epilogue, cudaStream_t stream) {
  const int64_t total = y.n * y.h * y.w * y.c;
  if (total == 0) return;
  const dim3 grid(static_cast<unsigned>(cdiv(total, 256)));
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* w = static_cast<const T*>(weight);
    const T* b = static_cast<const T*>(bias);
    if (kernel == 5)
      HGK_LAUNCH((depthwise_kernel<T, 5>), grid, dim3(256), 0, stream, x, y, w, b, stride, pad_top, pad_left,
                 epilogue);
    else
      HGK_LAUNCH((depthwise_kernel<T, 3>), grid, dim3(256), 0, stream, x, y, w, b, stride, pad_top, pad_left,
                 epilogue);
  });
}

}  // namespace hgk
