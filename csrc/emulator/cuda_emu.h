// cuda_emu.h — the CUDA execution model on the CPU, so the *same* kernel source compiled by g++
// can run (slowly, exactly) where no GPU exists. Included by cuda_compat.h when HGK_EMULATE is set.
//
// Supported, and nothing else (a kernel that needs more must extend this file):
//   * __global__ / __device__ / __host__ / __forceinline__ / __restrict__ qualifiers;
//   * dim3, blockIdx, threadIdx, blockDim, gridDim;
//   * __shared__ (static per-block arrays: mapped to function statics — blocks run one at a time),
//     dynamic shared memory through HGK_DYNAMIC_SMEM(type, name);
//   * __syncthreads(): a real barrier across the block's emulated threads. Each CUDA thread is a
//     fiber with its own stack; fibers run until they reach a barrier or finish, so every
//     interleaving a barrier allows on a GPU is one the emulator can produce. On x86-64 a fiber
//     switch is a dozen instructions (below); elsewhere it is ucontext's swapcontext;
//   * warp-level PTX (the wrappers of csrc/ptx.h), lane for lane as the PTX ISA documents it:
//     ldmatrix .x1/.x2/.x4 (.trans), mma.sync m16n8k16 f16/bf16 → f32 and m16n8k8 tf32 → f32.
//     The 32 lanes of a warp exchange registers through a per-warp staging area: each lane
//     deposits its operands and waits at a warp barrier; the last lane to arrive computes every
//     lane's result at that instant (as the warp-wide instruction does: no lane runs on between
//     the reads of one ldmatrix), then all lanes take their own result and go on;
//   * cp.async (16, 8 or 4 bytes, with src-size zero-fill), cp.async.commit_group and
//     cp.async.wait_group, per thread as the PTX ISA defines them. A copy in flight reads as
//     all-ones bytes (NaN in every float type) until a wait_group completes it: a read before the
//     wait, or an overwrite of a stage another warp still reads, shows up as NaN in the output;
//   * __half / __nv_bfloat16 with round-to-nearest-even conversions (__float2half, __half2float,
//     __float2bfloat16, __bfloat162float);
//   * float2 / float4 / uint4 (make_*); 16-byte vector loads go through hgk::copy16, a memcpy here;
//   * nvcuda::wmma fragments (matrix_a/matrix_b/accumulator, 16×16×16, row/col major, half and
//     bf16 inputs, float accumulators): fill_fragment, load_matrix_sync, mma_sync,
//     store_matrix_sync. Every lane holds the whole tile (a GPU spreads it over the warp); the
//     results written to memory are identical, and kernels may not index fragment elements;
//   * the launchers' int32 indexing limit, settable (hgk_emu_set_int32_index_limit) so that the
//     tests run the int64 instantiations of the memory-bound kernels on small tensors;
//   * cudaStream_t (ignored), HGK_LAUNCH (runs the grid's blocks in order), cudaGetLastError,
//     cudaFuncSetAttribute (accepted, nothing to set), cudaGetDevice (device 0).
// Not supported: atomics, warp shuffles/votes, cooperative groups, TMA/wgmma, textures.
#pragma once

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define HGK_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(hgk_emu::dynamic_smem())

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef void* cudaStream_t;
typedef int cudaError_t;
static const cudaError_t cudaSuccess = 0;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error (emulated)"; }
template <typename K>
inline cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

namespace hgk_emu {
inline dim3& block_idx() { static dim3 v; return v; }
inline dim3& thread_idx() { static dim3 v; return v; }
inline dim3& block_dim() { static dim3 v; return v; }
inline dim3& grid_dim() { static dim3 v; return v; }
inline std::vector<unsigned char>& dynamic_smem_storage() { static std::vector<unsigned char> v; return v; }
inline void* dynamic_smem() { return dynamic_smem_storage().data(); }
// A lower limit for the launchers' int32 indexing (cuda_compat.h's int32_index_limit), or -1 for
// the GPU's: the tests lower it to run the int64 kernels on small tensors.
inline int64_t& int32_index_limit_override() { static int64_t v = -1; return v; }
}  // namespace hgk_emu

#define blockIdx (hgk_emu::block_idx())
#define threadIdx (hgk_emu::thread_idx())
#define blockDim (hgk_emu::block_dim())
#define gridDim (hgk_emu::grid_dim())

