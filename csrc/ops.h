// ops.h — host launchers of the fused ops (one .cu file each). Plain C++ parameters, no torch:
// the torch bindings (bindings.cpp) and the CPU emulator (emulator/emu_api.cpp) both call these.
#pragma once

#include "cuda_compat.h"

namespace hgk {

struct ConvArgs {
  View4 x, y;
  const void* weight;  // (k, k, C_in, C_out), dtype
  const void* bias;    // (C_out,), dtype
  float* psum;         // (N, tiles, C_out) fp32 when the ESE partial sums are wanted, else null
  DType dtype;
  int kernel, stride;
  bool relu;
  int arch;            // compute capability ×10 (e.g. 90); selects the tensor-core path
};

// Pixel rows per tile of the conv kernel chosen for (dtype, arch): psum has cdiv(Ho·Wo, this) rows.
int conv_tile_rows(DType dtype, int arch);
void conv_bn_act(const ConvArgs& a, cudaStream_t stream);

void depthwise_conv(const View4& x, const View4& y, const void* weight, const void* bias, DType dtype,
                    int stride, cudaStream_t stream);
void max_pool(const View4& x, const View4& y, DType dtype, cudaStream_t stream);
void ese_gate(const float* psum, int64_t n, int64_t tiles, int64_t c, const void* weight, const void* bias,
              DType dtype, float inv_hw, float* gate, cudaStream_t stream);
void scale_residual(const View4& y, const float* gate, const View4* identity, const View4& out, DType dtype,
                    cudaStream_t stream);

}  // namespace hgk
