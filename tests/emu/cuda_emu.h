// A tiny CPU emulator of the CUDA features the hand-written kernels use, so that kernel source can be
// compiled by the host compiler and run in the CPU test binary (CI has no GPU).
//
// Model: one thread block at a time; each CUDA thread is a cooperative fiber (ucontext) that runs until
// it reaches a barrier (__syncthreads, or a warp-collective op), then yields. Blocks run one after the
// other, so `__shared__` can simply be `static` (one instance per kernel, reused by every block).
// Emulated, each from the PTX ISA description of the instruction:
//   __syncthreads, __shfl_xor_sync, dynamic shared memory, __ldg/__ldcs/__stcs, mma.sync.m16n8k16 bf16 -> fp32,
//   ldmatrix.x4 (with .trans), cp.async 16 B with zero fill, commit_group / wait_group.
// Each cp.async copy lands at a random legal moment, at issue or at the wait_group that must see it, and
// a random quarter of the warps sits out each scheduling pass, so warps drift apart between barriers:
// a tile read before its wait + barrier, or overwritten while another warp still reads it, gives wrong
// results, as it could on a GPU.
// A __syncthreads that not every thread reaches is reported as a deadlock.
//
// Usage: #include this, then, under #ifdef VIT_CUDA_EMULATE, the kernel source and the test; launch
// with emu::launch(grid, block, [&] { kernel(args...); }). The emulator needs the CUDA headers (for
// __nv_bfloat16) and ucontext; without them this header defines nothing and VIT_CUDA_EMULATE stays
// undefined, so an emulator test compiles to nothing.
#pragma once
#if __has_include(<cuda_bf16.h>) && __has_include(<ucontext.h>)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#pragma GCC diagnostic ignored "-Wunknown-pragmas"  // #pragma unroll