// ---- fibers --------------------------------------------------------------------------------------
#if defined(__x86_64__)
// hgk_emu_swap(save, load): pushes the callee-saved registers and the SSE/x87 control words on the
// current stack, stores the stack pointer in *save, switches to the stack `load` and pops the
// same. A new fiber's stack is laid out as if it had called hgk_emu_swap, returning into
// hgk_emu_fiber_entry, which calls r13(r12). glibc's swapcontext also saves the signal mask
// with a system call on every switch: the warp barriers of the PTX wrappers switch fibers
// millions of times per network, which that would make 20× slower. Weak and hidden: each
// translation unit emits a copy, the linker keeps one.
extern "C" void hgk_emu_swap(void** save, void* load);
extern "C" void hgk_emu_fiber_entry();
asm(R"(
  .pushsection .text
  .weak hgk_emu_swap
  .hidden hgk_emu_swap
  .type hgk_emu_swap, @function
hgk_emu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size hgk_emu_swap, .-hgk_emu_swap
  .weak hgk_emu_fiber_entry
  .hidden hgk_emu_fiber_entry
  .type hgk_emu_fiber_entry, @function
hgk_emu_fiber_entry:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size hgk_emu_fiber_entry, .-hgk_emu_fiber_entry
  .popsection
)");
#endif

namespace hgk_emu {

// Exchange area of one warp-level instruction: what each lane deposits and what each receives.
struct WarpSlot {
  uint32_t in[32][12];
  const void* ptr[32];
  uint32_t out[32][4];
  int arrived = 0;
  int op = -1;
};
// Two slots used alternately: a lane can only deposit into a slot again after every lane has
// passed the collective in between, so every lane has taken its result from the slot by then.
struct WarpState {
  WarpSlot slot[2];
};

struct AsyncCopy {
  void* dst;
  const void* src;
  int bytes, src_bytes;
};
// One thread's cp.async state: copies not yet committed, and committed groups oldest first.
struct ThreadAsync {
  std::vector<AsyncCopy> open;
  std::deque<std::vector<AsyncCopy>> groups;
};

// One block's threads as fibers. A fiber runs until it waits (at __syncthreads, or at a warp
// collective its warp has not all reached) or finishes. When every unfinished fiber waits at
// __syncthreads, all are released; a warp collective releases its warp when the last lane arrives.
struct BlockScheduler {
  enum State { kRunnable = 0, kAtBarrier = 1, kDone = 2, kAtWarp = 3 };
  static constexpr size_t kStackBytes = 256 * 1024;
  std::vector<std::vector<unsigned char>> stacks;
  std::vector<int> state;
  std::vector<dim3> idx;
  std::vector<WarpState> warps;
  std::vector<unsigned> lane_seq;  // collectives each thread has entered (selects the slot)
  std::vector<ThreadAsync> async;
  unsigned nthreads = 0;
  int current = -1;
  std::exception_ptr error;
#if defined(__x86_64__)
  void* scheduler_sp = nullptr;
  std::vector<void*> sp;
#else
  ucontext_t scheduler_ctx;
  std::vector<ucontext_t> ctx;
#endif

  static BlockScheduler& instance() { static BlockScheduler s; return s; }

  void to_scheduler() {
#if defined(__x86_64__)
    hgk_emu_swap(&sp[current], scheduler_sp);
#else
    swapcontext(&ctx[current], &scheduler_ctx);
#endif
  }

  void barrier() {
    state[current] = kAtBarrier;
    to_scheduler();
  }

  void wait_warp() {
    state[current] = kAtWarp;
    to_scheduler();
  }

  void release_warp(int warp) {
    const unsigned end = std::min<unsigned>(nthreads, (warp + 1) * 32u);
    for (unsigned t = warp * 32u; t < end; ++t)
      if (state[t] == kAtWarp) state[t] = kRunnable;
  }

  template <typename Fn>
  static void fiber_main(void* arg) {
    BlockScheduler& s = instance();
    try {
      (*static_cast<Fn*>(arg))();
    } catch (...) {
      s.error = std::current_exception();
    }
    s.state[s.current] = kDone;
    s.to_scheduler();  // never resumed
    std::abort();
  }

#if !defined(__x86_64__)
  template <typename Fn>
  static void trampoline(unsigned lo, unsigned hi) {  // makecontext passes ints
    fiber_main<Fn>(reinterpret_cast<void*>(static_cast<uintptr_t>(lo) | (static_cast<uintptr_t>(hi) << 32)));
  }
#endif

