// Elementwise ops: residual add (optionally fused with the dropout of the branch),
// dtype conversion, and the dropout kernels of kernels/cuda/dropout.cuh.
//   add_fwd:               out = a + b                        (out may alias a)
//   residual_dropout_fwd:  out = a + dropout(b; p, seed)      (out may alias a)
//   drop_path:             y = x * keep(sample) / (1 - p)     (stochastic depth; y may alias x)
//   convert:               out = T_out(in)                    (fp32 <-> bf16)
// One thread per element in a grid-stride loop, fp32 arithmetic.
// Test: vitengine_gpu_tests --gtest_filter='*Add*:*Dropout*:*Convert*'
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/dropout.cuh"

namespace vit::cuda {

template <typename T>
void add_fwd(const T* a, const T* b, T* out, size_t n, cudaStream_t stream);
template <typename T>
void residual_dropout_fwd(const T* a, const T* b, T* out, size_t n, float p, uint64_t seed, cudaStream_t stream,
                          const uint64_t* seed_ptr = nullptr);
// Stochastic depth, as vit::cpu::drop_path (kernels/cpu/ops.h): sample b (per_sample values) is
// scaled by 1/(1-p) or zeroed whole, by dropout_keep(seed, b, p). y may alias x; the backward
// is the same call on the gradient.
template <typename T>
void drop_path(const T* x, T* y, int B, size_t per_sample, float p, uint64_t seed, cudaStream_t stream);
template <typename TIn, typename TOut>
void convert(const TIn* in, TOut* out, size_t n, cudaStream_t stream);

}  // namespace vit::cuda
