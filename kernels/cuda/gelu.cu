// Exact-erf GELU; see gelu.cuh. Runs through elementwise_map (cuda_common.cuh): 16-byte
// vector loads/stores when the pointers allow.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/dropout.cuh"
#include "kernels/cuda/gelu.cuh"

namespace vit::cuda {

namespace {
__device__ inline float gelu_f(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ inline float gelu_grad_f(float x) {
  const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
  return cdf + x * pdf;
}
struct GeluFwdOp {
  uint64_t seed = 0;
  const uint64_t* seed_ptr = nullptr;
  __device__ float operator()(size_t, float x, float) const { return gelu_f(x); }
};
struct GeluBwdOp {  // a = x (pre-activation), b = dy; the MLP dropout's mask folded in
  uint64_t seed;
  const uint64_t* seed_ptr;
  float p;
  __device__ float operator()(size_t i, float x, float dy) const {
    return gelu_grad_f(x) * dy * dropout_scale(seed, i, p);
  }
};
}  // namespace

template <typename T>
void gelu_fwd(const T* x, T* y, size_t n, cudaStream_t stream) {
  elementwise_map(x, x, y, n, GeluFwdOp{}, stream);
}
template <typename T>
void gelu_bwd(const T* x, const T* dy, T* dx, size_t n, cudaStream_t stream, float p, uint64_t seed,
              const uint64_t* seed_ptr) {
  elementwise_map(x, dy, dx, n, GeluBwdOp{seed, seed_ptr, p}, stream);
}

template void gelu_fwd<float>(const float*, float*, size_t, cudaStream_t);
template void gelu_fwd<bf16>(const bf16*, bf16*, size_t, cudaStream_t);
template void gelu_bwd<float>(const float*, const float*, float*, size_t, cudaStream_t, float, uint64_t,
                              const uint64_t*);
template void gelu_bwd<bf16>(const bf16*, const bf16*, bf16*, size_t, cudaStream_t, float, uint64_t, const uint64_t*);

}  // namespace vit::cuda
