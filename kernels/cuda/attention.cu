// Fused multi-head attention on the GPU, forward and backward (flash-attention-2 style).
//
// Math (per batch b, head h; no causal mask; scale = 1/sqrt(Dh)):
//   S = Q K^T * scale          (N, N)   never stored
//   P = softmax_rows(S)        (N, N)   never stored
//   O = P V                    (N, Dh)
//   lse_i = log sum_j exp(S_ij)         saved, (B, H, N) float
// Backward, given dO (recomputing P from Q, K and lse, so nothing N x N is read):
//   delta_i = sum_d dO_id O_id          (= rowsum(P o dP)), into `scratch`
//   dV = P^T dO
//   dP = dO V^T
//   dS = P o (dP - delta)               (softmax backward, o = elementwise)
//   dQ = dS K * scale,  dK = dS^T Q * scale
//
// Shapes: qkv (B, N, 3*D) row-major, D = H*Dh, [q | k | v]; head h = columns h*Dh..h*Dh+Dh-1 of each
// third (torchvision's fused in_proj output). out/dout (B, N, D); lse/scratch (B, H, N) float;
// dqkv (B, N, 3*D) is overwritten with [dq | dk | dv]. Dh must be 32 or 64 (else std::invalid_argument).
//
// Two implementations behind one signature:
//   - T = __nv_bfloat16 (training): tensor cores, mma.sync.m16n8k16 bf16 x bf16 -> fp32 via inline PTX.
//     A block = 4 warps; each warp owns 16-row m-tiles, so the softmax statistics of a row live in the
//     4 lanes of one quad and need only two shuffles. K/V (or Q/dO) tiles of 64 rows stream through
//     double-buffered shared memory with cp.async (zero-filled past N).
//       fwd:     one block per (b, h, 64*MT queries); loop over 64-key tiles with the online softmax.
//       bwd:     (1) delta kernel (16-byte loads, Dh/8 lanes per row); (2) one block per (b, h, 64 keys) loops over
//       64-query tiles and
//                accumulates dK, dV in registers; (3) one block per (b, h, 64 queries) loops over key
//                tiles and accumulates dQ in registers. (3) recomputes S and dP once more instead of
//                using fp32 atomics for dQ: the backward is deterministic (bit-identical run to run) at
//                the cost of 2 extra N^2*Dh matmuls (7 instead of 5).
//     Two variants of the same kernel bodies (kernels/cuda/attention_variant.cuh; the tests check both):
//       kFast (default): ldmatrix fragment loads, MT = 2 m-tiles per warp in the forward;
//       kSimple: plain 32/16-bit shared loads, MT = 1.
//   - T = float (checking mode): the same algorithm in plain fp32 SIMT code, one thread per row.
// Ragged N (197): only the 16-row blocks and 8-key n-tiles that hold a real row are multiplied (see
// "Padding" above the forward kernel); inside them keys >= N get score -inf (P = 0) and zero K/V, and
// query rows >= N are computed on zeros and never written. Everything in the softmax (max, exp, sums,
// lse, delta) is fp32.
//
// Test:  build/vitengine_gpu_tests --gtest_filter='Attention*'   (GPU; ctest label gpu)
//        build/test_kernels --gtest_filter='*AttentionEmu*'   (CPU emulation, see below; label cpu)
// Bench: build/bench_attention  (B=256 H=12 N=197 Dh=64, bf16, both variants; TFLOP/s next to the peak)
//        bench/attention_pytorch.py: PyTorch SDPA on the same shape, same FLOP convention
// Docs:  docs/attention_cuda.md
//
// CPU emulation: tests/test_attention_emu.cpp compiles this file with the host compiler against
// tests/emu/cuda_emu.h (VIT_CUDA_EMULATE), which runs every thread as a fiber and emulates mma.sync,
// ldmatrix and cp.async from their PTX definitions; the code then lives in vit::cuda_emu. The only
// differences are the #ifdef VIT_CUDA_EMULATE lines below (inline PTX, the launch syntax, shared memory
// that starts as NaN).
#include "kernels/cuda/attention.cuh"

#include <cuda_bf16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/attention_variant.cuh"
#include "kernels/cuda/cuda_check.cuh"

#include "kernels/cuda/emulation.cuh"
#define VIT_ATTN_LAUNCH(kernel, blocks, threads, stream, ...) \
  VIT_LAUNCH(kernel, blocks, threads, 0, stream, __VA_ARGS__)

namespace vit::VIT_KERNEL_NS {
namespace {

using bf16 = __nv_bfloat16;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ------------------------------------------------------------------------------------------------
// Small device helpers
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ float to_float(float x) { return x; }
template <typename T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, bf16>)
    return __float2bfloat16_rn(x);
  else
    return x;
}

// Two floats -> one 32-bit register holding two bf16, `lo` in the low half (mma fragment order:
// the lower column / lower k index sits in the low 16 bits).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return uint32_t(__bfloat16_as_ushort(v.x)) | (uint32_t(__bfloat16_as_ushort(v.y)) << 16);
}

// D += A * B for one 16x8x16 tile. A: 16x16 bf16 row-major fragment (4 regs), B: 16x8 bf16
// "col" fragment (2 regs), D: 16x8 fp32 (4 regs). Fragment layouts (PTX ISA, mma.m16n8k16),
// with g = lane/4 (group) and t = lane%4 (thread in group):
//   A: a0 = (row g,   cols 2t,2t+1)  a1 = (row g+8, cols 2t,2t+1)
//      a2 = (row g,   cols 2t+8,+9)  a3 = (row g+8, cols 2t+8,+9)
//   B: b0 = (k 2t,2t+1,   col g)     b1 = (k 2t+8,2t+9, col g)
//   D: d0,d1 = (row g, cols 2t,2t+1) d2,d3 = (row g+8, cols 2t,2t+1)
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifdef VIT_CUDA_EMULATE
  ::emu::mma_m16n8k16_bf16(d, a, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// 16-byte global -> shared copy that bypasses L1; src_bytes = 0 writes 16 zero bytes (zero fill).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
#ifdef VIT_CUDA_EMULATE
  ::emu::cp_async_16(smem, gmem, valid);
#else
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef VIT_CUDA_EMULATE
  ::emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef VIT_CUDA_EMULATE
  ::emu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8q..8q+7 give the addresses of the 8 rows
// (16 bytes each) of matrix q; register q of lane l receives row l/4, elements 2(l%4), 2(l%4)+1 of
// matrix q, or with .trans of its transpose: elements [2(l%4)][l/4] and [2(l%4)+1][l/4].
template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* row) {
#ifdef VIT_CUDA_EMULATE
  ::emu::ldmatrix_x4(r, row, kTrans);
#else
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
#endif
}

// 2^x. On the GPU the MUFU instruction without denormal handling (inputs are <= 0 here, results
// that would be denormal flush to 0, which is what they round to in bf16 anyway).
__device__ __forceinline__ float fast_exp2(float x) {
#ifdef VIT_CUDA_EMULATE
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#endif
}

// ------------------------------------------------------------------------------------------------
// bf16 tensor-core path. Shared tiles are ROWS x Dh bf16 stored as uint16_t with a row pitch of
// Dh + 8 elements: the 16-byte pad shifts each row by 4 banks, which makes every fragment load
// below conflict-free (32-bit loads: rows g = 0..7 hit banks 4g + t; ldmatrix: the 8 rows of a
// matrix hit banks 4r..4r+3).
//
// Two variants share the kernel bodies (template parameters), so that the GPU test can check both:
//   kSimple (MT = 1, LDSM = false): fragments gathered with plain 32/16-bit shared loads, one
//            16-row m-tile per warp. Few assumptions: only mma.sync's fragment layout.
//   kFast   (MT = 2, LDSM = true): fragments loaded with ldmatrix (.trans for the [k][n] tiles), and
//            in the forward two m-tiles per warp (128 query rows per block), so that each K/V
//            fragment read from shared memory feeds two mma instead of one.
// ------------------------------------------------------------------------------------------------
template <int Dh>
struct Tile {
  static constexpr int kPitch = Dh + 8;   // elements
  static constexpr int kChunks = Dh / 8;  // 16-byte chunks per row
};

