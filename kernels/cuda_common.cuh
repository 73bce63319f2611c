// Small helpers every CUDA op shares: element-type conversion (float <-> T),
// warp reductions, launch-size arithmetic. Activations are float (checking mode)
// or __nv_bfloat16 (training); arithmetic is always fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda_check.cuh"

namespace vit::cuda {

using bf16 = __nv_bfloat16;

__host__ __device__ inline float to_f32(float x) { return x; }
__host__ __device__ inline float to_f32(bf16 x) { return __bfloat162float(x); }
template <typename T>
__host__ __device__ inline T from_f32(float x);
template <>
__host__ __device__ inline float from_f32<float>(float x) { return x; }
template <>
__host__ __device__ inline bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

inline unsigned ceil_div(size_t a, size_t b) { return unsigned((a + b - 1) / b); }

// Grid for an elementwise kernel over n items with a grid-stride loop.
inline unsigned elementwise_grid(size_t n, int threads) {
  size_t g = (n + threads - 1) / threads;
  const size_t cap = 65535u * 32u;
  if (g > cap) g = cap;
  if (g == 0) g = 1;
  return unsigned(g);
}

}  // namespace vit::cuda
