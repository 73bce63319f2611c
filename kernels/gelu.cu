// Exact-erf GELU; see gelu.cuh. One element per thread, grid-stride loop.
#include "kernels/cuda_common.cuh"
#include "kernels/dropout.cuh"
#include "kernels/gelu.cuh"

namespace vit::cuda {

__device__ inline float gelu_f(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ inline float gelu_grad_f(float x) {
  const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * __expf(-0.5f * x * x);
  return cdf + x * pdf;
}

template <typename T>
__global__ void gelu_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(gelu_f(to_f32(x[i])));
}
template <typename T>
__global__ void gelu_bwd_kernel(const T* __restrict__ x, const T* dy, T* dx, size_t n, float p, uint64_t seed,
                                const uint64_t* seed_ptr) {
  if (seed_ptr) seed = *seed_ptr;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dx[i] = from_f32<T>(gelu_grad_f(to_f32(x[i])) * to_f32(dy[i]) * dropout_scale(seed, i, p));
}

template <typename T>
void gelu_fwd(const T* x, T* y, size_t n, cudaStream_t stream) {
  if (!n) return;
  gelu_fwd_kernel<T><<<elementwise_grid(n, 256), 256, 0, stream>>>(x, y, n);
  VIT_LAUNCH_CHECK();
}
template <typename T>
void gelu_bwd(const T* x, const T* dy, T* dx, size_t n, cudaStream_t stream, float p, uint64_t seed,
              const uint64_t* seed_ptr) {
  if (!n) return;
  gelu_bwd_kernel<T><<<elementwise_grid(n, 256), 256, 0, stream>>>(x, dy, dx, n, p, seed, seed_ptr);
  VIT_LAUNCH_CHECK();
}

template void gelu_fwd<float>(const float*, float*, size_t, cudaStream_t);
template void gelu_fwd<bf16>(const bf16*, bf16*, size_t, cudaStream_t);
template void gelu_bwd<float>(const float*, const float*, float*, size_t, cudaStream_t, float, uint64_t,
                              const uint64_t*);
template void gelu_bwd<bf16>(const bf16*, const bf16*, bf16*, size_t, cudaStream_t, float, uint64_t, const uint64_t*);

}  // namespace vit::cuda