// Copy rows [row0, row0 + ROWS) of one head (columns col0 .. col0+Dh-1 of a row-major matrix with
// leading dimension ld) into a shared tile. Only the 16-row blocks that hold a row < N are written, rows
// in [N, end of that block) as zeros; the blocks after it are padding that no kernel reads (every
// fragment load and mma below is of a 16-row/16-key block that holds a real row), so neither the copy
// nor the zero fill is issued for them: N = 197's last tile copies 16 rows, not 64. All NT threads
// take part.
template <int ROWS, int Dh, int NT>
__device__ __forceinline__ void load_tile_async(uint16_t* tile, const bf16* base, int ld, int row0, int N, int tid) {
  constexpr int kChunks = Tile<Dh>::kChunks, kPitch = Tile<Dh>::kPitch;
  const int rows = min(ROWS, (N - row0 + 15) / 16 * 16);  // <= 0 when row0 >= N: nothing to copy
#pragma unroll
  for (int idx = tid; idx < ROWS * kChunks; idx += NT) {
    const int r = idx / kChunks, c = idx % kChunks;
    if (r >= rows) break;  // idx grows with the loop, so every later r is past the end too
    const int row = row0 + r;
    const bool valid = row < N;
    const bf16* src = base + (size_t)(valid ? row : 0) * ld + c * 8;
    cp_async_16(tile + r * kPitch + c * 8, src, valid);
  }
}

__device__ __forceinline__ uint32_t ld_smem32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// A fragment of the 16x16 block at (r0, c0) of a row-major shared tile X[row][col].
template <int Dh, bool LDSM>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const uint16_t* X, int r0, int c0, int lane) {
  constexpr int P = Tile<Dh>::kPitch;
  if constexpr (LDSM) {
    // matrices: 0 = rows r0..+7 / cols c0..+7, 1 = rows +8 / cols c0, 2 = rows r0 / cols +8, 3 = both +8
    ldmatrix_x4<false>(a, X + (r0 + (lane & 15)) * P + c0 + (lane >> 4) * 8);
  } else {
    const int g = lane / 4, t = lane % 4;
    a[0] = ld_smem32(X + (r0 + g) * P + c0 + 2 * t);
    a[1] = ld_smem32(X + (r0 + g + 8) * P + c0 + 2 * t);
    a[2] = ld_smem32(X + (r0 + g) * P + c0 + 8 + 2 * t);
    a[3] = ld_smem32(X + (r0 + g + 8) * P + c0 + 8 + 2 * t);
  }
}
// B fragments (b[0], b[1]) of n-tile n0..n0+7 and (b[2], b[3]) of n-tile n0+8..n0+15, k = k0..k0+15,
// from a tile stored [n][k] (B = Y^T), e.g. K in Q K^T: the two k values of a register are adjacent.
template <int Dh, bool LDSM>
__device__ __forceinline__ void load_b_nk_pair(uint32_t (&b)[4], const uint16_t* Y, int n0, int k0, int lane) {
  constexpr int P = Tile<Dh>::kPitch;
  if constexpr (LDSM) {
    // matrices: 0 = n rows n0..+7 / k cols k0..+7, 1 = n0 / k0+8, 2 = n0+8 / k0, 3 = n0+8 / k0+8
    ldmatrix_x4<false>(b, Y + (n0 + ((lane >> 4) & 1) * 8 + (lane & 7)) * P + k0 + ((lane >> 3) & 1) * 8);
  } else {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      b[2 * h] = ld_smem32(Y + (n0 + 8 * h + g) * P + k0 + 2 * t);
      b[2 * h + 1] = ld_smem32(Y + (n0 + 8 * h + g) * P + k0 + 8 + 2 * t);
    }
  }
}
// The same from a tile stored [k][n] (B = Z), e.g. V in P V: the two k values of a register are one
// row apart; ldmatrix.trans transposes 8x8 blocks on the way, the plain path gathers and packs.
template <int Dh, bool LDSM>
__device__ __forceinline__ void load_b_kn_pair(uint32_t (&b)[4], const uint16_t* Z, int k0, int n0, int lane) {
  constexpr int P = Tile<Dh>::kPitch;
  if constexpr (LDSM) {
    // matrices (rows = k): 0 = k0..+7 / n0..+7, 1 = k0+8 / n0, 2 = k0 / n0+8, 3 = k0+8 / n0+8
    ldmatrix_x4<true>(b, Z + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * P + n0 + (lane >> 4) * 8);
  } else {
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint16_t* z = Z + (k0 + 2 * t) * P + n0 + 8 * h + g;
      b[2 * h] = uint32_t(z[0]) | (uint32_t(z[P]) << 16);
      b[2 * h + 1] = uint32_t(z[8 * P]) | (uint32_t(z[9 * P]) << 16);
    }
  }
}
// The S/dS accumulators of key n-tiles 2kk and 2kk+1 are exactly the A fragment of the 16x16 block
// at keys 16kk..16kk+15 (compare the C and A layouts at mma_16816): repack them as bf16.
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

constexpr int kStream = 64;    // rows of each streamed tile (keys in fwd/dQ, queries in dK/dV)
constexpr int kThreads = 128;  // 4 warps x 16 rows per m-tile

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Emulation only (a no-op on the GPU): a GPU block's shared memory holds whatever was there before;
// under the emulator every block's tiles start as NaN (0xFF bytes), so that reading a row that no copy
// wrote (the skipped padding rows of load_tile_async) turns the results into NaN and fails the test.
template <typename... Arrays>
__device__ __forceinline__ void emu_poison_shared(int tid, Arrays&... arrays) {
#ifdef VIT_CUDA_EMULATE
  auto fill = [tid](auto& a) {
    for (size_t i = tid; i < sizeof(a); i += kThreads) reinterpret_cast<unsigned char*>(&a)[i] = 0xFF;
  };
  (fill(arrays), ...);
  __syncthreads();  // before any thread's copies can land
#else
  (void)tid;
  ((void)arrays, ...);
#endif
}

// Padding. N = 197 is not a multiple of the 16-row m-tiles, the 8-key n-tiles or the 64-row streamed
// tiles; padded, every dimension is 256 and the tensor cores would do (256/197)^2 = 1.69x the useful
// work. Every kernel therefore multiplies only the blocks that hold a real row:
//   - rows (queries in fwd/dQ, keys in dK/dV): a warp whose 16 rows are all >= N issues no ldmatrix,
//     mma or exponential; it still copies tiles and meets every __syncthreads. The condition is the
//     same for the 32 lanes of a warp, as mma.sync and ldmatrix require.
//   - the streamed dimension: only the last streamed tile is ragged. It is run by a separate
//     instantiation of the tile body (`last` = std::true_type), where S (or S^T, dP, dP^T) is computed
//     only for the 8-wide n-tiles that hold a row < N and the products with P / dS only for the 16-wide
//     k-steps that do. Full tiles are the std::false_type instantiation: their bounds are the constants
//     8 and 4, so they carry no padding checks at all.
// At N = 197 a warp's rows are 208 (13 m-tiles of 16) instead of 256 and the streamed rows 200 for
// the S-like products (3 x 64 + 8) and 208 for the others (3 x 64 + 16), instead of 256.
//
// Which 16-row group of its block a warp owns: warp w takes group (w + bh) mod 4. The rotation is for
// the ragged last block of a head (N = 197, 64-row blocks: 1 busy warp and 3 idle ones). The warps of a
// block are spread over the SM's four sub-partitions (each with its own scheduler, tensor cores and
// MUFU unit), usually warp w on sub-partition w mod 4. Without the rotation the busy warp would be warp
// 0 in every head, and sub-partition 0 would get 4 units of work per head for 3 on the others.
__device__ __forceinline__ int warp_row_group(int warp, int bh) { return (warp + bh) & 3; }

