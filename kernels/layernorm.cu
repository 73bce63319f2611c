// LayerNorm forward/backward; the algorithm is described in layernorm.cuh.
#include <stdexcept>
#include <string>

#include "kernels/cuda_common.cuh"
#include "kernels/layernorm.cuh"

namespace vit::cuda {

namespace {
constexpr int kWarps = 8;            // rows (warps) per block
constexpr int kBwdMaxBlocks = 512;   // fixed backward grid cap: fixes the reduction order

template <typename T>
__device__ inline void load16(const T* p, float* f) {
  constexpr int V = 16 / sizeof(T);
  int4 raw = *reinterpret_cast<const int4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < V; ++k) f[k] = to_f32(e[k]);
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
}  // namespace

// NV = 16-byte vectors per lane (the row has C / V vectors, V = 16 / sizeof(T)).
template <typename T, int NV>
__global__ void __launch_bounds__(kWarps * 32) layernorm_fwd_kernel(const T* __restrict__ x, const float* __restrict__ w,
                                                                    const float* __restrict__ b, T* __restrict__ y,
                                                                    float* __restrict__ mean, float* __restrict__ rstd,
                                                                    int R, int C, float eps, bool wb_vec) {
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
        q += d * d;
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
      for (int k = 0; k < V; ++k) o[k] = (v[i][k] - mu) * rs * wv[k] + bv[k];
      store16(yr + vi * V, o);
    }
  }
  if (lane == 0) {
    if (mean) mean[row] = mu;
    if (rstd) rstd[row] = rs;
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
  extern __shared__ float smem[];  // [2][C]: dw partial, db partial
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
}  // namespace

size_t layernorm_bwd_scratch_floats(int R, int C) { return size_t(bwd_blocks(R)) * 2 * C; }

template <typename T>
void layernorm_fwd(const T* x, const float* w, const float* b, T* y, float* mean, float* rstd, int R, int C, float eps,
                   cudaStream_t stream) {
  if (R <= 0) return;
  const int nv = pick_nv<T>(C, "layernorm_fwd");
  check_aligned(x, "layernorm_fwd x");
  check_aligned(y, "layernorm_fwd y");
  const unsigned grid = ceil_div(size_t(R), kWarps);
  const bool wb_vec = ((reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(b)) & 15u) == 0;
#define VIT_LN_FWD(NV) \
  layernorm_fwd_kernel<T, NV><<<grid, kWarps * 32, 0, stream>>>(x, w, b, y, mean, rstd, R, C, eps, wb_vec)
  switch (nv) {
    case 1: VIT_LN_FWD(1); break;
    case 2: VIT_LN_FWD(2); break;
    case 3: VIT_LN_FWD(3); break;
    case 4: VIT_LN_FWD(4); break;
    case 6: VIT_LN_FWD(6); break;
    default: VIT_LN_FWD(8); break;
  }
#undef VIT_LN_FWD
  VIT_LAUNCH_CHECK();
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
#define VIT_LN_BWD(NV)                                                                                          \
  layernorm_bwd_kernel<T, NV><<<blocks, kWarps * 32, smem, stream>>>(x, w, mean, rstd, dy, dx, dx_residual, scratch, \
                                                                     R, C, w_vec)
  switch (nv) {
    case 1: VIT_LN_BWD(1); break;
    case 2: VIT_LN_BWD(2); break;
    case 3: VIT_LN_BWD(3); break;
    case 4: VIT_LN_BWD(4); break;
    case 6: VIT_LN_BWD(6); break;
    default: VIT_LN_BWD(8); break;
  }
#undef VIT_LN_BWD
  VIT_LAUNCH_CHECK();
  layernorm_bwd_param_kernel<<<ceil_div(size_t(C), 256), 256, 0, stream>>>(scratch, dw, db, C, blocks);
  VIT_LAUNCH_CHECK();
}

template void layernorm_fwd<float>(const float*, const float*, const float*, float*, float*, float*, int, int, float,
                                   cudaStream_t);
template void layernorm_fwd<bf16>(const bf16*, const float*, const float*, bf16*, float*, float*, int, int, float,
                                  cudaStream_t);
template void layernorm_bwd<float>(const float*, const float*, const float*, const float*, const float*, float*, float*,
                                   float*, float*, int, int, cudaStream_t, const float*);
template void layernorm_bwd<bf16>(const bf16*, const float*, const float*, const float*, const bf16*, bf16*, float*,
                                  float*, float*, int, int, cudaStream_t, const bf16*);

}  // namespace vit::cuda
