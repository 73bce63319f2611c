// The masked autoencoder's token ops on the GPU; see mae.cuh. Simple one-thread-per-element
// kernels: these ops move B * N * D values once, far less than the blocks around them.
//
// CPU emulation: tests/test_mae_emu.cpp compiles this file with the host compiler against
// tests/emu/cuda_emu.h (VIT_CUDA_EMULATE); the code then lives in vit::cuda_emu
// (kernels/cuda/emulation.cuh).
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/emulation.cuh"
#include "kernels/cuda/mae.cuh"

namespace vit::VIT_KERNEL_NS {

#ifdef VIT_CUDA_EMULATE
using ::vit::cuda::bf16, ::vit::cuda::to_f32, ::vit::cuda::from_f32, ::vit::cuda::warp_sum, ::vit::cuda::ceil_div;
using ::vit::cuda::elementwise_grid;
#endif

namespace {
constexpr int kThreads = 256;

// y[b, k, :] = x[b, idx[b, k], :]
template <typename T>
__global__ void gather_kernel(const T* x, const int* idx, T* y, int B, int N, int K, int D) {
  const size_t n = size_t(B) * K * D;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t bk = i / D, b = bk / K;
    y[i] = x[(b * N + idx[bk]) * D + i % D];
  }
}

// y[b, idx[b, k], :] = x[b, k, :]  (the inverse copy; idx distinct per row, so no write conflicts)
template <typename T>
__global__ void place_kernel(const T* x, const int* idx, T* y, int B, int N, int K, int D) {
  const size_t n = size_t(B) * K * D;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t bk = i / D, b = bk / K;
    y[(b * N + idx[bk]) * D + i % D] = x[i];
  }
}

template <typename T>
__global__ void zero_kernel(T* y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(0.f);
}

template <typename T>
__global__ void fill_rows_kernel(const float* fill, T* y, size_t rows, int D) {
  const size_t n = rows * D;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(fill[i % D]);
}

// dfill[d] += sum of dy over every row, minus the rows that hold a token: one thread per
// column, rows in order (deterministic).
template <typename T>
__global__ void fill_grad_kernel(const T* dy, const int* idx, float* dfill, int B, int N, int K, int D) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  float all = 0.f, placed = 0.f;
  for (size_t r = 0; r < size_t(B) * N; ++r) all += to_f32(dy[r * D + d]);
  for (size_t bk = 0; bk < size_t(B) * K; ++bk) placed += to_f32(dy[((bk / K) * N + idx[bk]) * D + d]);
  dfill[d] += all - placed;
}

template <typename T>
__global__ void add_position_kernel(const T* x, const float* pos, T* y, int B, size_t per) {
  const size_t n = size_t(B) * per;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(to_f32(x[i]) + pos[i % per]);
}

template <typename T>
__global__ void position_grad_kernel(const T* dy, float* dpos, int B, size_t per) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < per; i += size_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int b = 0; b < B; ++b) s += to_f32(dy[b * per + i]);
    dpos[i] += s;
  }
}

// One warp per row: mean, then the unbiased variance around it (two passes, as the CPU).
__global__ void normalize_rows_kernel(float* x, float* mean, float* sd, int R, int K, float eps) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= R) return;
  float* v = x + size_t(row) * K;
  float s = 0.f;
  for (int k = lane; k < K; k += 32) s += v[k];
  const float m = warp_sum(s) / K;
  float ss = 0.f;
  for (int k = lane; k < K; k += 32) ss += (v[k] - m) * (v[k] - m);
  const float d = sqrtf(warp_sum(ss) / (K > 1 ? K - 1 : 1) + eps);
  for (int k = lane; k < K; k += 32) v[k] = (v[k] - m) / d;
  if (lane == 0 && mean) mean[row] = m;
  if (lane == 0 && sd) sd[row] = d;
}

// One warp per row: mask_r * mean_k (pred - target)^2.
template <typename T>
__global__ void row_error_kernel(const T* pred, const float* target, const float* mask, float* err, int R, int K) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= R) return;
  float e = 0.f;
  if (mask[row] != 0.f)
    for (int k = lane; k < K; k += 32) {
      const float d = to_f32(pred[size_t(row) * K + k]) - target[size_t(row) * K + k];
      e += d * d;
    }
  e = warp_sum(e);
  if (lane == 0) err[row] = mask[row] * e / K;
}

// One block: the rows' errors and the mask summed in a fixed order (strided per thread, then a
// fixed tree), loss = errors / hidden rows.
__global__ void mean_over_hidden_kernel(const float* err, const float* mask, float* loss, int R) {
  __shared__ float se[kThreads], sm[kThreads];
  float e = 0.f, m = 0.f;
  for (int r = threadIdx.x; r < R; r += blockDim.x) e += err[r], m += mask[r];
  se[threadIdx.x] = e, sm[threadIdx.x] = m;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) se[threadIdx.x] += se[threadIdx.x + s], sm[threadIdx.x] += sm[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = sm[0] > 0.f ? se[0] / sm[0] : 0.f;
}

template <typename T>
__global__ void mse_grad_kernel(const T* pred, const float* target, const float* mask, T* dpred, int R, int K,
                                float scale) {
  const size_t n = size_t(R) * K;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dpred[i] = from_f32<T>(scale * mask[i / K] * (to_f32(pred[i]) - target[i]));
}
}  // namespace