// Forward. Grid: one block per (b, h, 64*MT-query tile), flattened as blockIdx.x = bh * n_qtiles + qt.
// Warp w owns the query rows mi*64 + wg*16 .. +15 of the block's tile, mi < MT, wg = warp_row_group.
template <int Dh, int MT, bool LDSM>
__global__ void __launch_bounds__(kThreads)
    attention_fwd_kernel(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse, int N, int H,
                         float scale_log2) {
  constexpr int P = Tile<Dh>::kPitch;
  constexpr int KS = Dh / 16;      // k-steps over the head dim
  constexpr int ND = Dh / 8;       // 8-wide n-tiles over the head dim
  constexpr int NK = kStream / 8;  // 8-wide n-tiles over the keys of a tile
  constexpr int BQ = 64 * MT;      // query rows per block
  static_assert(MT == 1 || MT == 2, "the Q tile is staged through buffer 1 of sK (and of sV)");
  __shared__ __align__(16) uint16_t sK[2][kStream * P];
  __shared__ __align__(16) uint16_t sV[2][kStream * P];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  emu_poison_shared(tid, sK, sV);
  const int n_qt = (N + BQ - 1) / BQ;
  const int bh = blockIdx.x / n_qt, q0 = (blockIdx.x % n_qt) * BQ;
  const int b = bh / H, h = bh % H;
  const int wg = warp_row_group(warp, bh);
  const int D = H * Dh, ld = 3 * D;
  // (B, N, 3*D) -> this head's q, k, v: row i at base + i*ld, Dh contiguous columns
  const bf16* Qg = qkv + (size_t)b * N * ld + h * Dh;
  const bf16* Kg = Qg + D;
  const bf16* Vg = Qg + 2 * D;

  // m-tiles with at least one row < N (see "Padding" above). Rows only grow with mi, so a warp
  // with rows_active[0] false has nothing to do at all.
  bool rows_active[MT];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) rows_active[mi] = q0 + mi * 64 + wg * 16 < N;

  // Q rows mi*64.. pass through buffer 1 (of sK for mi = 0, of sV for mi = 1) into registers, once;
  // K/V tile 0 goes to buffer 0 meanwhile.
  load_tile_async<64, Dh, kThreads>(sK[1], Qg, ld, q0, N, tid);
  if (MT == 2) load_tile_async<64, Dh, kThreads>(sV[1], Qg, ld, q0 + 64, N, tid);
  load_tile_async<kStream, Dh, kThreads>(sK[0], Kg, ld, 0, N, tid);
  load_tile_async<kStream, Dh, kThreads>(sV[0], Vg, ld, 0, N, tid);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[MT][KS][4];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
    if (rows_active[mi])  // idle m-tiles' rows were not copied (load_tile_async)
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) load_a<Dh, LDSM>(qa[mi][ks], mi == 0 ? sK[1] : sV[1], wg * 16, ks * 16, lane);
  __syncthreads();  // buffer 1 is free for the first prefetch

  // Per thread and m-tile: rows r = 0 (row g of the warp's 16) and r = 1 (row g+8). m is the running
  // max of the raw scores S_ij = q_i.k_j; l = sum_j 2^((S_ij - m) * scale * log2 e), this lane's columns
  // only until the end.
  float m[MT][2], l[MT][2], o[MT][ND][4];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
    m[mi][0] = m[mi][1] = -INFINITY;
    l[mi][0] = l[mi][1] = 0.f;
#pragma unroll
    for (int nd = 0; nd < ND; ++nd) o[mi][nd][0] = o[mi][nd][1] = o[mi][nd][2] = o[mi][nd][3] = 0.f;
  }

  const int n_kt = (N + kStream - 1) / kStream;
  // One K/V tile; `last` (std::true_type / std::false_type) says at compile time whether it is the
  // ragged last tile (see "Padding").
  auto kv_tile = [&](const int kt, auto last) {
    constexpr bool kLast = decltype(last)::value;
    const int buf = kt & 1;
    const int k0 = kt * kStream;
    const int n8 = kLast ? ceil_div(N - k0, 8) : NK;        // n-tiles of S with a key < N
    const int n16 = kLast ? ceil_div(N - k0, 16) : NK / 2;  // 16-key k-steps of P V with a key < N
    if constexpr (!kLast) {                                 // prefetch the next K/V tile into the other buffer
      load_tile_async<kStream, Dh, kThreads>(sK[buf ^ 1], Kg, ld, k0 + kStream, N, tid);
      load_tile_async<kStream, Dh, kThreads>(sV[buf ^ 1], Vg, ld, k0 + kStream, N, tid);
      cp_async_commit();
      cp_async_wait<1>();  // everything but the prefetch has landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    if (rows_active[0]) {
      // S = Q K^T for this warp's MT x 16 rows x 64 keys; n-tiles past n8 stay 0 and are left out below
      float s[MT][NK][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int nt = 0; nt < NK; ++nt) s[mi][nt][0] = s[mi][nt][1] = s[mi][nt][2] = s[mi][nt][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
#pragma unroll
        for (int np = 0; np < NK / 2; ++np) {
          if (np >= n16) continue;
          uint32_t kb[4];
          load_b_nk_pair<Dh, LDSM>(kb, sK[buf], np * 16, ks * 16, lane);
#pragma unroll
          for (int mi = 0; mi < MT; ++mi) {
            if (!rows_active[mi]) continue;
            mma_16816(s[mi][2 * np], qa[mi][ks], kb[0], kb[1]);
            if (2 * np + 1 < n8) mma_16816(s[mi][2 * np + 1], qa[mi][ks], kb[2], kb[3]);
          }
        }
      if constexpr (kLast) {  // keys >= N inside the live n-tiles get -inf, hence P = 0
#pragma unroll
        for (int nt = 0; nt < NK; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (nt < n8 && k0 + nt * 8 + 2 * t + (e & 1) >= N) {
#pragma unroll
              for (int mi = 0; mi < MT; ++mi) s[mi][nt][e] = -INFINITY;
            }
      }
      // online softmax per row: new max (this lane's columns, then the quad), rescale, exponentiate
      uint32_t pa[MT][kStream / 16][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        if (!rows_active[mi]) continue;
        float mx[2] = {m[mi][0], m[mi][1]};
#pragma unroll
        for (int nt = 0; nt < NK; ++nt) {
          if (nt >= n8) continue;
          mx[0] = fmaxf(mx[0], fmaxf(s[mi][nt][0], s[mi][nt][1]));
          mx[1] = fmaxf(mx[1], fmaxf(s[mi][nt][2], s[mi][nt][3]));
        }
        float corr[2], msc[2], rs[2] = {0.f, 0.f};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
          // mx is finite: key k0 < N is valid in every tile. First tile: m = -inf -> corr = 0.
          corr[r] = fast_exp2((m[mi][r] - mx[r]) * scale_log2);
          m[mi][r] = mx[r];
          msc[r] = mx[r] * scale_log2;
        }
#pragma unroll
        for (int nt = 0; nt < NK; ++nt) {
          if (nt >= n8) continue;  // padding: stays P = 0
          // p = 2^(S*scale*log2e - m*scale*log2e): one FFMA + one MUFU per element
          s[mi][nt][0] = fast_exp2(s[mi][nt][0] * scale_log2 - msc[0]);
          s[mi][nt][1] = fast_exp2(s[mi][nt][1] * scale_log2 - msc[0]);
          s[mi][nt][2] = fast_exp2(s[mi][nt][2] * scale_log2 - msc[1]);
          s[mi][nt][3] = fast_exp2(s[mi][nt][3] * scale_log2 - msc[1]);
          rs[0] += s[mi][nt][0] + s[mi][nt][1];
          rs[1] += s[mi][nt][2] + s[mi][nt][3];
        }
        l[mi][0] = l[mi][0] * corr[0] + rs[0];
        l[mi][1] = l[mi][1] * corr[1] + rs[1];
#pragma unroll
        for (int nd = 0; nd < ND; ++nd) {
          o[mi][nd][0] *= corr[0];
          o[mi][nd][1] *= corr[0];
          o[mi][nd][2] *= corr[1];
          o[mi][nd][3] *= corr[1];
        }
#pragma unroll
        for (int kk = 0; kk < kStream / 16; ++kk) acc_to_a(pa[mi][kk], s[mi][2 * kk], s[mi][2 * kk + 1]);
      }
      // O += P V; k runs over the 64 keys of the tile
#pragma unroll
      for (int kk = 0; kk < kStream / 16; ++kk) {
        if (kk >= n16) continue;  // P = 0 there
#pragma unroll
        for (int np = 0; np < ND / 2; ++np) {
          uint32_t vb[4];
          load_b_kn_pair<Dh, LDSM>(vb, sV[buf], kk * 16, np * 16, lane);
#pragma unroll
          for (int mi = 0; mi < MT; ++mi) {
            if (!rows_active[mi]) continue;
            mma_16816(o[mi][2 * np], pa[mi][kk], vb[0], vb[1]);
            mma_16816(o[mi][2 * np + 1], pa[mi][kk], vb[2], vb[3]);
          }
        }
      }
    }
    // all warps are done with sK/sV[buf] before the next tile's prefetch overwrites it
    if constexpr (!kLast) __syncthreads();
  };
  for (int kt = 0; kt + 1 < n_kt; ++kt) kv_tile(kt, std::false_type{});
  kv_tile(n_kt - 1, std::true_type{});

  // finish: full row sums over the quad, normalise, write O (bf16) and lse (natural log)
  bf16* Og = out + (size_t)b * N * D + h * Dh;  // (B, N, D), this head's columns
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[mi][r] += __shfl_xor_sync(0xffffffffu, l[mi][r], 1);
      l[mi][r] += __shfl_xor_sync(0xffffffffu, l[mi][r], 2);
      const int i = q0 + mi * 64 + wg * 16 + g + 8 * r;
      if (i < N) {
        const float inv = 1.f / l[mi][r];
#pragma unroll
        for (int nd = 0; nd < ND; ++nd)
          *reinterpret_cast<uint32_t*>(Og + (size_t)i * D + nd * 8 + 2 * t) =
              pack_bf16(o[mi][nd][2 * r] * inv, o[mi][nd][2 * r + 1] * inv);
        // lse = ln sum_j e^(S_ij*scale) = (m*scale*log2e + log2 l) * ln 2
        if (t == 0) lse[(size_t)bh * N + i] = (m[mi][r] * scale_log2 + log2f(l[mi][r])) * kLn2;
      }
    }
}