  template <typename Fn>
  void start_fiber(unsigned t, Fn* fn) {
#if defined(__x86_64__)
    // The frame hgk_emu_swap pops: control words, r15, r14, r13 (entry), r12 (argument), rbx,
    // rbp, return address (hgk_emu_fiber_entry), which then calls with a 16-byte aligned stack.
    uintptr_t top = reinterpret_cast<uintptr_t>(stacks[t].data() + kStackBytes) & ~uintptr_t{15};
    uint64_t* frame = reinterpret_cast<uint64_t*>(top - 8 - 7 * 8);
    uint32_t mxcsr;
    uint16_t fpu_cw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpu_cw));
    frame[0] = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpu_cw) << 32);
    frame[1] = 0;                                               // r15
    frame[2] = 0;                                               // r14
    frame[3] = reinterpret_cast<uint64_t>(&fiber_main<Fn>);     // r13
    frame[4] = reinterpret_cast<uint64_t>(fn);                  // r12
    frame[5] = 0;                                               // rbx
    frame[6] = 0;                                               // rbp
    frame[7] = reinterpret_cast<uint64_t>(&hgk_emu_fiber_entry);  // return address
    sp[t] = frame;
#else
    getcontext(&ctx[t]);
    ctx[t].uc_stack.ss_sp = stacks[t].data();
    ctx[t].uc_stack.ss_size = kStackBytes;
    ctx[t].uc_link = &scheduler_ctx;
    uintptr_t p = reinterpret_cast<uintptr_t>(fn);
    makecontext(&ctx[t], reinterpret_cast<void (*)()>(&trampoline<Fn>), 2, static_cast<unsigned>(p & 0xffffffffu),
                static_cast<unsigned>(p >> 32));
#endif
  }

  void resume(unsigned t) {
    current = static_cast<int>(t);
    thread_idx() = idx[t];
#if defined(__x86_64__)
    hgk_emu_swap(&scheduler_sp, sp[t]);
#else
    swapcontext(&scheduler_ctx, &ctx[t]);
#endif
  }

  template <typename Fn>
  void run_block(unsigned n, Fn* fn) {
    nthreads = n;
    if (stacks.size() < n) stacks.resize(n, std::vector<unsigned char>(kStackBytes));
#if defined(__x86_64__)
    sp.assign(n, nullptr);
#else
    ctx.assign(n, ucontext_t{});
#endif
    state.assign(n, kRunnable);
    idx.resize(n);
    warps.assign((n + 31) / 32, WarpState{});
    lane_seq.assign(n, 0);
    async.assign(n, ThreadAsync{});
    error = nullptr;
    const dim3 bd = block_dim();
    for (unsigned t = 0; t < n; ++t) {
      idx[t] = dim3(t % bd.x, (t / bd.x) % bd.y, t / (bd.x * bd.y));
      start_fiber(t, fn);
    }
    for (;;) {
      bool ran = false;
      for (unsigned t = 0; t < n; ++t) {
        if (state[t] != kRunnable) continue;
        ran = true;
        resume(t);
        if (error) {
          current = -1;
          std::rethrow_exception(error);
        }
      }
      if (ran) continue;
      unsigned at_barrier = 0, at_warp = 0, done = 0;
      for (unsigned t = 0; t < n; ++t) {
        at_barrier += state[t] == kAtBarrier;
        at_warp += state[t] == kAtWarp;
        done += state[t] == kDone;
      }
      if (done == n) break;
      current = -1;
      if (at_warp)
        throw std::runtime_error("emulated warp-level instruction: some lanes of a warp never reached it (they "
                                 "returned or wait at __syncthreads; undefined on a GPU)");
      if (done)
        throw std::runtime_error("emulated __syncthreads(): a thread returned while others wait "
                                 "at a barrier (divergent barrier, undefined on a GPU)");
      for (unsigned t = 0; t < n; ++t) state[t] = kRunnable;
      (void)at_barrier;
    }
    current = -1;
  }
};

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, size_t smem_bytes, Args... args) {
  grid_dim() = grid;
  block_dim() = block;
  dynamic_smem_storage().assign(smem_bytes + 16, 0);
  auto body = [&]() { kernel(args...); };
  const unsigned nthreads = block.x * block.y * block.z;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        block_idx() = dim3(x, y, z);
        BlockScheduler::instance().run_block(nthreads, &body);
      }
}