template <typename T>
void gather_tokens_fwd(const T* x, const int* idx, T* y, int B, int N, int K, int D, cudaStream_t s) {
  VIT_LAUNCH(gather_kernel<T>, elementwise_grid(size_t(B) * K * D, kThreads), kThreads, 0, s, x, idx, y, B, N, K, D);
  VIT_LAUNCH_CHECK();
}

template <typename T>
void gather_tokens_bwd(const T* dy, const int* idx, T* dx, int B, int N, int K, int D, cudaStream_t s) {
  VIT_LAUNCH(zero_kernel<T>, elementwise_grid(size_t(B) * N * D, kThreads), kThreads, 0, s, dx,
             size_t(B) * N * D);  // rows nobody saw get no gradient
  VIT_LAUNCH(place_kernel<T>, elementwise_grid(size_t(B) * K * D, kThreads), kThreads, 0, s, dy, idx, dx, B, N, K, D);
  VIT_LAUNCH_CHECK();
}

template <typename T>
void scatter_tokens_fwd(const T* x, const int* idx, const float* fill, T* y, int B, int N, int K, int D,
                        cudaStream_t s) {
  VIT_LAUNCH(fill_rows_kernel<T>, elementwise_grid(size_t(B) * N * D, kThreads), kThreads, 0, s, fill, y, size_t(B) * N, D);
  VIT_LAUNCH(place_kernel<T>, elementwise_grid(size_t(B) * K * D, kThreads), kThreads, 0, s, x, idx, y, B, N, K, D);
  VIT_LAUNCH_CHECK();
}

template <typename T>
void scatter_tokens_bwd(const T* dy, const int* idx, T* dx, float* dfill, int B, int N, int K, int D,
                        cudaStream_t s) {
  VIT_LAUNCH(gather_kernel<T>, elementwise_grid(size_t(B) * K * D, kThreads), kThreads, 0, s, dy, idx, dx, B, N, K, D);
  VIT_LAUNCH(fill_grad_kernel<T>, ceil_div(D, 128), 128, 0, s, dy, idx, dfill, B, N, K, D);
  VIT_LAUNCH_CHECK();
}

template <typename T>
void add_position_fwd(const T* x, const float* pos, T* y, int B, int N, int D, cudaStream_t s) {
  const size_t per = size_t(N) * D;
  VIT_LAUNCH(add_position_kernel<T>, elementwise_grid(B * per, kThreads), kThreads, 0, s, x, pos, y, B, per);
  VIT_LAUNCH_CHECK();
}

template <typename T>
void add_position_bwd(const T* dy, float* dpos, int B, int N, int D, cudaStream_t s) {
  const size_t per = size_t(N) * D;
  VIT_LAUNCH(position_grad_kernel<T>, elementwise_grid(per, kThreads), kThreads, 0, s, dy, dpos, B, per);
  VIT_LAUNCH_CHECK();
}

void normalize_rows(float* x, float* mean, float* sd, int R, int K, float eps, cudaStream_t s) {
  VIT_LAUNCH(normalize_rows_kernel, ceil_div(R, kThreads / 32), kThreads, 0, s, x, mean, sd, R, K, eps);
  VIT_LAUNCH_CHECK();
}

template <typename T>
void masked_mse_fwd(const T* pred, const float* target, const float* mask, float* row_err, float* loss, int R, int K,
                    cudaStream_t s) {
  VIT_LAUNCH(row_error_kernel<T>, ceil_div(R, kThreads / 32), kThreads, 0, s, pred, target, mask, row_err, R, K);
  VIT_LAUNCH(mean_over_hidden_kernel, 1, kThreads, 0, s, row_err, mask, loss, R);
  VIT_LAUNCH_CHECK();
}

template <typename T>
void masked_mse_bwd(const T* pred, const float* target, const float* mask, T* dpred, int R, int K, float hidden_rows,
                    cudaStream_t s) {
  const float scale = hidden_rows > 0.f ? 2.f / (float(K) * hidden_rows) : 0.f;
  VIT_LAUNCH(mse_grad_kernel<T>, elementwise_grid(size_t(R) * K, kThreads), kThreads, 0, s, pred, target, mask, dpred, R, K,
                                                                                     scale);
  VIT_LAUNCH_CHECK();
}

#define VIT_INST(T)                                                                                               \
  template void gather_tokens_fwd<T>(const T*, const int*, T*, int, int, int, int, cudaStream_t);                 \
  template void gather_tokens_bwd<T>(const T*, const int*, T*, int, int, int, int, cudaStream_t);                 \
  template void scatter_tokens_fwd<T>(const T*, const int*, const float*, T*, int, int, int, int, cudaStream_t);  \
  template void scatter_tokens_bwd<T>(const T*, const int*, T*, float*, int, int, int, int, cudaStream_t);        \
  template void add_position_fwd<T>(const T*, const float*, T*, int, int, int, cudaStream_t);                     \
  template void add_position_bwd<T>(const T*, float*, int, int, int, cudaStream_t);                               \
  template void masked_mse_fwd<T>(const T*, const float*, const float*, float*, float*, int, int, cudaStream_t);   \
  template void masked_mse_bwd<T>(const T*, const float*, const float*, T*, int, int, float, cudaStream_t);
VIT_INST(float)
VIT_INST(bf16)
#undef VIT_INST

}  // namespace vit::VIT_KERNEL_NS