// Backward (1/3): delta_i = sum_d dO_id * O_id; delta is (B, H, N). fp32 path: one warp per (b, h, i) row.
template <typename T>
__global__ void attention_bwd_delta_kernel(const T* __restrict__ out, const T* __restrict__ dout,
                                           float* __restrict__ delta, int B, int N, int H, int Dh) {
  const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // = bh*N + i
  const int lane = threadIdx.x % 32;
  if (row >= (long long)B * H * N) return;
  const int i = int(row % N);
  const int bh = int(row / N), b = bh / H, h = bh % H;
  const size_t off = ((size_t)b * N + i) * (size_t)H * Dh + (size_t)h * Dh;  // (B, N, D)
  float acc = 0.f;
  for (int d = lane; d < Dh; d += 32) acc += to_float(out[off + d]) * to_float(dout[off + d]);
#pragma unroll
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) delta[row] = acc;
}

// The same for bf16, vectorised: a row of Dh bf16 is Dh/8 16-byte chunks, so Dh/8 lanes share a row
// (one 16-byte load from out and one from dout each) and a warp covers 32/(Dh/8) rows, where the
// one-warp-per-row version made 2-byte loads and used a whole warp for 128 bytes.
template <int Dh>
__global__ void attention_bwd_delta_bf16_kernel(const bf16* __restrict__ out, const bf16* __restrict__ dout,
                                                float* __restrict__ delta, int B, int N, int H) {
  constexpr int kLanesPerRow = Dh / 8;
  static_assert(32 % kLanesPerRow == 0, "a row's lanes must sit in one warp");
  const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / kLanesPerRow;  // = bh*N + i
  const int part = threadIdx.x % kLanesPerRow;    // which 8 columns of the row
  const bool valid = row < (long long)B * H * N;  // no early return: the shuffles need every lane
  float acc = 0.f;
  if (valid) {
    const int i = int(row % N);
    const int bh = int(row / N), b = bh / H, h = bh % H;
    const size_t off = ((size_t)b * N + i) * (size_t)H * Dh + (size_t)h * Dh + part * 8;  // (B, N, D)
    const uint4 o4 = *reinterpret_cast<const uint4*>(out + off);
    const uint4 d4 = *reinterpret_cast<const uint4*>(dout + off);
    const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(&o4);
    const __nv_bfloat162* d2 = reinterpret_cast<const __nv_bfloat162*>(&d4);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 x = __bfloat1622float2(o2[k]), y = __bfloat1622float2(d2[k]);
      acc += x.x * y.x + x.y * y.y;
    }
  }
#pragma unroll
  for (int o = kLanesPerRow / 2; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (valid && part == 0) delta[row] = acc;
}

