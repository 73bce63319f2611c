// Residual add, dropout, conversion; see elementwise.cuh and dropout.cuh.
// add / dropout / residual+dropout go through elementwise_map (cuda_common.cuh): 16-byte
// vector loads and stores when the pointers allow, the same element index either way.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace vit::cuda {

namespace {
struct AddOp {
  uint64_t seed = 0;
  const uint64_t* seed_ptr = nullptr;
  __device__ float operator()(size_t, float a, float b) const { return a + b; }
};
struct ResidualDropoutOp {
  uint64_t seed;
  const uint64_t* seed_ptr;
  float p;
  __device__ float operator()(size_t i, float a, float b) const { return a + b * dropout_scale(seed, i, p); }
};
struct DropoutOp {  // b is a (unused)
  uint64_t seed;
  const uint64_t* seed_ptr;
  float p;
  __device__ float operator()(size_t i, float a, float) const { return a * dropout_scale(seed, i, p); }
};
struct DropPathOp {  // b is a (unused); element i belongs to sample i / per_sample
  uint64_t seed;
  const uint64_t* seed_ptr;
  float p;
  size_t per_sample;
  __device__ float operator()(size_t i, float a, float) const {
    return a * dropout_scale(seed, uint64_t(i / per_sample), p);
  }
};
}  // namespace

template <typename TIn, typename TOut>
__global__ void convert_kernel(const TIn* in, TOut* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = from_f32<TOut>(to_f32(in[i]));
}

template <typename T>
void add_fwd(const T* a, const T* b, T* out, size_t n, cudaStream_t stream) {
  elementwise_map(a, b, out, n, AddOp{}, stream);
}
template <typename T>
void residual_dropout_fwd(const T* a, const T* b, T* out, size_t n, float p, uint64_t seed, cudaStream_t stream,
                          const uint64_t* seed_ptr) {
  if (p <= 0.f) return add_fwd<T>(a, b, out, n, stream);
  elementwise_map(a, b, out, n, ResidualDropoutOp{seed, seed_ptr, p}, stream);
}
template <typename T>
void dropout_fwd(const T* x, T* y, size_t n, float p, uint64_t seed, cudaStream_t stream, const uint64_t* seed_ptr) {
  elementwise_map(x, x, y, n, DropoutOp{seed, seed_ptr, p}, stream);
}
// Backward of y = x * scale(i) is dx = dy * scale(i): the same kernel.
template <typename T>
void dropout_bwd(const T* dy, T* dx, size_t n, float p, uint64_t seed, cudaStream_t stream, const uint64_t* seed_ptr) {
  dropout_fwd<T>(dy, dx, n, p, seed, stream, seed_ptr);
}
template <typename T>
void drop_path(const T* x, T* y, int B, size_t per_sample, float p, uint64_t seed, cudaStream_t stream) {
  elementwise_map(x, x, y, size_t(B) * per_sample, DropPathOp{seed, nullptr, p, per_sample}, stream);
}
template <typename TIn, typename TOut>
void convert(const TIn* in, TOut* out, size_t n, cudaStream_t stream) {
  if (!n) return;
  convert_kernel<TIn, TOut><<<elementwise_grid(n, 256), 256, 0, stream>>>(in, out, n);
  VIT_LAUNCH_CHECK();
}

#define VIT_INST(T)                                                                                    \
  template void add_fwd<T>(const T*, const T*, T*, size_t, cudaStream_t);                              \
  template void residual_dropout_fwd<T>(const T*, const T*, T*, size_t, float, uint64_t, cudaStream_t, \
                                        const uint64_t*);                                              \
  template void dropout_fwd<T>(const T*, T*, size_t, float, uint64_t, cudaStream_t, const uint64_t*);  \
  template void dropout_bwd<T>(const T*, T*, size_t, float, uint64_t, cudaStream_t, const uint64_t*);  \
  template void drop_path<T>(const T*, T*, int, size_t, float, uint64_t, cudaStream_t);
VIT_INST(float)
VIT_INST(bf16)
#undef VIT_INST
template void convert<float, bf16>(const float*, bf16*, size_t, cudaStream_t);
template void convert<bf16, float>(const bf16*, float*, size_t, cudaStream_t);
template void convert<float, float>(const float*, float*, size_t, cudaStream_t);

}  // namespace vit::cuda
