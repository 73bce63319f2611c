// LayerNorm forward/backward; the algorithm is described in layernorm.cuh.
//
// Forward: what limits it, and the launch shapes worth sweeping
// -------------------------------------------------------------
// (Estimates below are arithmetic, not measurements; bench/sandbox/bench_layernorm_shapes.cu
// measures every shape, bench_ops_cuda the two the library keeps.)
// Per bf16 row of C = 768 the kernel moves 1536 bytes in and 1536 out and does ~10 fp32 ops per
// element, so at ViT-B/16 batch 256 (50,432 rows, 155 MB) it is a pure streaming kernel: 2.5 TB/s
// means 62 us. The ALU work is a few us of issue time spread over 132 SMs; what decides the speed
// is whether enough load bytes are in flight all the time and how long each warp spends NOT having
// loads in flight. Little's law: reads at ~1.5 TB/s (half of the traffic) with, say, 1 us of loaded
// DRAM latency need ~1.5 MB in flight, ~12 KB per SM (H100; ~1.4x that on an H200).
// The legacy kernel (one row per warp, 8 warps per block) has per warp, in sequence:
//   1. 3 x 16-byte loads per lane = 1.5 KB in flight, then a full DRAM round trip of nothing else;
//   2. two dependent 5-step shuffle butterflies, an IEEE division and square root;
//   3. 12 float4 loads of w/b per lane (4x the bytes of x itself through L1/LSU per row), a second
//      dependent round trip (an L1 hit at best, L2 once the x stream has evicted them);
//   4. the stores, then the block retires when its slowest warp is done and a new block launches.
// So a warp has load bytes in flight only during step 1 (occupancy has to cover the rest), and the
// per-row w/b traffic competes with x for L1 bandwidth. The knobs:
//   ROWS (1, 2, 4): a warp issues the loads of ROWS rows at once (ROWS x 1.5 KB in flight per warp),
//     runs the ROWS butterflies interleaved (independent shuffles hide each other's latency), and
//     loads each w/b vector once for all ROWS rows (L1 traffic for params / ROWS). mean/rstd of the
//     ROWS rows go out as one store instruction (lane r holds row r) instead of ROWS lane-0 stores.
//     The price is registers: ptxas keeps the fp32 conversions of the loaded vectors, so (bf16,
//     C = 768, ptxas -v for sm_90) 1 row takes 56 registers, 2 rows 88, 4 rows 128 (16 resident
//     warps per SM, i.e. up to 96 KB of x in flight per SM, still far above the ~12 KB needed).
//   WARPS (4, 8, 16) per block: more warps per block = fewer, larger blocks (less block launch and
//     retire overhead); fewer = finer granularity at the tail and when registers limit residency.
//   Persistent grid: exactly the blocks that fit at once, each warp walks row groups with a grid
//     stride and issues the NEXT group's loads before reducing the current one (software
//     prefetch), so a warp always has one group in flight; no block turnover, and w/b stay hot.
// x is read with __ldcs (evict-first: read once) so that the 6 KB of fp32 w/b stay in L1 while
// 77 MB of x streams past; y is stored normally (the next GEMM reads it).
// All variants do the same arithmetic in the same order (explicit fmaf, so host emulation and GPU
// round alike): switching the default changes no bit of the output.
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/layernorm.cuh"

// CPU emulation (tests/test_layernorm_emu.cpp includes this file after tests/emu/cuda_emu.h): the
// code then lives in vit::cuda_emu and launches through emu::launch; nothing else differs.
#include "kernels/cuda/emulation.cuh"

