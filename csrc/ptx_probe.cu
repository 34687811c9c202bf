// ptx_probe.cu — one-warp kernels that run a single PTX wrapper of ptx.h on given inputs and write
// what each lane received, so tests/test_cuda_ptx.py can compare the fragments with the PTX ISA's
// tables: through the emulator on the CPU (checking its host versions), and on a GPU (checking
// that the hardware agrees with the same tables, hence with the emulator).
//
// Buffers (device memory, little-endian):
//   ldmatrix_x{1,2,4}[_trans]: in  = uint16 tile[32][8] (row r: 16 bytes), int32 row_of_lane[32]
//                              out = uint32 reg[32][4] (lane, register; unused registers 0)
//   mma_f16 / mma_bf16 / mma_tf32: in = uint32 a[32][4], uint32 b[32][2], float c[32][4]
//                              out = float d[32][4]
//   cp_async:  in  = 4 + 32 chunks of 16 bytes
//              out = 8 + 32 chunks of 16 bytes: lane 0 copies chunk 0 (group 1), zero-fills into
//              chunk 1 (group 1), copies chunk 2 (group 2); out[0..2] after wait_group 1,
//              out[3..5] after wait_group 0, out[6] a chunk no copy targets; then every lane l
//              copies chunk 4 + l (zero-fill for odd l) in one group: out[8 + l] after wait_group 0.
#include "ops.h"
#include "ptx.h"

namespace hgk {
namespace {

template <int NUM, bool TRANS>
__global__ void __launch_bounds__(32) ldmatrix_probe(const unsigned char* in, uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[32 * 8];
  const int lane = threadIdx.x;
  copy16(&tile[lane * 8], in + lane * 16);
  __syncthreads();
  const int row = reinterpret_cast<const int*>(in + 512)[lane];
  uint32_t r[NUM];
  ptx::ldmatrix<NUM, TRANS>(r, &tile[row * 8]);
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = i < NUM ? r[i] : 0u;
}

template <int KIND>  // 0 f16, 1 bf16, 2 tf32
__global__ void __launch_bounds__(32) mma_probe(const uint32_t* in, float* out) {
  const int lane = threadIdx.x;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) a[i] = in[lane * 4 + i];
  for (int i = 0; i < 2; ++i) b[i] = in[128 + lane * 2 + i];
  for (int i = 0; i < 4; ++i) c[i] = reinterpret_cast<const float*>(in)[192 + lane * 4 + i];
  if constexpr (KIND == 0)
    ptx::mma_m16n8k16<__half>(d, a, b, c);
  else if constexpr (KIND == 1)
    ptx::mma_m16n8k16<__nv_bfloat16>(d, a, b, c);
  else
    ptx::mma_m16n8k8_tf32(d, a, b, c);
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = d[i];
}

__global__ void __launch_bounds__(32) cp_async_probe(const unsigned char* in, unsigned char* out) {
  __shared__ __align__(16) unsigned char dst[4 * 16];
  __shared__ __align__(16) unsigned char warp_dst[32 * 16];
  const int lane = threadIdx.x;
  if (lane < 4)
    for (int i = 0; i < 16; ++i) dst[lane * 16 + i] = 0xab;
  __syncthreads();
  if (lane == 0) {
    ptx::cp_async_16(dst, in, true);
    ptx::cp_async_16(dst + 16, in + 16, false);
    ptx::cp_async_commit();
    ptx::cp_async_16(dst + 32, in + 32, true);
    ptx::cp_async_commit();
    ptx::cp_async_wait<1>();
    for (int c = 0; c < 3; ++c) copy16(out + c * 16, dst + c * 16);
    ptx::cp_async_wait<0>();
    for (int c = 0; c < 4; ++c) copy16(out + (3 + c) * 16, dst + c * 16);
  }
  ptx::cp_async_16(warp_dst + lane * 16, in + (4 + lane) * 16, lane % 2 == 0);
  ptx::cp_async_commit();
  ptx::cp_async_wait<0>();
  __syncthreads();
  copy16(out + (8 + lane) * 16, warp_dst + lane * 16);
}

}  // namespace

int64_t ptx_probe_in_bytes(PtxProbe probe) {
  switch (probe) {
    case PtxProbe::mma_f16: case PtxProbe::mma_bf16: case PtxProbe::mma_tf32: return 32 * 10 * 4;
    case PtxProbe::cp_async: return 36 * 16;
    default: return 512 + 32 * 4;
  }
}

int64_t ptx_probe_out_bytes(PtxProbe probe) { return probe == PtxProbe::cp_async ? 40 * 16 : 32 * 4 * 4; }

void ptx_probe(PtxProbe probe, const void* in, void* out, cudaStream_t stream) {
  const auto* bytes = static_cast<const unsigned char*>(in);
  const auto* words = static_cast<const uint32_t*>(in);
  auto* regs = static_cast<uint32_t*>(out);
  const dim3 grid(1), block(32);
  switch (probe) {
    case PtxProbe::ldmatrix_x1: HGK_LAUNCH((ldmatrix_probe<1, false>), grid, block, 0, stream, bytes, regs); break;
    case PtxProbe::ldmatrix_x2: HGK_LAUNCH((ldmatrix_probe<2, false>), grid, block, 0, stream, bytes, regs); break;
    case PtxProbe::ldmatrix_x4: HGK_LAUNCH((ldmatrix_probe<4, false>), grid, block, 0, stream, bytes, regs); break;
    case PtxProbe::ldmatrix_x1_trans: HGK_LAUNCH((ldmatrix_probe<1, true>), grid, block, 0, stream, bytes, regs); break;
    case PtxProbe::ldmatrix_x2_trans: HGK_LAUNCH((ldmatrix_probe<2, true>), grid, block, 0, stream, bytes, regs); break;
    case PtxProbe::ldmatrix_x4_trans: HGK_LAUNCH((ldmatrix_probe<4, true>), grid, block, 0, stream, bytes, regs); break;
    case PtxProbe::mma_f16: HGK_LAUNCH((mma_probe<0>), grid, block, 0, stream, words, static_cast<float*>(out)); break;
    case PtxProbe::mma_bf16: HGK_LAUNCH((mma_probe<1>), grid, block, 0, stream, words, static_cast<float*>(out)); break;
    case PtxProbe::mma_tf32: HGK_LAUNCH((mma_probe<2>), grid, block, 0, stream, words, static_cast<float*>(out)); break;
    case PtxProbe::cp_async:
      HGK_LAUNCH(cp_async_probe, grid, block, 0, stream, bytes, static_cast<unsigned char*>(out));
      break;
  }
}

}  // namespace hgk
