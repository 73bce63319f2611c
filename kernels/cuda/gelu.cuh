// Exact-erf GELU (torch.nn.GELU() default; NOT the tanh approximation that cuBLASLt's
// GELU epilogue computes), forward and backward, fp32 math:
//   gelu(x)  = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
//   gelu'(x) = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
// The backward can fold in the dropout that follows the GELU in torchvision's MLP:
// dx = gelu'(x) * dy * scale(i) (scale from kernels/cuda/dropout.cuh; p = 0 means none).
// Test: vitengine_gpu_tests --gtest_filter='*Gelu*'; bench: bench_ops_cuda --benchmark_filter=Gelu
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace vit::cuda {

template <typename T>
void gelu_fwd(const T* x, T* y, size_t n, cudaStream_t stream);
// dx may alias dy.
template <typename T>
void gelu_bwd(const T* x, const T* dy, T* dx, size_t n, cudaStream_t stream, float dropout_p = 0.f,
              uint64_t dropout_seed = 0, const uint64_t* seed_ptr = nullptr);

}  // namespace vit::cuda