namespace vit::VIT_KERNEL_NS {

#ifdef VIT_CUDA_EMULATE
using ::vit::cuda::bf16, ::vit::cuda::to_f32, ::vit::cuda::from_f32, ::vit::cuda::warp_sum, ::vit::cuda::ceil_div;
using ::vit::cuda::LayerNormFwdVariant, ::vit::cuda::kLayerNormFwdDefault;
#endif

namespace {
constexpr int kWarps = 8;            // rows (warps) per block of the legacy forward and the backward
constexpr int kBwdMaxBlocks = 512;   // fixed backward grid cap: fixes the reduction order
constexpr int kMaxVecsPerLane = 12;  // forward: 16-byte vectors of x a lane may hold (see fwd_rows)

template <typename T>
__device__ inline void unpack16(const int4& raw, float* f) {
  constexpr int V = 16 / sizeof(T);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < V; ++k) f[k] = to_f32(e[k]);
}
template <typename T>
__device__ inline void load16(const T* p, float* f) {
  unpack16<T>(*reinterpret_cast<const int4*>(p), f);
}
template <typename T>
__device__ inline void store16(T* p, const float* f) {
  constexpr int V = 16 / sizeof(T);
  int4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int k = 0; k < V; ++k) e[k] = from_f32<T>(f[k]);
  *reinterpret_cast<int4*>(p) = raw;
}
// V consecutive fp32 parameters starting at p (float4 loads when 16-byte aligned).
template <int V>
__device__ inline void load_params(const float* __restrict__ p, bool vec, float* f) {
  if (vec) {
#pragma unroll
    for (int k = 0; k < V; k += 4) {
      const float4 q = __ldg(reinterpret_cast<const float4*>(p + k));
      f[k] = q.x, f[k + 1] = q.y, f[k + 2] = q.z, f[k + 3] = q.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) f[k] = __ldg(p + k);
  }
}
// N independent warp butterflies, step by step: the N shuffles of a step do not wait for each other.
template <int N>
__device__ inline void warp_sum_n(float (&v)[N]) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int r = 0; r < N; ++r) v[r] += __shfl_xor_sync(0xffffffffu, v[r], o);
}
}  // namespace

// ---- forward, legacy shape: one row per warp, kWarps warps per block ----
// NV = 16-byte vectors per lane (the row has C / V vectors, V = 16 / sizeof(T)).
template <typename T, int NV>
__global__ void __launch_bounds__(kWarps * 32)
    layernorm_fwd_legacy_kernel(const T* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                                T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int R, int C,
                                float eps, bool wb_vec) {
  constexpr int V = 16 / sizeof(T);
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (row >= R) return;
  const int nvec = C / V;
  const T* xr = x + size_t(row) * C;
  float v[NV][V];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int vi = lane + i * 32;
    if (vi < nvec) {
      load16(xr + vi * V, v[i]);
#pragma unroll
      for (int k = 0; k < V; ++k) s += v[i][k];
    }
  }
  const float mu = warp_sum(s) / C;
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    if (lane + i * 32 < nvec) {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const float d = v[i][k] - mu;
        q = fmaf(d, d, q);
      }
    }
  }
  const float rs = 1.0f / sqrtf(warp_sum(q) / C + eps);
  T* yr = y + size_t(row) * C;
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int vi = lane + i * 32;
    if (vi < nvec) {
      float o[V], wv[V], bv[V];
      load_params<V>(w + vi * V, wb_vec, wv);
      load_params<V>(b + vi * V, wb_vec, bv);
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = fmaf((v[i][k] - mu) * rs, wv[k], bv[k]);
      store16(yr + vi * V, o);
    }
  }
  if (lane == 0) {
    if (mean) mean[row] = mu;
    if (rstd) rstd[row] = rs;
  }
}

// ---- forward, row groups: ROWS consecutive rows per warp ----
// Issues the loads of rows row0 .. row0+ROWS-1 (those < R) into raw, as loaded (16 bytes each).
template <typename T, int NV, int ROWS>
__device__ inline void ln_load_rows(const T* __restrict__ x, int row0, int R, int C, int lane, int4 (&raw)[ROWS][NV]) {
  constexpr int V = 16 / sizeof(T);
  const int nvec = C / V;
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const T* xr = x + size_t(row0 + r) * C;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int vi = lane + i * 32;
      if (row0 + r < R && vi < nvec)
        raw[r][i] = __ldcs(reinterpret_cast<const int4*>(xr + vi * V));
      else
        raw[r][i] = make_int4(0, 0, 0, 0);
    }
  }
}