namespace emu {

constexpr size_t kStackBytes = 256 * 1024;  // per emulated thread

struct PendingCopy {
  void* dst;
  const void* src;
  bool valid;
};
struct Fiber {
  ucontext_t ctx{};
  char* stack = nullptr;  // from stack_pool()
  unsigned tid = 0;
  bool done = false;
  std::vector<std::vector<PendingCopy>> groups;  // committed cp.async groups, oldest first
  std::vector<PendingCopy> open;                 // issued, not yet committed
};
struct Slot {  // per-thread exchange area for warp-collective ops
  uint32_t a[4], b[2];
  float c[4], f;
  const void* addr;
};

struct Block {
  std::vector<Fiber> fibers;
  ucontext_t sched{};
  unsigned nthreads = 0;
  unsigned block_arrived = 0;
  uint64_t block_gen = 0;
  std::vector<unsigned> warp_arrived;
  std::vector<uint64_t> warp_gen;
  std::vector<Slot> slots;
  uint64_t progress = 0;
  std::function<void()> body;
};

inline Block*& cur_block() {
  static Block* b = nullptr;
  return b;
}
inline Fiber*& cur_fiber() {
  static Fiber* f = nullptr;
  return f;
}
inline dim3& cur_block_idx() {
  static dim3 d;
  return d;
}
inline dim3& cur_block_dim() {
  static dim3 d;
  return d;
}
inline dim3& cur_grid_dim() {
  static dim3 d;
  return d;
}
inline dim3 thread_idx() {
  const unsigned t = cur_fiber()->tid, bx = cur_block_dim().x, by = cur_block_dim().y;
  return dim3(t % bx, (t / bx) % by, t / (bx * by));
}

inline void yield() { swapcontext(&cur_fiber()->ctx, &cur_block()->sched); }

inline void block_barrier() {
  Block& B = *cur_block();
  const uint64_t gen = B.block_gen;
  if (++B.block_arrived == B.nthreads) {
    B.block_arrived = 0;
    ++B.block_gen;
    ++B.progress;
    return;
  }
  while (B.block_gen == gen) yield();
}
inline void warp_barrier() {
  Block& B = *cur_block();
  const unsigned w = cur_fiber()->tid / 32;
  const unsigned size = std::min(32u, B.nthreads - w * 32);
  const uint64_t gen = B.warp_gen[w];
  if (++B.warp_arrived[w] == size) {
    B.warp_arrived[w] = 0;
    ++B.warp_gen[w];
    ++B.progress;
    return;
  }
  while (B.warp_gen[w] == gen) yield();
}

inline std::mt19937& rng() {
  static std::mt19937 r(12345);
  return r;
}

inline void trampoline() {
  cur_block()->body();
  cur_fiber()->done = true;
  ++cur_block()->progress;
  // returning switches to uc_link (the scheduler)
}

// Fiber stacks, reused by every block and launch (allocated once, never zero-filled).
inline char* stack_pool(unsigned tid) {
  static std::vector<std::unique_ptr<char[]>> pool;
  while (pool.size() <= tid) pool.emplace_back(new char[kStackBytes]);
  return pool[tid].get();
}

// Dynamic shared memory (extern __shared__) of the running launch; kernels fetch it with
// dynamic_smem<T>() under VIT_CUDA_EMULATE. Filled with NaN bytes at each block: a kernel that
// reads it before writing it sees garbage, as on a GPU.
inline std::vector<unsigned char>& dyn_smem_buf() {
  static std::vector<unsigned char> b;
  return b;
}
template <typename T>
inline T* dynamic_smem() {
  return reinterpret_cast<T*>(dyn_smem_buf().data());
}

// Runs body() as every thread of every block of the grid (smem_bytes: the dynamic shared memory).
inline void launch(dim3 grid, dim3 block, std::function<void()> body, size_t smem_bytes = 0) {
  const unsigned nthreads = block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024) throw std::invalid_argument("emu::launch: bad block size");
  if (smem_bytes > 227 * 1024) throw std::invalid_argument("emu::launch: too much dynamic shared memory");
  cur_grid_dim() = grid;
  cur_block_dim() = block;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        dyn_smem_buf().assign(smem_bytes + 16, 0xFF);
        Block B;
        B.nthreads = nthreads;
        B.fibers.resize(nthreads);
        B.warp_arrived.assign((nthreads + 31) / 32, 0);
        B.warp_gen.assign((nthreads + 31) / 32, 0);
        B.slots.resize(nthreads);
        B.body = body;
        cur_block() = &B;
        cur_block_idx() = dim3(bx, by, bz);
        for (unsigned t = 0; t < nthreads; ++t) {
          Fiber& f = B.fibers[t];
          f.tid = t;
          f.stack = stack_pool(t);
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack;
          f.ctx.uc_stack.ss_size = kStackBytes;
          f.ctx.uc_link = &B.sched;
          makecontext(&f.ctx, trampoline, 0);
        }
        // Each pass resumes every unfinished fiber once, except that a random quarter of the warps sit
        // the pass out: warps drift apart between block barriers, as they do on a GPU, so a missing
        // __syncthreads between one warp's writes and another's reads shows up as wrong results.
        int idle_passes = 0;
        for (;;) {
          bool all_done = true;
          const uint64_t before = B.progress;
          for (unsigned w = 0; w * 32 < nthreads; ++w) {
            const bool skip = (rng()() % 4) == 0;
            for (unsigned t = w * 32; t < std::min(nthreads, w * 32 + 32); ++t) {
              Fiber& f = B.fibers[t];
              if (f.done) continue;
              all_done = false;
              if (skip) continue;
              cur_fiber() = &f;
              swapcontext(&B.sched, &f.ctx);
            }
          }
          if (all_done) break;
          idle_passes = B.progress == before ? idle_passes + 1 : 0;
          if (idle_passes > 64)
            throw std::runtime_error("emu: deadlock (a barrier that not every thread reaches) in block " +
                                     std::to_string(bx) + "," + std::to_string(by));
        }
        for (auto& f : B.fibers)
          if (!f.groups.empty() || !f.open.empty())
            throw std::runtime_error("emu: kernel exited with cp.async copies never waited for");
        cur_block() = nullptr;
        cur_fiber() = nullptr;
      }
}

// ---- warp-collective ops ----
inline float shfl_xor(float v, int lane_mask) {
  Block& B = *cur_block();
  const unsigned t = cur_fiber()->tid, w0 = t / 32 * 32;
  B.slots[t].f = v;
  warp_barrier();
  const float r = B.slots[w0 + ((t % 32) ^ unsigned(lane_mask))].f;
  warp_barrier();
  return r;
}