// Runs one warp-level instruction: every lane deposits `in` (nin words) and `ptr`; the last lane
// to arrive calls compute(slot), which fills slot.out for every lane; each lane gets its nout words.
template <typename Compute>
void warp_collective(int op, const uint32_t* in, int nin, const void* ptr, uint32_t* out, int nout,
                     Compute&& compute) {
  BlockScheduler& s = BlockScheduler::instance();
  if (s.current < 0) throw std::logic_error("warp-level instruction outside a kernel");
  const unsigned t = static_cast<unsigned>(s.current), warp = t / 32, lane = t % 32;
  if ((warp + 1) * 32 > s.nthreads)
    throw std::runtime_error("emulated warp-level instruction in a partial warp (block size not a multiple of 32)");
  WarpSlot& slot = s.warps[warp].slot[s.lane_seq[t]++ & 1];
  if (slot.arrived == 0) {
    slot.op = op;
  } else if (slot.op != op) {
    throw std::runtime_error("emulated warp-level instruction: lanes of one warp execute different ones");
  }
  if (nin) std::memcpy(slot.in[lane], in, sizeof(uint32_t) * nin);
  slot.ptr[lane] = ptr;
  if (++slot.arrived == 32) {
    compute(slot);
    slot.arrived = 0;
    s.release_warp(static_cast<int>(warp));
  } else {
    s.wait_warp();
  }
  std::memcpy(out, slot.out[lane], sizeof(uint32_t) * nout);
}

inline int lane_id() { return BlockScheduler::instance().current % 32; }

}  // namespace hgk_emu

inline void __syncthreads() { hgk_emu::BlockScheduler::instance().barrier(); }

#define HGK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  hgk_emu::launch(kernel, grid, block, smem, __VA_ARGS__)

// ---- 16-bit floating point types, round to nearest even -------------------------------------
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

inline uint32_t hgk_float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float hgk_bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u = hgk_float_bits(f);
  __nv_bfloat16 h;
  if (std::isnan(f)) { h.bits = static_cast<uint16_t>((u >> 16) | 0x40); return h; }
  u += 0x7fffu + ((u >> 16) & 1u);
  h.bits = static_cast<uint16_t>(u >> 16);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 h) { return hgk_bits_float(static_cast<uint32_t>(h.bits) << 16); }