// Normalizes the ROWS rows held in raw and stores y (and mean/rstd). Per row the arithmetic and its
// order are those of the legacy kernel: per-lane sums over (i, k) in order, one butterfly, fmaf.
template <typename T, int NV, int ROWS>
__device__ inline void ln_normalize_rows(const int4 (&raw)[ROWS][NV], int row0, const float* __restrict__ w,
                                         const float* __restrict__ b, T* __restrict__ y, float* __restrict__ mean,
                                         float* __restrict__ rstd, int R, int C, float eps, bool wb_vec, int lane) {
  constexpr int V = 16 / sizeof(T);
  const int nvec = C / V;
  float mu[ROWS], rs[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      if (lane + i * 32 < nvec) {
        float f[V];
        unpack16<T>(raw[r][i], f);
#pragma unroll
        for (int k = 0; k < V; ++k) s += f[k];
      }
    }
    mu[r] = s;
  }
  warp_sum_n(mu);
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    mu[r] = mu[r] / C;
    float q = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      if (lane + i * 32 < nvec) {
        float f[V];
        unpack16<T>(raw[r][i], f);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const float d = f[k] - mu[r];
          q = fmaf(d, d, q);
        }
      }
    }
    rs[r] = q;
  }
  warp_sum_n(rs);
#pragma unroll
  for (int r = 0; r < ROWS; ++r) rs[r] = 1.0f / sqrtf(rs[r] / C + eps);
    // Each w/b vector is loaded once and applied to the ROWS rows.
#pragma unroll
  for (int i = 0; i < NV; ++i) {
    const int vi = lane + i * 32;
    if (vi < nvec) {
      float wv[V], bv[V];
      load_params<V>(w + vi * V, wb_vec, wv);
      load_params<V>(b + vi * V, wb_vec, bv);
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        if (row0 + r < R) {
          float f[V];
          unpack16<T>(raw[r][i], f);
#pragma unroll
          for (int k = 0; k < V; ++k) f[k] = fmaf((f[k] - mu[r]) * rs[r], wv[k], bv[k]);
          store16(y + size_t(row0 + r) * C + vi * V, f);
        }
      }
    }
  }
  // Lane r stores the statistics of row r: one store instruction for the group.
  float m = 0.f, rr = 0.f;
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
    if (lane == r) m = mu[r], rr = rs[r];
  if (lane < ROWS && row0 + lane < R) {
    if (mean) mean[row0 + lane] = m;
    if (rstd) rstd[row0 + lane] = rr;
  }
}

// One group of ROWS rows per warp, WARPS warps per block, grid = ceil(R / (ROWS * WARPS)).
template <typename T, int NV, int ROWS, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, 1)
    layernorm_fwd_rows_kernel(const T* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                              T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int R, int C,
                              float eps, bool wb_vec) {
  const int lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * WARPS + (threadIdx.x >> 5)) * ROWS;
  if (row0 >= R) return;  // whole warps only: the butterflies need all 32 lanes
  int4 raw[ROWS][NV];
  ln_load_rows<T, NV, ROWS>(x, row0, R, C, lane, raw);
  ln_normalize_rows<T, NV, ROWS>(raw, row0, w, b, y, mean, rstd, R, C, eps, wb_vec, lane);
}

