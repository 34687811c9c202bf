// ptx.h — the PTX instructions of the sm_80+ conv kernel, one small device function each: inline
// PTX under nvcc, the host version of emulator/cuda_emu.h (lane for lane as the PTX ISA documents
// the fragments) under HGK_EMULATE. Kernels use these and never write PTX themselves, so the
// emulator runs every instruction they issue. tests/test_cuda_ptx.py checks each one's fragment
// layout against the PTX ISA's tables, through the emulator and, on a GPU, on the hardware
// (csrc/ptx_probe.cu).
//
// cp.async needs sm_80, ldmatrix sm_75, mma.m16n8k16 (f16, bf16) and m16n8k8 (tf32) sm_80: for an
// older arch the wrappers compile to a trap (the launchers never select these kernels there).
#pragma once

#include "cuda_compat.h"

#if !defined(HGK_EMULATE) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define HGK_PTX_SM80 1
#endif

namespace hgk {
namespace ptx {

#if !defined(HGK_EMULATE)
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
#endif

// cp.async.cg.shared.global, 16 bytes, with zero-fill: copies 16 bytes from `src` when `fill` is
// true, else writes 16 zeros without reading src (src-size 0). Both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool fill) {
#if defined(HGK_EMULATE)
  hgk_emu::ptx_cp_async(dst, src, 16, fill ? 16 : 0);
#elif defined(HGK_PTX_SM80)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(fill ? 16 : 0));
#else
  __trap();
#endif
}

// cp.async.commit_group: this thread's copies issued since the last commit become one group.
__device__ __forceinline__ void cp_async_commit() {
#if defined(HGK_EMULATE)
  hgk_emu::ptx_cp_async_commit();
#elif defined(HGK_PTX_SM80)
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// cp.async.wait_group N: this thread's groups, all but the N most recent, have landed.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(HGK_EMULATE)
  hgk_emu::ptx_cp_async_wait(N);
#elif defined(HGK_PTX_SM80)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: lanes 8i..8i+7 pass the 16-byte rows of
// matrix i (i < NUM); r[i] receives this lane's two 16-bit elements of matrix i.
template <int NUM, bool TRANS>
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[NUM], const void* row) {
  static_assert(NUM == 1 || NUM == 2 || NUM == 4, "ldmatrix loads 1, 2 or 4 matrices");
#if defined(HGK_EMULATE)
  hgk_emu::ptx_ldmatrix(NUM, TRANS, row, r);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  const unsigned a = smem_addr(row);
  if constexpr (NUM == 1 && !TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
  else if constexpr (NUM == 1)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
  else if constexpr (NUM == 2 && !TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
  else if constexpr (NUM == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(a));
  else if constexpr (!TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#else
  (void)row;
  for (int i = 0; i < NUM; ++i) r[i] = 0;
  __trap();
#endif
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32: d = A·B + c, A 16×16 row-major
// (4 registers of two elements), B 16×8 column-major (2 registers), C/D 16×8 fp32 (4 per lane).
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                             const float (&c)[4]) {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "f16 or bf16 inputs");
#if defined(HGK_EMULATE)
  hgk_emu::ptx_mma_m16n8k16(std::is_same<T, __nv_bfloat16>::value, d, a, b, c);
#elif defined(HGK_PTX_SM80)
  if constexpr (std::is_same<T, __half>::value)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#else
  for (int i = 0; i < 4; ++i) d[i] = c[i] + static_cast<float>(a[0] & 0) + static_cast<float>(b[0] & 0);
  __trap();
#endif
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d = A·B + c, A 16×8 (4 registers), B 8×8
// (2 registers), tf32 values in fp32 registers.
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4]) {
#if defined(HGK_EMULATE)
  hgk_emu::ptx_mma_m16n8k8_tf32(d, a, b, c);
#elif defined(HGK_PTX_SM80)
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  for (int i = 0; i < 4; ++i) d[i] = c[i] + static_cast<float>(a[0] & 0) + static_cast<float>(b[0] & 0);
  __trap();
#endif
}

// cvt.rna.tf32.f32: the nearest tf32 value (ties away from zero), in an fp32 register.
__device__ __forceinline__ float cvt_tf32(float f) {
#if defined(HGK_EMULATE)
  return hgk_emu::ptx_cvt_rna_tf32(f);
#elif defined(HGK_PTX_SM80)
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return __uint_as_float(r);
#else
  __trap();
  return f;
#endif
}

}  // namespace ptx
}  // namespace hgk