inline float bf16_lo(uint32_t r) { return __bfloat162float(__ushort_as_bfloat16(uint16_t(r & 0xffff))); }
inline float bf16_hi(uint32_t r) { return __bfloat162float(__ushort_as_bfloat16(uint16_t(r >> 16))); }
inline float half_of(uint32_t r, int h) { return h ? bf16_hi(r) : bf16_lo(r); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, D = A B + C with fp32 accumulation.
// PTX ISA fragment layouts, g = lane/4, t = lane%4:
//   A (16x16): reg r of lane (g,t) holds rows g + 8*(r&1), cols 2t + 8*(r>>1) + {0,1}
//   B (16x8):  reg r of lane (g,t) holds rows (k) 2t + 8*r + {0,1}, col g
//   C/D (16x8): element e of lane (g,t) is row g + 8*(e>>1), col 2t + (e&1)
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Block& B = *cur_block();
  const unsigned t = cur_fiber()->tid, w0 = t / 32 * 32, lane = t % 32;
  Slot& s = B.slots[t];
  for (int i = 0; i < 4; ++i) s.a[i] = a[i], s.c[i] = d[i];
  s.b[0] = b0;
  s.b[1] = b1;
  warp_barrier();
  auto A = [&](int row, int k) {
    const unsigned src = w0 + unsigned(row % 8) * 4 + unsigned(k % 8) / 2;
    return half_of(B.slots[src].a[(row / 8) + 2 * (k / 8)], k % 2);
  };
  auto Bm = [&](int k, int col) {
    const unsigned src = w0 + unsigned(col) * 4 + unsigned(k % 8) / 2;
    return half_of(B.slots[src].b[k / 8], k % 2);
  };
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int row = int(lane / 4) + 8 * (e >> 1), col = 2 * int(lane % 4) + (e & 1);
    float acc = s.c[e];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * Bm(k, col);
    out[e] = acc;
  }
  warp_barrier();
  for (int e = 0; e < 4; ++e) d[e] = out[e];
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8q..8q+7 give the row addresses (16 bytes,
// 16-byte aligned) of matrix q. Register q of lane l gets row l/4, elements 2(l%4), 2(l%4)+1 of matrix q;
// with .trans, of its transpose (elements [2(l%4)][l/4] and [2(l%4)+1][l/4]).
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row_addr, bool trans) {
  Block& B = *cur_block();
  const unsigned t = cur_fiber()->tid, w0 = t / 32 * 32, lane = t % 32;
  if (reinterpret_cast<uintptr_t>(row_addr) % 16 != 0)
    throw std::runtime_error("emu: ldmatrix row not 16-byte aligned");
  B.slots[t].addr = row_addr;
  warp_barrier();
  uint32_t out[4];
  for (unsigned q = 0; q < 4; ++q) {
    const unsigned c = lane % 4, rr = lane / 4;
    uint16_t lo, hi;
    if (!trans) {
      const uint16_t* row = static_cast<const uint16_t*>(B.slots[w0 + 8 * q + rr].addr);
      lo = row[2 * c];
      hi = row[2 * c + 1];
    } else {
      lo = static_cast<const uint16_t*>(B.slots[w0 + 8 * q + 2 * c].addr)[rr];
      hi = static_cast<const uint16_t*>(B.slots[w0 + 8 * q + 2 * c + 1].addr)[rr];
    }
    out[q] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  warp_barrier();
  for (int q = 0; q < 4; ++q) r[q] = out[q];
}

// ---- cp.async ----
inline void cp_async_16(void* dst, const void* src, bool valid) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 || (valid && reinterpret_cast<uintptr_t>(src) % 16))
    throw std::runtime_error("emu: cp.async address not 16-byte aligned");
  // Lands at a random legal moment: at once (exposes a tile overwritten while another warp still
  // reads it) or at the wait_group that must see it (exposes a tile read before its wait + barrier).
  if (rng()() % 2) {
    if (valid)
      std::memcpy(dst, src, 16);
    else
      std::memset(dst, 0, 16);
    return;
  }
  cur_fiber()->open.push_back({dst, src, valid});
}
inline void cp_async_commit() {
  Fiber& f = *cur_fiber();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}
// wait_group n: all but the newest n committed groups are complete -> perform them now.
inline void cp_async_wait(int n) {
  Fiber& f = *cur_fiber();
  while ((int)f.groups.size() > n) {
    for (const auto& c : f.groups.front()) {
      if (c.valid)
        std::memcpy(c.dst, c.src, 16);
      else
        std::memset(c.dst, 0, 16);
    }
    f.groups.erase(f.groups.begin());
  }
}

}  // namespace emu

// ---- the CUDA names kernel source uses ----
#define VIT_CUDA_EMULATE 1
#undef __global__
#undef __device__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::cur_block_idx())
#define blockDim (::emu::cur_block_dim())
#define gridDim (::emu::cur_grid_dim())
inline void __syncthreads() { ::emu::block_barrier(); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) { return ::emu::shfl_xor(v, lane_mask); }
inline int min(int a, int b) { return a < b ? a : b; }
// Cache-hinted global loads/stores: plain memory accesses on the host.
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}
template <typename T>
inline void __stcs(T* p, T v) {
  *p = v;
}

// ---- what every emulator test does with the kernels' buffers ----
namespace emu {

// 0xFF bytes are NaN in float and bf16: an output element the kernel never writes fails the check.
template <typename T>
void poison(std::vector<T>& x) {
  std::memset(static_cast<void*>(x.data()), 0xFF, x.size() * sizeof(T));
}

inline double to_double(float v) { return v; }
inline double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
std::vector<double> to_double(const std::vector<T>& x) {
  std::vector<double> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = to_double(x[i]);
  return r;
}

}  // namespace emu
#endif  // the CUDA headers and ucontext are available