// Backward (2/3): dK, dV. One block per (b, h, 64-key tile); each warp owns 16 keys and streams over
// all query tiles. Works with the transposes, S^T = K Q^T (keys x queries), so that the warp's rows
// are keys and dK/dV accumulate in registers with no reduction across warps.
template <int Dh, bool LDSM>
__global__ void __launch_bounds__(kThreads)
    attention_bwd_dkdv_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ dout,
                              const float* __restrict__ lse, const float* __restrict__ delta, bf16* __restrict__ dqkv,
                              int N, int H, float scale, float scale_log2) {
  constexpr int P = Tile<Dh>::kPitch;
  constexpr int KS = Dh / 16, ND = Dh / 8, NQ = kStream / 8;
  constexpr int BK = 64;  // keys per block
  __shared__ __align__(16) uint16_t sQ[2][kStream * P];
  __shared__ __align__(16) uint16_t sdO[2][kStream * P];
  __shared__ float sL[2][kStream];  // lse * log2(e), +inf past N (-> P = 0)
  __shared__ float sD[2][kStream];  // delta, 0 past N

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  emu_poison_shared(tid, sQ, sdO, sL, sD);
  const int n_kt = (N + BK - 1) / BK;
  const int bh = blockIdx.x / n_kt, k0 = (blockIdx.x % n_kt) * BK;
  const int b = bh / H, h = bh % H;
  const int wg = warp_row_group(warp, bh);  // this warp's keys: k0 + wg*16 .. +15
  const int D = H * Dh, ld = 3 * D;
  const bf16* Qg = qkv + (size_t)b * N * ld + h * Dh;
  const bf16* Kg = Qg + D;
  const bf16* Vg = Qg + 2 * D;
  const bf16* dOg = dout + (size_t)b * N * D + h * Dh;  // (B, N, D)
  const float* lse_bh = lse + (size_t)bh * N;
  const float* delta_bh = delta + (size_t)bh * N;
  // a warp whose 16 keys are all >= N does no math (see "Padding" above the forward)
  const bool keys_active = k0 + wg * 16 < N;

  // K and V of this block's keys pass through buffer 1 into registers (A fragments), once.
  load_tile_async<BK, Dh, kThreads>(sQ[1], Kg, ld, k0, N, tid);
  load_tile_async<BK, Dh, kThreads>(sdO[1], Vg, ld, k0, N, tid);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t ka[KS][4], va[KS][4];
  if (keys_active) {
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      load_a<Dh, LDSM>(ka[ks], sQ[1], wg * 16, ks * 16, lane);
      load_a<Dh, LDSM>(va[ks], sdO[1], wg * 16, ks * 16, lane);
    }
  }
  __syncthreads();  // buffer 1 is free again

  auto load_q_tile = [&](int buf, int qt) {
    const int q0 = qt * kStream;
    load_tile_async<kStream, Dh, kThreads>(sQ[buf], Qg, ld, q0, N, tid);
    load_tile_async<kStream, Dh, kThreads>(sdO[buf], dOg, D, q0, N, tid);
    cp_async_commit();
    for (int r = tid; r < kStream; r += kThreads) {
      const int i = q0 + r;
      sL[buf][r] = i < N ? lse_bh[i] * kLog2e : INFINITY;
      sD[buf][r] = i < N ? delta_bh[i] : 0.f;
    }
  };

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[nd][e] = dv[nd][e] = 0.f;

  const int n_qt = (N + kStream - 1) / kStream;
  // One query tile; `last` says at compile time whether it is the ragged last one (see "Padding").
  auto q_tile = [&](const int qt, auto last) {
    constexpr bool kLast = decltype(last)::value;
    const int buf = qt & 1;
    const int q0 = qt * kStream;
    const int n8 = kLast ? ceil_div(N - q0, 8) : NQ;        // n-tiles of S^T, dP^T with a query < N
    const int n16 = kLast ? ceil_div(N - q0, 16) : NQ / 2;  // 16-query k-steps of dV, dK with one
    if constexpr (!kLast) {
      load_q_tile(buf ^ 1, qt + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    if (keys_active) {
      // S^T = K Q^T and dP^T = V dO^T: this warp's 16 keys x 64 queries each; n-tiles past n8 stay 0
      float pt[NQ][4], dst[NQ][4];
#pragma unroll
      for (int nq = 0; nq < NQ; ++nq)
#pragma unroll
        for (int e = 0; e < 4; ++e) pt[nq][e] = dst[nq][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
#pragma unroll
        for (int np = 0; np < NQ / 2; ++np) {
          if (np >= n16) continue;
          uint32_t qb[4], ob[4];
          load_b_nk_pair<Dh, LDSM>(qb, sQ[buf], np * 16, ks * 16, lane);
          load_b_nk_pair<Dh, LDSM>(ob, sdO[buf], np * 16, ks * 16, lane);
          mma_16816(pt[2 * np], ka[ks], qb[0], qb[1]);
          mma_16816(dst[2 * np], va[ks], ob[0], ob[1]);
          if (2 * np + 1 < n8) {
            mma_16816(pt[2 * np + 1], ka[ks], qb[2], qb[3]);
            mma_16816(dst[2 * np + 1], va[ks], ob[2], ob[3]);
          }
        }
        // P^T = 2^(S^T*scale*log2e - lse*log2e); dS^T = P^T o (dP^T - delta_query). Queries >= N in the
        // live n-tiles: sL = +inf gives P^T = 0, hence dS^T = 0; the n-tiles past n8 stay 0.
#pragma unroll
      for (int nq = 0; nq < NQ; ++nq) {
        if (nq >= n8) continue;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = nq * 8 + 2 * t + (e & 1);  // query within the tile
          pt[nq][e] = fast_exp2(pt[nq][e] * scale_log2 - sL[buf][col]);
          dst[nq][e] = pt[nq][e] * (dst[nq][e] - sD[buf][col]);
        }
      }
      // dV += P^T dO and dK += dS^T Q (the scale is applied once at the end); k runs over queries
#pragma unroll
      for (int kk = 0; kk < kStream / 16; ++kk) {
        if (kk >= n16) continue;
        uint32_t pa[4], da[4];
        acc_to_a(pa, pt[2 * kk], pt[2 * kk + 1]);
        acc_to_a(da, dst[2 * kk], dst[2 * kk + 1]);
#pragma unroll
        for (int np = 0; np < ND / 2; ++np) {
          uint32_t ob[4], qb[4];
          load_b_kn_pair<Dh, LDSM>(ob, sdO[buf], kk * 16, np * 16, lane);
          load_b_kn_pair<Dh, LDSM>(qb, sQ[buf], kk * 16, np * 16, lane);
          mma_16816(dv[2 * np], pa, ob[0], ob[1]);
          mma_16816(dv[2 * np + 1], pa, ob[2], ob[3]);
          mma_16816(dk[2 * np], da, qb[0], qb[1]);
          mma_16816(dk[2 * np + 1], da, qb[2], qb[3]);
        }
      }
    }
    if constexpr (!kLast) __syncthreads();  // buffer `buf` is refilled by the next tile's prefetch
  };
  load_q_tile(0, 0);
  for (int qt = 0; qt + 1 < n_qt; ++qt) q_tile(qt, std::false_type{});
  q_tile(n_qt - 1, std::true_type{});

  // write dk (scaled) and dv rows of this warp's keys: dqkv (B, N, 3*D), dk at +D, dv at +2D
  bf16* dKg = dqkv + (size_t)b * N * ld + D + h * Dh;
  bf16* dVg = dKg + D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = k0 + wg * 16 + g + 8 * r;
    if (j < N) {
#pragma unroll
      for (int nd = 0; nd < ND; ++nd) {
        *reinterpret_cast<uint32_t*>(dKg + (size_t)j * ld + nd * 8 + 2 * t) =
            pack_bf16(dk[nd][2 * r] * scale, dk[nd][2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(dVg + (size_t)j * ld + nd * 8 + 2 * t) =
            pack_bf16(dv[nd][2 * r], dv[nd][2 * r + 1]);
      }
    }
  }
}

// Backward (3/3): dQ. One block per (b, h, 64-query tile); each warp owns 16 queries and streams over
// all key tiles, recomputing S and dP: dQ = sum over key tiles of dS K (deterministic, no atomics).
template <int Dh, bool LDSM>
__global__ void __launch_bounds__(kThreads)
    attention_bwd_dq_kernel(const bf16* __restrict__ qkv, const bf16* __restrict__ dout, const float* __restrict__ lse,
                            const float* __restrict__ delta, bf16* __restrict__ dqkv, int N, int H, float scale,
                            float scale_log2) {
  constexpr int P = Tile<Dh>::kPitch;
  constexpr int KS = Dh / 16, ND = Dh / 8, NK = kStream / 8;
  constexpr int BQ = 64;  // queries per block
  __shared__ __align__(16) uint16_t sK[2][kStream * P];
  __shared__ __align__(16) uint16_t sV[2][kStream * P];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  emu_poison_shared(tid, sK, sV);
  const int n_qt = (N + BQ - 1) / BQ;
  const int bh = blockIdx.x / n_qt, q0 = (blockIdx.x % n_qt) * BQ;
  const int b = bh / H, h = bh % H;
  const int wg = warp_row_group(warp, bh);  // this warp's queries: q0 + wg*16 .. +15
  const int D = H * Dh, ld = 3 * D;
  const bf16* Qg = qkv + (size_t)b * N * ld + h * Dh;
  const bf16* Kg = Qg + D;
  const bf16* Vg = Qg + 2 * D;
  const bf16* dOg = dout + (size_t)b * N * D + h * Dh;
  // a warp whose 16 rows are all >= N does no math (see "Padding" above the forward)
  const bool rows_active = q0 + wg * 16 < N;

  // Q and dO of this block's rows pass through buffer 1 into registers (A fragments), once; K/V
  // tile 0 goes to buffer 0 meanwhile.
  load_tile_async<BQ, Dh, kThreads>(sK[1], Qg, ld, q0, N, tid);
  load_tile_async<BQ, Dh, kThreads>(sV[1], dOg, D, q0, N, tid);
  load_tile_async<kStream, Dh, kThreads>(sK[0], Kg, ld, 0, N, tid);
  load_tile_async<kStream, Dh, kThreads>(sV[0], Vg, ld, 0, N, tid);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qa[KS][4], doa[KS][4];
  if (rows_active) {
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      load_a<Dh, LDSM>(qa[ks], sK[1], wg * 16, ks * 16, lane);
      load_a<Dh, LDSM>(doa[ks], sV[1], wg * 16, ks * 16, lane);
    }
  }
  __syncthreads();        // buffer 1 is free for the first prefetch
  float lse2[2], dlt[2];  // rows g and g+8 of this warp (finite dummies past N; never written)
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = q0 + wg * 16 + g + 8 * r;
    lse2[r] = i < N ? lse[(size_t)bh * N + i] * kLog2e : 0.f;
    dlt[r] = i < N ? delta[(size_t)bh * N + i] : 0.f;
  }

  float dq[ND][4];
#pragma unroll
  for (int nd = 0; nd < ND; ++nd) dq[nd][0] = dq[nd][1] = dq[nd][2] = dq[nd][3] = 0.f;

  const int n_kt = (N + kStream - 1) / kStream;
  // One K/V tile; `last` says at compile time whether it is the ragged last one (see "Padding").
  auto kv_tile = [&](const int kt, auto last) {
    constexpr bool kLast = decltype(last)::value;
    const int buf = kt & 1;
    const int k0 = kt * kStream;
    const int n8 = kLast ? ceil_div(N - k0, 8) : NK;        // n-tiles of S, dP with a key < N
    const int n16 = kLast ? ceil_div(N - k0, 16) : NK / 2;  // 16-key k-steps of dS K with a key < N
    if constexpr (!kLast) {
      load_tile_async<kStream, Dh, kThreads>(sK[buf ^ 1], Kg, ld, k0 + kStream, N, tid);
      load_tile_async<kStream, Dh, kThreads>(sV[buf ^ 1], Vg, ld, k0 + kStream, N, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    if (rows_active) {
      // S = Q K^T and dP = dO V^T for this warp's 16 rows x 64 keys; n-tiles past n8 stay 0
      float p[NK][4], ds[NK][4];
#pragma unroll
      for (int nt = 0; nt < NK; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) p[nt][e] = ds[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
#pragma unroll
        for (int np = 0; np < NK / 2; ++np) {
          if (np >= n16) continue;
          uint32_t kb[4], vb[4];
          load_b_nk_pair<Dh, LDSM>(kb, sK[buf], np * 16, ks * 16, lane);
          load_b_nk_pair<Dh, LDSM>(vb, sV[buf], np * 16, ks * 16, lane);
          mma_16816(p[2 * np], qa[ks], kb[0], kb[1]);
          mma_16816(ds[2 * np], doa[ks], vb[0], vb[1]);
          if (2 * np + 1 < n8) {
            mma_16816(p[2 * np + 1], qa[ks], kb[2], kb[3]);
            mma_16816(ds[2 * np + 1], doa[ks], vb[2], vb[3]);
          }
        }
        // P = 2^(S*scale*log2e - lse*log2e), 0 for keys >= N (last tile only); dS = P o (dP - delta).
        // The n-tiles past n8 stay dS = 0.
#pragma unroll
      for (int nt = 0; nt < NK; ++nt) {
        if (nt >= n8) continue;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          float pv = fast_exp2(p[nt][e] * scale_log2 - lse2[r]);
          if (kLast && k0 + nt * 8 + 2 * t + (e & 1) >= N) pv = 0.f;
          ds[nt][e] = pv * (ds[nt][e] - dlt[r]);
        }
      }
      // dQ += dS K; k runs over the keys of the tile
#pragma unroll
      for (int kk = 0; kk < kStream / 16; ++kk) {
        if (kk >= n16) continue;
        uint32_t da[4];
        acc_to_a(da, ds[2 * kk], ds[2 * kk + 1]);
#pragma unroll
        for (int np = 0; np < ND / 2; ++np) {
          uint32_t kb[4];
          load_b_kn_pair<Dh, LDSM>(kb, sK[buf], kk * 16, np * 16, lane);
          mma_16816(dq[2 * np], da, kb[0], kb[1]);
          mma_16816(dq[2 * np + 1], da, kb[2], kb[3]);
        }
      }
    }
    if constexpr (!kLast) __syncthreads();  // buffer `buf` is refilled by the next tile's prefetch
  };
  for (int kt = 0; kt + 1 < n_kt; ++kt) kv_tile(kt, std::false_type{});
  kv_tile(n_kt - 1, std::true_type{});

  bf16* dQg = dqkv + (size_t)b * N * ld + h * Dh;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = q0 + wg * 16 + g + 8 * r;
    if (i < N) {
#pragma unroll
      for (int nd = 0; nd < ND; ++nd)
        *reinterpret_cast<uint32_t*>(dQg + (size_t)i * ld + nd * 8 + 2 * t) =
            pack_bf16(dq[nd][2 * r] * scale, dq[nd][2 * r + 1] * scale);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// fp32 SIMT path (checking mode): the same algorithm, one thread per row, no tensor cores.
// ------------------------------------------------------------------------------------------------
constexpr int kSimtRows = 64;    // threads per block = rows a block owns
constexpr int kSimtStream = 16;  // rows of each streamed tile

// Forward: thread = query row; online softmax updated key by key.
template <typename T, int Dh>
__global__ void __launch_bounds__(kSimtRows)
    attention_fwd_simt_kernel(const T* __restrict__ qkv, T* __restrict__ out, float* __restrict__ lse, int N, int H,
                              float scale) {
  __shared__ float sK[kSimtStream][Dh];  // every thread reads the same element: broadcast
  __shared__ float sV[kSimtStream][Dh];
  const int tid = threadIdx.x;
  const int n_qt = (N + kSimtRows - 1) / kSimtRows;
  const int bh = blockIdx.x / n_qt, i = (blockIdx.x % n_qt) * kSimtRows + tid;
  const int b = bh / H, h = bh % H;
  const int D = H * Dh, ld = 3 * D;
  const T* Qg = qkv + (size_t)b * N * ld + h * Dh;
  const T* Kg = Qg + D;
  const T* Vg = Qg + 2 * D;
  const bool valid = i < N;

  float q[Dh], acc[Dh];
#pragma unroll
  for (int d = 0; d < Dh; ++d) {
    q[d] = valid ? to_float(Qg[(size_t)i * ld + d]) * scale : 0.f;
    acc[d] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int k0 = 0; k0 < N; k0 += kSimtStream) {
    __syncthreads();
    for (int idx = tid; idx < kSimtStream * Dh; idx += kSimtRows) {
      const int r = idx / Dh, c = idx % Dh, j = k0 + r;
      sK[r][c] = j < N ? to_float(Kg[(size_t)j * ld + c]) : 0.f;
      sV[r][c] = j < N ? to_float(Vg[(size_t)j * ld + c]) : 0.f;
    }
    __syncthreads();
    const int nk = min(kSimtStream, N - k0);
    for (int jj = 0; jj < nk; ++jj) {
      float s = 0.f;
#pragma unroll
      for (int d = 0; d < Dh; ++d) s += q[d] * sK[jj][d];
      const float m_new = fmaxf(m, s);
      const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
      const float p = expf(s - m_new);
      l = l * corr + p;
#pragma unroll
      for (int d = 0; d < Dh; ++d) acc[d] = acc[d] * corr + p * sV[jj][d];
      m = m_new;
    }
  }
  if (valid) {
    T* Og = out + ((size_t)b * N + i) * D + h * Dh;
    const float inv = 1.f / l;
#pragma unroll
    for (int d = 0; d < Dh; ++d) Og[d] = from_float<T>(acc[d] * inv);
    lse[(size_t)bh * N + i] = m + logf(l);
  }
}

// dK, dV: thread = key row; streams query tiles.
template <typename T, int Dh>
__global__ void __launch_bounds__(kSimtRows)
    attention_bwd_dkdv_simt_kernel(const T* __restrict__ qkv, const T* __restrict__ dout, const float* __restrict__ lse,
                                   const float* __restrict__ delta, T* __restrict__ dqkv, int N, int H, float scale) {
  __shared__ float sK[kSimtRows][Dh + 1];  // each thread reads its own row: pad against bank conflicts
  __shared__ float sV[kSimtRows][Dh + 1];
  __shared__ float sQ[kSimtStream][Dh];  // broadcast reads
  __shared__ float sdO[kSimtStream][Dh];
  __shared__ float sL[kSimtStream], sD[kSimtStream];
  const int tid = threadIdx.x;
  const int n_kt = (N + kSimtRows - 1) / kSimtRows;
  const int bh = blockIdx.x / n_kt, k0 = (blockIdx.x % n_kt) * kSimtRows;
  const int b = bh / H, h = bh % H;
  const int D = H * Dh, ld = 3 * D;
  const T* Qg = qkv + (size_t)b * N * ld + h * Dh;
  const T* Kg = Qg + D;
  const T* Vg = Qg + 2 * D;
  const T* dOg = dout + (size_t)b * N * D + h * Dh;

  for (int idx = tid; idx < kSimtRows * Dh; idx += kSimtRows) {
    const int r = idx / Dh, c = idx % Dh, j = k0 + r;
    sK[r][c] = j < N ? to_float(Kg[(size_t)j * ld + c]) : 0.f;
    sV[r][c] = j < N ? to_float(Vg[(size_t)j * ld + c]) : 0.f;
  }
  float dk[Dh], dv[Dh];
#pragma unroll
  for (int d = 0; d < Dh; ++d) dk[d] = dv[d] = 0.f;

  for (int q0 = 0; q0 < N; q0 += kSimtStream) {
    __syncthreads();
    for (int idx = tid; idx < kSimtStream * Dh; idx += kSimtRows) {
      const int r = idx / Dh, c = idx % Dh, i = q0 + r;
      sQ[r][c] = i < N ? to_float(Qg[(size_t)i * ld + c]) : 0.f;
      sdO[r][c] = i < N ? to_float(dOg[(size_t)i * D + c]) : 0.f;
    }
    if (tid < kSimtStream) {
      const int i = q0 + tid;
      sL[tid] = i < N ? lse[(size_t)bh * N + i] : 0.f;
      sD[tid] = i < N ? delta[(size_t)bh * N + i] : 0.f;
    }
    __syncthreads();
    const int nq = min(kSimtStream, N - q0);
    for (int ii = 0; ii < nq; ++ii) {
      float s = 0.f, dp = 0.f;
#pragma unroll
      for (int d = 0; d < Dh; ++d) {
        s += sQ[ii][d] * sK[tid][d];
        dp += sdO[ii][d] * sV[tid][d];
      }
      const float p = expf(s * scale - sL[ii]);
      const float ds = p * (dp - sD[ii]);
#pragma unroll
      for (int d = 0; d < Dh; ++d) {
        dv[d] += p * sdO[ii][d];
        dk[d] += ds * sQ[ii][d];
      }
    }
  }
  const int j = k0 + tid;
  if (j < N) {
    T* dKg = dqkv + ((size_t)b * N + j) * ld + D + h * Dh;
    T* dVg = dKg + D;
#pragma unroll
    for (int d = 0; d < Dh; ++d) {
      dKg[d] = from_float<T>(dk[d] * scale);
      dVg[d] = from_float<T>(dv[d]);
    }
  }
}

// dQ: thread = query row; streams key tiles.
template <typename T, int Dh>
__global__ void __launch_bounds__(kSimtRows)
    attention_bwd_dq_simt_kernel(const T* __restrict__ qkv, const T* __restrict__ dout, const float* __restrict__ lse,
                                 const float* __restrict__ delta, T* __restrict__ dqkv, int N, int H, float scale) {
  __shared__ float sQ[kSimtRows][Dh + 1];
  __shared__ float sdO[kSimtRows][Dh + 1];
  __shared__ float sK[kSimtStream][Dh];
  __shared__ float sV[kSimtStream][Dh];
  const int tid = threadIdx.x;
  const int n_qt = (N + kSimtRows - 1) / kSimtRows;
  const int bh = blockIdx.x / n_qt, q0 = (blockIdx.x % n_qt) * kSimtRows;
  const int b = bh / H, h = bh % H;
  const int D = H * Dh, ld = 3 * D;
  const T* Qg = qkv + (size_t)b * N * ld + h * Dh;
  const T* Kg = Qg + D;
  const T* Vg = Qg + 2 * D;
  const T* dOg = dout + (size_t)b * N * D + h * Dh;

  for (int idx = tid; idx < kSimtRows * Dh; idx += kSimtRows) {
    const int r = idx / Dh, c = idx % Dh, i = q0 + r;
    sQ[r][c] = i < N ? to_float(Qg[(size_t)i * ld + c]) : 0.f;
    sdO[r][c] = i < N ? to_float(dOg[(size_t)i * D + c]) : 0.f;
  }
  const int i = q0 + tid;
  const float l_i = i < N ? lse[(size_t)bh * N + i] : 0.f;
  const float d_i = i < N ? delta[(size_t)bh * N + i] : 0.f;
  float dq[Dh];
#pragma unroll
  for (int d = 0; d < Dh; ++d) dq[d] = 0.f;

  for (int k0 = 0; k0 < N; k0 += kSimtStream) {
    __syncthreads();
    for (int idx = tid; idx < kSimtStream * Dh; idx += kSimtRows) {
      const int r = idx / Dh, c = idx % Dh, j = k0 + r;
      sK[r][c] = j < N ? to_float(Kg[(size_t)j * ld + c]) : 0.f;
      sV[r][c] = j < N ? to_float(Vg[(size_t)j * ld + c]) : 0.f;
    }
    __syncthreads();
    const int nk = min(kSimtStream, N - k0);
    for (int jj = 0; jj < nk; ++jj) {
      float s = 0.f, dp = 0.f;
#pragma unroll
      for (int d = 0; d < Dh; ++d) {
        s += sQ[tid][d] * sK[jj][d];
        dp += sdO[tid][d] * sV[jj][d];
      }
      const float ds = expf(s * scale - l_i) * (dp - d_i);
#pragma unroll
      for (int d = 0; d < Dh; ++d) dq[d] += ds * sK[jj][d];
    }
  }
  if (i < N) {
    T* dQg = dqkv + ((size_t)b * N + i) * ld + h * Dh;
#pragma unroll
    for (int d = 0; d < Dh; ++d) dQg[d] = from_float<T>(dq[d] * scale);
  }
}

// ------------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------------
void check_shape(const char* fn, int B, int N, int H, int Dh) {
  if (Dh != 32 && Dh != 64)
    throw std::invalid_argument(std::string(fn) + ": head dim Dh = " + std::to_string(Dh) +
                                " is not supported (Dh must be 32 or 64)");
  if (B <= 0 || N <= 0 || H <= 0)
    throw std::invalid_argument(std::string(fn) + ": B, N, H must be positive (got B=" + std::to_string(B) +
                                " N=" + std::to_string(N) + " H=" + std::to_string(H) + ")");
  if ((long long)B * H * ((N + 63) / 64) > 0x7fffffffLL)
    throw std::invalid_argument(std::string(fn) + ": B*H*ceil(N/64) exceeds the grid limit");
}
void check_aligned16(const char* fn, const char* name, const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    throw std::invalid_argument(std::string(fn) + ": " + name +
                                " must be 16-byte aligned for the bf16 kernels (16-byte vector loads)");
}

std::atomic<int> g_variant{int(::vit::cuda::AttentionVariant::kFast)};

template <typename T, int Dh>
void fwd_launch(const T* qkv, T* out, float* lse, int B, int N, int H, cudaStream_t stream) {
  const float scale = 1.0f / std::sqrt(float(Dh));
  if constexpr (std::is_same_v<T, bf16>) {
    if (g_variant.load() == int(::vit::cuda::AttentionVariant::kFast)) {
      constexpr int kMT = 2;  // 128 query rows per block
      const int blocks = B * H * ((N + 64 * kMT - 1) / (64 * kMT));
      auto* kernel = attention_fwd_kernel<Dh, kMT, true>;  // a pointer: template commas would split the macro
      VIT_ATTN_LAUNCH(kernel, blocks, kThreads, stream, qkv, out, lse, N, H, scale * kLog2e);
    } else {
      const int blocks = B * H * ((N + 63) / 64);
      auto* kernel = attention_fwd_kernel<Dh, 1, false>;
      VIT_ATTN_LAUNCH(kernel, blocks, kThreads, stream, qkv, out, lse, N, H, scale * kLog2e);
    }
  } else {
    const int blocks = B * H * ((N + kSimtRows - 1) / kSimtRows);
    auto* kernel = attention_fwd_simt_kernel<T, Dh>;
    VIT_ATTN_LAUNCH(kernel, blocks, kSimtRows, stream, qkv, out, lse, N, H, scale);
  }
  VIT_LAUNCH_CHECK();
}

template <int Dh, bool LDSM>
void bwd_bf16_launch(const bf16* qkv, const bf16* dout, const float* lse, bf16* dqkv, const float* delta, int B, int N,
                     int H, cudaStream_t stream) {
  const float scale = 1.0f / std::sqrt(float(Dh));
  const int blocks = B * H * ((N + 63) / 64);  // 64 keys (dK/dV) or 64 queries (dQ) per block
  auto* dkdv = attention_bwd_dkdv_kernel<Dh, LDSM>;
  VIT_ATTN_LAUNCH(dkdv, blocks, kThreads, stream, qkv, dout, lse, delta, dqkv, N, H, scale, scale * kLog2e);
  VIT_LAUNCH_CHECK();
  auto* dq = attention_bwd_dq_kernel<Dh, LDSM>;
  VIT_ATTN_LAUNCH(dq, blocks, kThreads, stream, qkv, dout, lse, delta, dqkv, N, H, scale, scale * kLog2e);
  VIT_LAUNCH_CHECK();
}

template <typename T, int Dh>
void bwd_launch(const T* qkv, const T* out, const T* dout, const float* lse, T* dqkv, float* delta, int B, int N, int H,
                cudaStream_t stream) {
  const float scale = 1.0f / std::sqrt(float(Dh));
  const long long rows = (long long)B * H * N;
  constexpr int kDeltaThreads = 256;
  if constexpr (std::is_same_v<T, bf16>) {
    constexpr int kRowsPerBlock = kDeltaThreads / (Dh / 8);  // Dh/8 lanes per row
    auto* dk = attention_bwd_delta_bf16_kernel<Dh>;
    VIT_ATTN_LAUNCH(dk, unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock), kDeltaThreads, stream, out, dout, delta,
                    B, N, H);
  } else {
    VIT_ATTN_LAUNCH(attention_bwd_delta_kernel<T>, unsigned((rows + 7) / 8), kDeltaThreads, stream, out, dout, delta, B,
                    N, H, Dh);  // 8 rows (warps) per block
  }
  VIT_LAUNCH_CHECK();
  if constexpr (std::is_same_v<T, bf16>) {
    if (g_variant.load() == int(::vit::cuda::AttentionVariant::kFast))
      bwd_bf16_launch<Dh, true>(qkv, dout, lse, dqkv, delta, B, N, H, stream);
    else
      bwd_bf16_launch<Dh, false>(qkv, dout, lse, dqkv, delta, B, N, H, stream);
  } else {
    const int blocks = B * H * ((N + kSimtRows - 1) / kSimtRows);
    auto* dkdv = attention_bwd_dkdv_simt_kernel<T, Dh>;
    VIT_ATTN_LAUNCH(dkdv, blocks, kSimtRows, stream, qkv, dout, lse, delta, dqkv, N, H, scale);
    VIT_LAUNCH_CHECK();
    auto* dq = attention_bwd_dq_simt_kernel<T, Dh>;
    VIT_ATTN_LAUNCH(dq, blocks, kSimtRows, stream, qkv, dout, lse, delta, dqkv, N, H, scale);
    VIT_LAUNCH_CHECK();
  }
}

}  // namespace

void set_attention_variant(::vit::cuda::AttentionVariant v) { g_variant.store(int(v)); }
::vit::cuda::AttentionVariant attention_variant() { return ::vit::cuda::AttentionVariant(g_variant.load()); }

template <typename T>
void attention_fwd(const T* qkv, T* out, float* lse, const AttnShape& shape, cudaStream_t stream) {
  const int B = shape.B, N = shape.N, H = shape.H, Dh = shape.Dh;
  check_shape("vit::cuda::attention_fwd", B, N, H, Dh);
  if constexpr (std::is_same_v<T, bf16>) {
    check_aligned16("vit::cuda::attention_fwd", "qkv", qkv);
    check_aligned16("vit::cuda::attention_fwd", "out", out);
  }
  if (Dh == 64)
    fwd_launch<T, 64>(qkv, out, lse, B, N, H, stream);
  else
    fwd_launch<T, 32>(qkv, out, lse, B, N, H, stream);
}

template <typename T>
void attention_bwd(const T* qkv, const T* out, const T* dout, const float* lse, T* dqkv, float* scratch,
                   const AttnShape& shape, cudaStream_t stream) {
  const int B = shape.B, N = shape.N, H = shape.H, Dh = shape.Dh;
  check_shape("vit::cuda::attention_bwd", B, N, H, Dh);
  if constexpr (std::is_same_v<T, bf16>) {
    check_aligned16("vit::cuda::attention_bwd", "qkv", qkv);
    check_aligned16("vit::cuda::attention_bwd", "out", out);
    check_aligned16("vit::cuda::attention_bwd", "dout", dout);
    check_aligned16("vit::cuda::attention_bwd", "dqkv", dqkv);
  }
  if (Dh == 64)
    bwd_launch<T, 64>(qkv, out, dout, lse, dqkv, scratch, B, N, H, stream);
  else
    bwd_launch<T, 32>(qkv, out, dout, lse, dqkv, scratch, B, N, H, stream);
}

template void attention_fwd<float>(const float*, float*, float*, const AttnShape&, cudaStream_t);
template void attention_fwd<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, float*, const AttnShape&,
                                           cudaStream_t);
template void attention_bwd<float>(const float*, const float*, const float*, const float*, float*, float*,
                                   const AttnShape&, cudaStream_t);
template void attention_bwd<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                                           const float*, __nv_bfloat16*, float*, const AttnShape&, cudaStream_t);

}  // namespace vit::VIT_KERNEL_NS
