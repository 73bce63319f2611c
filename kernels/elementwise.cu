// Residual add, dropout, conversion; see elementwise.cuh and dropout.cuh.
#include "kernels/cuda_common.cuh"
#include "kernels/elementwise.cuh"

namespace vit::cuda {

#define VIT_GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < (n); i += size_t(gridDim.x) * blockDim.x)

template <typename T>
__global__ void add_fwd_kernel(const T* a, const T* b, T* out, size_t n) {
  VIT_GRID_STRIDE(i, n) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}
template <typename T>
__global__ void residual_dropout_fwd_kernel(const T* a, const T* b, T* out, size_t n, float p, uint64_t seed,
                                            const uint64_t* seed_ptr) {
  if (seed_ptr) seed = *seed_ptr;
  VIT_GRID_STRIDE(i, n) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]) * dropout_scale(seed, i, p));
}
template <typename T>
__global__ void dropout_fwd_kernel(const T* x, T* y, size_t n, float p, uint64_t seed, const uint64_t* seed_ptr) {
  if (seed_ptr) seed = *seed_ptr;
  VIT_GRID_STRIDE(i, n) y[i] = from_f32<T>(to_f32(x[i]) * dropout_scale(seed, i, p));
}
template <typename TIn, typename TOut>
__global__ void convert_kernel(const TIn* in, TOut* out, size_t n) {
  VIT_GRID_STRIDE(i, n) out[i] = from_f32<TOut>(to_f32(in[i]));
}

template <typename T>
void add_fwd(const T* a, const T* b, T* out, size_t n, cudaStream_t stream) {
  if (!n) return;
  add_fwd_kernel<T><<<elementwise_grid(n, 256), 256, 0, stream>>>(a, b, out, n);
  VIT_LAUNCH_CHECK();
}
template <typename T>
void residual_dropout_fwd(const T* a, const T* b, T* out, size_t n, float p, uint64_t seed, cudaStream_t stream,
                          const uint64_t* seed_ptr) {
  if (!n) return;
  residual_dropout_fwd_kernel<T><<<elementwise_grid(n, 256), 256, 0, stream>>>(a, b, out, n, p, seed, seed_ptr);
  VIT_LAUNCH_CHECK();
}
template <typename T>
void dropout_fwd(const T* x, T* y, size_t n, float p, uint64_t seed, cudaStream_t stream, const uint64_t* seed_ptr) {
  if (!n) return;
  dropout_fwd_kernel<T><<<elementwise_grid(n, 256), 256, 0, stream>>>(x, y, n, p, seed, seed_ptr);
  VIT_LAUNCH_CHECK();
}
// Backward of y = x * scale(i) is dx = dy * scale(i): the same kernel.
template <typename T>
void dropout_bwd(const T* dy, T* dx, size_t n, float p, uint64_t seed, cudaStream_t stream, const uint64_t* seed_ptr) {
  dropout_fwd<T>(dy, dx, n, p, seed, stream, seed_ptr);
}
template <typename TIn, typename TOut>
void convert(const TIn* in, TOut* out, size_t n, cudaStream_t stream) {
  if (!n) return;
  convert_kernel<TIn, TOut><<<elementwise_grid(n, 256), 256, 0, stream>>>(in, out, n);
  VIT_LAUNCH_CHECK();
}

#define VIT_INST(T)                                                                                           \
  template void add_fwd<T>(const T*, const T*, T*, size_t, cudaStream_t);                                     \
  template void residual_dropout_fwd<T>(const T*, const T*, T*, size_t, float, uint64_t, cudaStream_t,        \
                                        const uint64_t*);                                                     \
  template void dropout_fwd<T>(const T*, T*, size_t, float, uint64_t, cudaStream_t, const uint64_t*);         \
  template void dropout_bwd<T>(const T*, T*, size_t, float, uint64_t, cudaStream_t, const uint64_t*);
VIT_INST(float)
VIT_INST(bf16)
#undef VIT_INST
template void convert<float, bf16>(const float*, bf16*, size_t, cudaStream_t);
template void convert<bf16, float>(const bf16*, float*, size_t, cudaStream_t);
template void convert<float, float>(const float*, float*, size_t, cudaStream_t);

}  // namespace vit::cuda
