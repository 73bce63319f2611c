// Dropout with the counter-based mask shared with the CPU path (vit::dropout_keep in
// kernels/common/op_params.h): element i of a call with `seed` is kept iff hash(seed, i) >= p, and kept
// values are scaled by 1/(1-p). No mask is stored: the backward recomputes it from (seed, i),
// so the CPU and CUDA paths draw identical masks.
// `seed_ptr`, when not null, overrides `seed` with a value read on the device, so a CUDA
// graph captured once can draw fresh masks each replay.
// Test: vitengine_gpu_tests --gtest_filter='*Dropout*'
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/common/op_params.h"

namespace vit::cuda {

// The multiplier of element i: 0 (dropped) or 1/(1-p) (kept); 1 when p == 0.
__host__ __device__ inline float dropout_scale(uint64_t seed, uint64_t i, float p) {
  if (p <= 0.f) return 1.f;
  return vit::dropout_keep(seed, i, p) ? 1.f / (1.f - p) : 0.f;
}

template <typename T>
void dropout_fwd(const T* x, T* y, size_t n, float p, uint64_t seed, cudaStream_t stream,
                 const uint64_t* seed_ptr = nullptr);
template <typename T>
void dropout_bwd(const T* dy, T* dx, size_t n, float p, uint64_t seed, cudaStream_t stream,
                 const uint64_t* seed_ptr = nullptr);

}  // namespace vit::cuda
