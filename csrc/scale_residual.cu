// scale_residual.cu — out = y · gate[n,c] (+ identity), the CUDA twin of
// hgnet_kernels/ops/scale_residual.py; out is slot 0 of the next block's buffer or the stage output.
#include "ops.h"

namespace hgk {
namespace {

template <typename T, bool RESIDUAL>
__global__ void __launch_bounds__(256) scale_residual_kernel(View4 y, const float* __restrict__ gate, View4 identity,
                                                             View4 out) {
  const int64_t total = y.n * y.h * y.w * y.c;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const NhwcIndex o = nhwc_index(i, y);
  const int64_t n = o.n, c = o.c, h = o.h, w = o.w;
  float v = to_float(static_cast<const T*>(y.data)[offset(y, n, c, h, w)]) * gate[n * y.c + c];
  if (RESIDUAL) v += to_float(static_cast<const T*>(identity.data)[offset(identity, n, c, h, w)]);
  static_cast<T*>(out.data)[offset(out, n, c, h, w)] = from_float<T>(v);
}

}  // namespace

void scale_residual(const View4& y, const float* gate, const View4* identity, const View4& out, DType dtype,
                    cudaStream_t stream) {
  const int64_t total = y.n * y.h * y.w * y.c;
  if (total == 0) return;
  const dim3 grid(static_cast<unsigned>(cdiv(total, 256)));
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    if (identity != nullptr)
      HGK_LAUNCH((scale_residual_kernel<T, true>), grid, dim3(256), 0, stream, y, gate, *identity, out);
    else
      HGK_LAUNCH((scale_residual_kernel<T, false>), grid, dim3(256), 0, stream, y, gate, y, out);
  });
}

}  // namespace hgk