inline __half __float2half(float f) {
  // IEEE binary16 with round to nearest even, subnormals, overflow to inf, NaN kept.
  uint32_t u = hgk_float_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t exp = (u >> 23) & 0xffu;
  uint32_t man = u & 0x7fffffu;
  __half h;
  if (exp == 0xffu) { h.bits = static_cast<uint16_t>(sign | 0x7c00u | (man ? 0x200u : 0)); return h; }
  int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) { h.bits = static_cast<uint16_t>(sign | 0x7c00u); return h; }
  if (e <= 0) {
    if (e < -10) { h.bits = static_cast<uint16_t>(sign); return h; }
    man |= 0x800000u;
    int shift = 14 - e;
    uint32_t half_man = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_man & 1u))) ++half_man;
    h.bits = static_cast<uint16_t>(sign | half_man);
    return h;
  }
  uint32_t half_man = man >> 13;
  uint32_t rem = man & 0x1fffu;
  uint32_t bits = sign | (static_cast<uint32_t>(e) << 10) | half_man;
  if (rem > 0x1000u || (rem == 0x1000u && (half_man & 1u))) ++bits;  // may carry into exponent: correct
  h.bits = static_cast<uint16_t>(bits);
  return h;
}
inline float __half2float(__half h) {
  uint32_t sign = (h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t man = h.bits & 0x3ffu;
  if (exp == 0) {
    float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return hgk_bits_float(sign | 0x7f800000u | (man << 13));
  return hgk_bits_float(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

struct alignas(8) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }

// ---- warp-level PTX and cp.async, lane for lane as the PTX ISA documents them ---------------------
// (PTX ISA, "Warp-level matrix instructions": the ldmatrix fragment, the mma.m16n8k16 fragments for
// .f16/.bf16 and the mma.m16n8k8 fragments for .tf32; "Data movement: cp.async".) groupID = lane / 4,
// threadID_in_group = lane % 4, as the ISA names them; a .f16x2/.bf16x2 register holds the element
// of the lower column (or row) index in its low 16 bits.
namespace hgk_emu {

enum WarpOp { kOpLdmatrix = 1, kOpMmaF16 = 100, kOpMmaBf16 = 101, kOpMmaTf32 = 102 };

inline bool aligned_to(const void* p, unsigned bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

inline ThreadAsync& thread_async() {
  BlockScheduler& s = BlockScheduler::instance();
  if (s.current < 0) throw std::logic_error("cp.async outside a kernel");
  return s.async[s.current];
}

// cp.async.{ca,cg}.shared.global [dst], [src], bytes, src_bytes: copies src_bytes and fills the
// rest of the `bytes` with zeros, asynchronously: the data lands when a wait_group completes the
// group holding the copy. Until then the destination reads as all-ones bytes (NaN).
inline void ptx_cp_async(void* dst, const void* src, int bytes, int src_bytes) {
  if ((bytes != 4 && bytes != 8 && bytes != 16) || src_bytes < 0 || src_bytes > bytes)
    throw std::runtime_error("emulated cp.async: cp-size must be 4, 8 or 16 and src-size at most cp-size");
  if (!aligned_to(dst, bytes) || (src_bytes > 0 && !aligned_to(src, bytes)))
    throw std::runtime_error("emulated cp.async: misaligned address (both must be aligned to cp-size)");
  std::memset(dst, 0xff, bytes);
  thread_async().open.push_back(AsyncCopy{dst, src, bytes, src_bytes});
}

// cp.async.commit_group: the thread's copies not yet in a group become one (possibly empty) group.
inline void ptx_cp_async_commit() {
  ThreadAsync& a = thread_async();
  a.groups.push_back(std::move(a.open));
  a.open.clear();
}

// cp.async.wait_group n: waits until at most the n most recent groups are pending; copies not
// committed to a group are not waited for.
inline void ptx_cp_async_wait(int n) {
  ThreadAsync& a = thread_async();
  while (static_cast<int>(a.groups.size()) > n) {
    for (const AsyncCopy& c : a.groups.front()) {
      if (c.src_bytes > 0) std::memcpy(c.dst, c.src, c.src_bytes);
      std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
    }
    a.groups.pop_front();
  }
}

// ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16: lanes 8i..8i+7 give the addresses of the
// 8 rows (16 bytes each) of matrix i. Register i of lane l holds, without .trans, row l/4,
// elements 2(l%4) and 2(l%4)+1; with .trans, elements (2(l%4), l/4) and (2(l%4)+1, l/4).
inline void ptx_ldmatrix(int num, bool trans, const void* row, uint32_t* regs) {
  warp_collective(kOpLdmatrix + 2 * num + (trans ? 1 : 0), nullptr, 0, row, regs, num, [&](WarpSlot& s) {
    for (int i = 0; i < num; ++i) {
      uint16_t m[8][8];
      for (int r = 0; r < 8; ++r) {
        const void* p = s.ptr[8 * i + r];
        if (p == nullptr || !aligned_to(p, 16))
          throw std::runtime_error("emulated ldmatrix: a row address is null or not 16-byte aligned");
        std::memcpy(m[r], p, 16);
      }
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        const uint16_t lo = trans ? m[2 * t][g] : m[g][2 * t];
        const uint16_t hi = trans ? m[2 * t + 1][g] : m[g][2 * t + 1];
        s.out[lane][i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
      }
    }
  });
}

inline float b16_to_float(uint16_t bits, bool bf16) {
  if (bf16) return hgk_bits_float(static_cast<uint32_t>(bits) << 16);
  __half h;
  h.bits = bits;
  return __half2float(h);
}

// D = A·B + C for a 16×8 output with K = 16 or 8, products added in k order, written back as each
// lane's d[0..3]: d[i] is row g + 8(i/2), column 2t + i%2 (the same C/D layout for both shapes).
template <int K, typename Slot>
inline void mma_accumulate(const float (&A)[16][K], const float (&B)[K][8], const float (&C)[16][8], Slot& s) {
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
      float acc = C[row][col];
      for (int k = 0; k < K; ++k) acc += A[row][k] * B[k][col];
      s.out[lane][i] = hgk_float_bits(acc);
    }
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 d, a, b, c: D = A·B + C with
// A 16×16 in a[0..3]: a[r] holds row g + 8(r%2), columns 2t + 8(r/2) and +1; B 16×8 in b[0..1]:
// b[r] holds rows 2t + 8r and +1, column g; C and D 16×8 in c[0..3]: c[i] is row g + 8(i/2),
// column 2t + i%2. The products of 16-bit inputs are exact in fp32; they are added in k order.
inline void ptx_mma_m16n8k16(bool bf16, float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  uint32_t in[10];
  std::memcpy(in, a, 16);
  std::memcpy(in + 4, b, 8);
  std::memcpy(in + 6, c, 16);
  uint32_t out[4];
  warp_collective(bf16 ? kOpMmaBf16 : kOpMmaF16, in, 10, nullptr, out, 4, [&](WarpSlot& s) {
    float A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, t = lane % 4;
      const uint32_t* r = s.in[lane];
      for (int q = 0; q < 4; ++q) {
        const int row = g + 8 * (q % 2), col = 2 * t + 8 * (q / 2);
        A[row][col] = b16_to_float(static_cast<uint16_t>(r[q] & 0xffffu), bf16);
        A[row][col + 1] = b16_to_float(static_cast<uint16_t>(r[q] >> 16), bf16);
      }
      for (int q = 0; q < 2; ++q) {
        const int k = 2 * t + 8 * q;
        B[k][g] = b16_to_float(static_cast<uint16_t>(r[4 + q] & 0xffffu), bf16);
        B[k + 1][g] = b16_to_float(static_cast<uint16_t>(r[4 + q] >> 16), bf16);
      }
      for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * t + i % 2] = hgk_bits_float(r[6 + i]);
    }
    mma_accumulate<16>(A, B, C, s);
  });
  std::memcpy(d, out, 16);
}

// cvt.rna.tf32.f32: to 10 mantissa bits, rounding to nearest with ties away from zero (kept in an
// fp32 register with the 13 low bits zero); NaN and infinity pass.
inline float ptx_cvt_rna_tf32(float f) {
  uint32_t u = hgk_float_bits(f);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  return hgk_bits_float(u);
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 d, a, b, c: A 16×8 in a[0..3]: a[r] is row
// g + 8(r%2), column t + 4(r/2); B 8×8 in b[0..1]: b[r] is row t + 4r, column g; C, D as for
// m16n8k16. The tensor cores read only the tf32 bits of each operand (the 13 low mantissa bits are
// dropped); the products are then exact in fp32 and added in k order.
inline void ptx_mma_m16n8k8_tf32(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  uint32_t in[10];
  std::memcpy(in, a, 16);
  std::memcpy(in + 4, b, 8);
  std::memcpy(in + 6, c, 16);
  uint32_t out[4];
  warp_collective(kOpMmaTf32, in, 10, nullptr, out, 4, [&](WarpSlot& s) {
    float A[16][8], B[8][8], C[16][8];
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, t = lane % 4;
      const uint32_t* r = s.in[lane];
      for (int q = 0; q < 4; ++q) A[g + 8 * (q % 2)][t + 4 * (q / 2)] = hgk_bits_float(r[q] & 0xffffe000u);
      for (int q = 0; q < 2; ++q) B[t + 4 * q][g] = hgk_bits_float(r[4 + q] & 0xffffe000u);
      for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * t + i % 2] = hgk_bits_float(r[6 + i]);
    }
    mma_accumulate<8>(A, B, C, s);
  });
  std::memcpy(d, out, 16);
}

}  // namespace hgk_emu

// ---- WMMA ---------------------------------------------------------------------------------------
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
  static constexpr int num_elements = rows * cols;
  float x[rows * cols];  // the whole tile, row-major, in fp32 (inputs are exact in fp32)
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  using Frag = fragment<Use, M, N, K, T, Layout>;
  const bool col = std::is_same<Layout, col_major>::value;
  for (int r = 0; r < Frag::rows; ++r)
    for (int c = 0; c < Frag::cols; ++c) f.x[r * Frag::cols + c] = to_float(col ? p[c * ldm + r] : p[r * ldm + c]);
}

template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const float* p, unsigned ldm, layout_t layout) {
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

template <int M, int N, int K, typename Ti, typename La, typename Lb, typename Tc>
inline void mma_sync(fragment<accumulator, M, N, K, Tc, void>& d, const fragment<matrix_a, M, N, K, Ti, La>& a,
                     const fragment<matrix_b, M, N, K, Ti, Lb>& b, const fragment<accumulator, M, N, K, Tc, void>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc += a.x[i * K + k] * b.x[k * N + j];
      out[i * N + j] = acc;
    }
  std::memcpy(d.x, out, sizeof(out));
}

template <int M, int N, int K, typename T>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t layout) {
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}
}  // namespace wmma
}  // namespace nvcuda
