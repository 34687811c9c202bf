// conv_mma_f32.cu — the sm_80+ conv kernel (conv_mma.cuh) instantiated for fp32: 3×TF32 on the
// tensor cores (each operand split into two tf32 halves, three mma.m16n8k8 per product), which keeps
// fp32's accuracy at a multiple of the SIMT kernel's throughput.
#include "conv_mma.cuh"

namespace hgk {

void conv_mma_f32(const ConvArgs& a, cudaStream_t stream) { mma::launch<float>(a, stream); }

}  // namespace hgk
