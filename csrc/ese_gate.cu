// ese_gate.cu — ESE gate from the aggregation's partial sums, the CUDA twin of
// hgnet_kernels/kernels/triton/ese_gate.py:
//   mean[n,ci] = Σ_t psum[n,t,ci] / (H·W);  gate[n,co] = sigmoid(b[co] + Σ_ci W[co,ci] · mean[n,ci])
// psum is (N, T, C) in the layout of the conv path that wrote it (hgk::conv_psum_tiles: 64-row
// slabs across images on sm_80+, 64-pixel tiles per image otherwise); either way the T rows of an
// image add up to its channel sums, which is all this kernel relies on.
// One block per (image, 64 output channels); every sum runs in a fixed order (deterministic).
#include "ops.h"

namespace hgk {
namespace {

constexpr int kGateThreads = 256, kGateCo = 64, kGateSplit = kGateThreads / kGateCo;

template <typename T>
__global__ void __launch_bounds__(256) ese_gate_kernel(const float* __restrict__ psum, int64_t tiles, int64_t c,
                                                       const T* __restrict__ w, const T* __restrict__ bias,
                                                       float inv_hw, float* __restrict__ gate) {
  HGK_DYNAMIC_SMEM(float, mean);  // c floats
  __shared__ float partial[kGateThreads];
  const int64_t n = blockIdx.x;
  for (int64_t ci = threadIdx.x; ci < c; ci += blockDim.x) {
    float s = 0.f;
    for (int64_t t = 0; t < tiles; ++t) s += psum[(n * tiles + t) * c + ci];
    mean[ci] = s * inv_hw;
  }
  __syncthreads();
  const int64_t co = static_cast<int64_t>(blockIdx.y) * kGateCo + threadIdx.x / kGateSplit;
  const int part = threadIdx.x % kGateSplit;
  float s = 0.f;
  if (co < c)
    for (int64_t ci = part; ci < c; ci += kGateSplit) s += to_float(w[co * c + ci]) * mean[ci];
  partial[threadIdx.x] = s;
  __syncthreads();
  if (part == 0 && co < c) {
    float total = to_float(bias[co]);
    for (int k = 0; k < kGateSplit; ++k) total += partial[threadIdx.x + k];
    gate[n * c + co] = 1.f / (1.f + expf(-total));
  }
}

}  // namespace

void ese_gate(const float* psum, int64_t n, int64_t tiles, int64_t c, const void* weight, const void* bias,
              DType dtype, float inv_hw, float* gate, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    HGK_LAUNCH(ese_gate_kernel<T>, dim3(static_cast<unsigned>(n), static_cast<unsigned>(cdiv(c, kGateCo))),
               dim3(kGateThreads), static_cast<size_t>(c) * sizeof(float), stream, psum, tiles, c,
               static_cast<const T*>(weight), static_cast<const T*>(bias), inv_hw, gate);
  });
}

}  // namespace hgk
