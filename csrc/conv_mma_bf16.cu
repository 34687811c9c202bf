// conv_mma_bf16.cu — the sm_80+ conv kernel (conv_mma.cuh) instantiated for bf16: one file per dtype so
// the tiles of each build in parallel.
#include "conv_mma.cuh"

namespace hgk {

void conv_mma_bf16(const ConvArgs& a, cudaStream_t stream) { mma::launch<__nv_bfloat16>(a, stream); }

}  // namespace hgk
