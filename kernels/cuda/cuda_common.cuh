// Small helpers every CUDA op shares: element-type conversion (float <-> T),
// warp reductions, launch-size arithmetic. Activations are float (checking mode)
// or __nv_bfloat16 (training); arithmetic is always fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_check.cuh"

namespace vit::cuda {

using bf16 = __nv_bfloat16;

__host__ __device__ inline float to_f32(float x) { return x; }
__host__ __device__ inline float to_f32(bf16 x) { return __bfloat162float(x); }
template <typename T>
__host__ __device__ inline T from_f32(float x);
template <>
__host__ __device__ inline float from_f32<float>(float x) {
  return x;
}
template <>
__host__ __device__ inline bf16 from_f32<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

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

namespace vit::cuda {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Elementwise map out[i] = op(i, a[i], b[i]) in fp32. When `vec` (all pointers 16-byte
// aligned; the host checks), each thread moves 16 bytes per operand (8 bf16 / 4 floats) and
// the n % V tail is done one element at a time; else one element per step. The element index
// i is the same either way, so index-dependent ops (the dropout hash) give identical results.
// Op: struct with  __device__ float operator()(size_t i, float a, float b) const  and
// members `uint64_t seed; const uint64_t* seed_ptr;` (seed_ptr, if set, replaces seed).
template <typename T, typename Op>
__global__ void elementwise_map_kernel(const T* a, const T* b, T* out, size_t n, Op op, bool vec) {
  if (op.seed_ptr) op.seed = *op.seed_ptr;
  const size_t tid = blockIdx.x * size_t(blockDim.x) + threadIdx.x, stride = size_t(gridDim.x) * blockDim.x;
  size_t done = 0;
  if (vec) {
    constexpr int V = 16 / sizeof(T);
    const size_t nv = n / V;
    for (size_t j = tid; j < nv; j += stride) {
      int4 ra = reinterpret_cast<const int4*>(a)[j];
      int4 rb = reinterpret_cast<const int4*>(b)[j];
      int4 ro;
      const T* ea = reinterpret_cast<const T*>(&ra);
      const T* eb = reinterpret_cast<const T*>(&rb);
      T* eo = reinterpret_cast<T*>(&ro);
#pragma unroll
      for (int k = 0; k < V; ++k) eo[k] = from_f32<T>(op(j * V + k, to_f32(ea[k]), to_f32(eb[k])));
      reinterpret_cast<int4*>(out)[j] = ro;
    }
    done = nv * V;
  }
  for (size_t i = done + tid; i < n; i += stride) out[i] = from_f32<T>(op(i, to_f32(a[i]), to_f32(b[i])));
}

#ifndef VIT_CUDA_EMULATE  // the host compiler of tests/emu/cuda_emu.h cannot parse <<<>>>
template <typename T, typename Op>
inline void elementwise_map(const T* a, const T* b, T* out, size_t n, Op op, cudaStream_t stream) {
  if (!n) return;
  constexpr int V = 16 / sizeof(T);
  const bool vec = aligned16(a) && aligned16(b) && aligned16(out);
  const int threads = 256;
  const unsigned grid = elementwise_grid(vec ? (n + V - 1) / V : n, threads);
  elementwise_map_kernel<T, Op><<<grid, threads, 0, stream>>>(a, b, out, n, op, vec);
  VIT_LAUNCH_CHECK();
}
#endif

}  // namespace vit::cuda