// Persistent: gridDim.x blocks that are all resident; warp g handles groups g, g + G, g + 2G, ...
// (G = warps in the grid) and loads group n+1 before it normalizes group n. The two register
// buffers swap roles by unrolling the loop twice (a copy would wait for the prefetch to land).
template <typename T, int NV, int ROWS, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, 1)
    layernorm_fwd_persistent_kernel(const T* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                                    T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int R, int C,
                                    float eps, bool wb_vec) {
  const int lane = threadIdx.x & 31;
  const int stride = gridDim.x * WARPS * ROWS;
  int row0 = (blockIdx.x * WARPS + (threadIdx.x >> 5)) * ROWS;
  if (row0 >= R) return;
  int4 a[ROWS][NV], c[ROWS][NV];
  ln_load_rows<T, NV, ROWS>(x, row0, R, C, lane, a);
  for (;;) {
    int next = row0 + stride;
    if (next < R) ln_load_rows<T, NV, ROWS>(x, next, R, C, lane, c);
    ln_normalize_rows<T, NV, ROWS>(a, row0, w, b, y, mean, rstd, R, C, eps, wb_vec, lane);
    if (next >= R) break;
    row0 = next;
    next = row0 + stride;
    if (next < R) ln_load_rows<T, NV, ROWS>(x, next, R, C, lane, a);
    ln_normalize_rows<T, NV, ROWS>(c, row0, w, b, y, mean, rstd, R, C, eps, wb_vec, lane);
    if (next >= R) break;
    row0 = next;
  }
}

template <typename T, int NV>
// (256, 1): bf16 C=768 needs ~140 registers; forcing 2 blocks/SM (128) spills. Memory-level
// parallelism (3-4 outstanding 16-byte loads per lane) is enough at 8 warps/SM.
__global__ void __launch_bounds__(kWarps * 32)
    layernorm_bwd_kernel(const T* __restrict__ x, const float* __restrict__ w, const float* __restrict__ mean,
                         const float* __restrict__ rstd, const T* __restrict__ dy, T* dx, const T* dx_residual,
                         float* __restrict__ scratch, int R, int C, bool w_vec) {
  constexpr int V = 16 / sizeof(T);
#ifdef VIT_CUDA_EMULATE
  float* smem = ::emu::dynamic_smem<float>();
#else
  extern __shared__ float smem[];  // [2][C]: dw partial, db partial
#endif
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nvec = C / V;
  float dw_acc[NV][V], db_acc[NV][V];
#pragma unroll
  for (int i = 0; i < NV; ++i)
#pragma unroll
    for (int k = 0; k < V; ++k) dw_acc[i][k] = db_acc[i][k] = 0.f;

  for (int row = blockIdx.x * kWarps + warp; row < R; row += gridDim.x * kWarps) {
    const float mu = mean[row], rs = rstd[row];
    const T* xr = x + size_t(row) * C;
    const T* dyr = dy + size_t(row) * C;
    float xh[NV][V], g[NV][V];
    float sg = 0.f, sgx = 0.f;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int vi = lane + i * 32;
      if (vi < nvec) {
        float dyv[V], wv[V];
        load16(xr + vi * V, xh[i]);
        load16(dyr + vi * V, dyv);
        load_params<V>(w + vi * V, w_vec, wv);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          xh[i][k] = (xh[i][k] - mu) * rs;
          g[i][k] = dyv[k] * wv[k];
          sg += g[i][k];
          sgx += g[i][k] * xh[i][k];
          dw_acc[i][k] += dyv[k] * xh[i][k];
          db_acc[i][k] += dyv[k];
        }
      }
    }
    const float mg = warp_sum(sg) / C, mgx = warp_sum(sgx) / C;
    T* dxr = dx + size_t(row) * C;
    const T* rr = dx_residual ? dx_residual + size_t(row) * C : nullptr;
