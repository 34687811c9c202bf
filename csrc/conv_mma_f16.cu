// conv_mma_f16.cu — the sm_80+ conv kernel (conv_mma.cuh) instantiated for f16: one file per dtype so
// the tiles of each build in parallel.
#include "conv_mma.cuh"

namespace hgk {

void conv_mma_f16(const ConvArgs& a, cudaStream_t stream) { mma::launch<__half>(a, stream); }

}  // namespace hgk