#pragma unroll
    for (int i = 0; i < NV; ++i) {
      const int vi = lane + i * 32;
      if (vi < nvec) {
        float o[V];
#pragma unroll
        for (int k = 0; k < V; ++k) o[k] = rs * (g[i][k] - mg - xh[i][k] * mgx);
        if (rr) {
          float r[V];
          load16(rr + vi * V, r);
#pragma unroll
          for (int k = 0; k < V; ++k) o[k] += r[k];
        }
        store16(dxr + vi * V, o);
      }
    }
  }
  // Block reduction of the per-lane partials, warps in a fixed order.
  for (int wv = 0; wv < kWarps; ++wv) {
    if (warp == wv) {
#pragma unroll
      for (int i = 0; i < NV; ++i) {
        const int vi = lane + i * 32;
        if (vi < nvec) {
#pragma unroll
          for (int k = 0; k < V; ++k) {
            const int c = vi * V + k;
            smem[c] = (wv == 0 ? 0.f : smem[c]) + dw_acc[i][k];
            smem[C + c] = (wv == 0 ? 0.f : smem[C + c]) + db_acc[i][k];
          }
        }
      }
    }
    __syncthreads();
  }
  for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) scratch[size_t(blockIdx.x) * 2 * C + c] = smem[c];
}

__global__ void layernorm_bwd_param_kernel(const float* __restrict__ scratch, float* dw, float* db, int C, int blocks) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sw = 0.f, sb = 0.f;
  for (int j = 0; j < blocks; ++j) {
    sw += scratch[size_t(j) * 2 * C + c];
    sb += scratch[size_t(j) * 2 * C + C + c];
  }
  dw[c] += sw;
  db[c] += sb;
}

namespace {
template <typename T>
int pick_nv(int C, const char* what) {
  constexpr int V = 16 / sizeof(T);
  if (C <= 0 || C % V != 0 || C > 8 * 32 * V)
    throw std::invalid_argument(std::string(what) + ": C=" + std::to_string(C) + " must be a positive multiple of " +
                                std::to_string(V) + " and <= " + std::to_string(8 * 32 * V));
  const int need = (C / V + 31) / 32;
  return need <= 1 ? 1 : need <= 2 ? 2 : need <= 3 ? 3 : need <= 4 ? 4 : need <= 6 ? 6 : 8;
}
void check_aligned(const void* p, const char* what) {
  if (p && (reinterpret_cast<uintptr_t>(p) % 16) != 0)
    throw std::invalid_argument(std::string(what) + ": pointer must be 16-byte aligned");
}
int bwd_blocks(int R) { return int(std::min<size_t>(ceil_div(size_t(R), kWarps), kBwdMaxBlocks)); }

// Rows per warp actually compiled for NV vectors per lane: the x vectors a lane holds (ROWS * NV,
// twice that with the persistent prefetch buffer) stay within kMaxVecsPerLane. ptxas keeps each
// vector as 8 fp32 registers (bf16), so 12 vectors take ~128 registers; with 16 (bf16, C = 1024,
// 4 rows, 512 threads per block) it spilled.
constexpr int fwd_rows(int rows, int nv, bool persistent) {
  const int cap = kMaxVecsPerLane / (nv * (persistent ? 2 : 1));
  return rows < cap ? rows : cap < 1 ? 1 : cap;
}

struct FwdArgs {
  const void* x;
  const float *w, *b;
  void* y;
  float *mean, *rstd;
  int R, C;
  float eps;
  bool wb_vec;
  cudaStream_t stream;
};

// Blocks of `kernel` resident per SM (a persistent grid is that times the SM count).
template <typename K>
int resident_blocks_per_sm(K kernel, int threads) {
#ifdef VIT_CUDA_EMULATE
  (void)kernel, (void)threads;
  return 0;
#else
  int per_sm = 0;
  VIT_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  return per_sm > 0 ? per_sm : 1;
#endif
}
unsigned persistent_grid(int per_sm, size_t blocks_needed) {
#ifdef VIT_CUDA_EMULATE
  (void)per_sm;
  return unsigned(std::min<size_t>(blocks_needed, 2));  // 2 blocks: the warps walk several groups each
#else
  int dev = 0, sms = 0;
  VIT_CHECK(cudaGetDevice(&dev));
  VIT_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return unsigned(std::min<size_t>(blocks_needed, size_t(sms) * per_sm));
#endif
}

template <typename T, int NV, int ROWS, int WARPS, bool PERSIST>
void launch_fwd_shape(const FwdArgs& a) {
  constexpr int rows = fwd_rows(ROWS, NV, PERSIST);
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const size_t blocks = ceil_div(size_t(a.R), size_t(rows) * WARPS);
  if constexpr (PERSIST) {
    static const int per_sm =  // one query per instantiation, i.e. per kernel
        resident_blocks_per_sm(layernorm_fwd_persistent_kernel<T, NV, rows, WARPS>, WARPS * 32);
    const unsigned grid = persistent_grid(per_sm, blocks);
    VIT_LAUNCH((layernorm_fwd_persistent_kernel<T, NV, rows, WARPS>), grid, WARPS * 32, 0, a.stream, x, a.w, a.b, y,
               a.mean, a.rstd, a.R, a.C, a.eps, a.wb_vec);
  } else {
    VIT_LAUNCH((layernorm_fwd_rows_kernel<T, NV, rows, WARPS>), unsigned(blocks), WARPS * 32, 0, a.stream, x, a.w, a.b,
               y, a.mean, a.rstd, a.R, a.C, a.eps, a.wb_vec);
  }
}
template <typename T, int NV>
void launch_fwd_legacy(const FwdArgs& a) {
  VIT_LAUNCH((layernorm_fwd_legacy_kernel<T, NV>), ceil_div(size_t(a.R), kWarps), kWarps * 32, 0, a.stream,
             static_cast<const T*>(a.x), a.w, a.b, static_cast<T*>(a.y), a.mean, a.rstd, a.R, a.C, a.eps, a.wb_vec);
}

template <typename T, int NV>
void launch_fwd(LayerNormFwdVariant v, const FwdArgs& a) {
  switch (v) {
    case LayerNormFwdVariant::kDefault:
      return launch_fwd_shape<T, NV, 2, 4, false>(a);
    case LayerNormFwdVariant::kReference:
      return launch_fwd_legacy<T, NV>(a);
    case LayerNormFwdVariant::kCount:
      break;
  }
  throw std::invalid_argument("layernorm_fwd: unknown variant " + std::to_string(int(v)));
}

// Calls launch<NV>() with the compile-time vector count per lane for C (pick_nv's choice).
template <typename F>
void with_nv(int nv, F&& launch) {
  switch (nv) {
    case 1:
      return launch(std::integral_constant<int, 1>{});
    case 2:
      return launch(std::integral_constant<int, 2>{});
    case 3:
      return launch(std::integral_constant<int, 3>{});
    case 4:
      return launch(std::integral_constant<int, 4>{});
    case 6:
      return launch(std::integral_constant<int, 6>{});
    default:
      return launch(std::integral_constant<int, 8>{});
  }
}

// The checks and arguments every forward launch shares.
template <typename T>
FwdArgs fwd_args(const T* x, const float* w, const float* b, T* y, float* mean, float* rstd, int R, int C, float eps,
                 cudaStream_t stream) {
  check_aligned(x, "layernorm_fwd x");
  check_aligned(y, "layernorm_fwd y");
  const bool wb_vec = ((reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(b)) & 15u) == 0;
  return FwdArgs{x, w, b, y, mean, rstd, R, C, eps, wb_vec, stream};
}
}  // namespace

const char* layernorm_fwd_variant_name(LayerNormFwdVariant v) {
  switch (v) {
    case LayerNormFwdVariant::kDefault:
      return "rows2_warps4";
    case LayerNormFwdVariant::kReference:
      return "legacy";
    case LayerNormFwdVariant::kCount:
      break;
  }
  return "?";
}

size_t layernorm_bwd_scratch_floats(int R, int C) { return size_t(bwd_blocks(R)) * 2 * C; }

template <typename T>
void layernorm_fwd_variant(LayerNormFwdVariant v, const T* x, const float* w, const float* b, T* y, float* mean,
                           float* rstd, int R, int C, float eps, cudaStream_t stream) {
  if (R <= 0) return;
  const FwdArgs a = fwd_args(x, w, b, y, mean, rstd, R, C, eps, stream);
  with_nv(pick_nv<T>(C, "layernorm_fwd"), [&](auto nv) { launch_fwd<T, decltype(nv)::value>(v, a); });
  VIT_LAUNCH_CHECK();
}

template <typename T>
void layernorm_fwd(const T* x, const float* w, const float* b, T* y, float* mean, float* rstd, int R, int C, float eps,
                   cudaStream_t stream) {
  // qualified: argument-dependent lookup would also find the declaration in vit::cuda under emulation
  ::vit::VIT_KERNEL_NS::layernorm_fwd_variant<T>(kLayerNormFwdDefault, x, w, b, y, mean, rstd, R, C, eps, stream);
}

template <typename T>
void layernorm_bwd(const T* x, const float* w, const float* mean, const float* rstd, const T* dy, T* dx, float* dw,
                   float* db, float* scratch, int R, int C, cudaStream_t stream, const T* dx_residual) {
  if (R <= 0) return;
  const int nv = pick_nv<T>(C, "layernorm_bwd");
  check_aligned(x, "layernorm_bwd x");
  check_aligned(dy, "layernorm_bwd dy");
  check_aligned(dx, "layernorm_bwd dx");
  check_aligned(dx_residual, "layernorm_bwd dx_residual");
  const int blocks = bwd_blocks(R);
  const size_t smem = size_t(2) * C * sizeof(float);
  const bool w_vec = (reinterpret_cast<uintptr_t>(w) & 15u) == 0;
#define VIT_LN_BWD(NV)                                                                                                \
  VIT_LAUNCH((layernorm_bwd_kernel<T, NV>), blocks, kWarps * 32, smem, stream, x, w, mean, rstd, dy, dx, dx_residual, \
             scratch, R, C, w_vec)
  switch (nv) {
    case 1:
      VIT_LN_BWD(1);
      break;
    case 2:
      VIT_LN_BWD(2);
      break;
    case 3:
      VIT_LN_BWD(3);
      break;
    case 4:
      VIT_LN_BWD(4);
      break;
    case 6:
      VIT_LN_BWD(6);
      break;
    default:
      VIT_LN_BWD(8);
      break;
  }
#undef VIT_LN_BWD
  VIT_LAUNCH_CHECK();
  VIT_LAUNCH(layernorm_bwd_param_kernel, ceil_div(size_t(C), 256), 256, 0, stream, scratch, dw, db, C, blocks);
  VIT_LAUNCH_CHECK();
}

template void layernorm_fwd<float>(const float*, const float*, const float*, float*, float*, float*, int, int, float,
                                   cudaStream_t);
template void layernorm_fwd<bf16>(const bf16*, const float*, const float*, bf16*, float*, float*, int, int, float,
                                  cudaStream_t);
template void layernorm_fwd_variant<float>(LayerNormFwdVariant, const float*, const float*, const float*, float*,
                                           float*, float*, int, int, float, cudaStream_t);
template void layernorm_fwd_variant<bf16>(LayerNormFwdVariant, const bf16*, const float*, const float*, bf16*, float*,
                                          float*, int, int, float, cudaStream_t);
template void layernorm_bwd<float>(const float*, const float*, const float*, const float*, const float*, float*, float*,
                                   float*, float*, int, int, cudaStream_t, const float*);
template void layernorm_bwd<bf16>(const bf16*, const float*, const float*, const float*, const bf16*, bf16*, float*,
                                  float*, float*, int, int, cudaStream_t, const bf16*);

}  // namespace vit::VIT_KERNEL_NS
