// LayerNorm over the last dim C for R rows, eps as torchvision (1e-6), fp32 statistics.
//
// Forward: one warp per group of rows (see LayerNormFwdVariant). The row is loaded once into registers with 16-byte
// vector loads (8 bf16 or 4 floats per load, up to 8 loads per lane), so mean and variance are two exact passes over
// registers (no E[x^2]-E[x]^2 cancellation), then y is written once: the kernel reads C*sizeof(T) and writes
// C*sizeof(T) bytes per row, the memory minimum. Backward: one warp per row as well, dx = rstd * (g - mean(g) - xhat *
// mean(g * xhat)) with g = dy * w. dw and db are reduced WITHOUT atomics: each block of a fixed-size grid keeps
// per-lane partial sums over its rows, reduces its warps in a fixed order into shared memory,
// writes one partial row to `scratch`; a second kernel sums the partial rows in order.
// Same grid -> same summation order -> bitwise reproducible gradients.
// Requires C % (16 / sizeof(T)) == 0, C <= 256 * (16 / sizeof(T)) and 16-byte aligned x, y, dy, dx.
// Test: vitengine_gpu_tests --gtest_filter='*LayerNorm*'; bench: bench_ops_cuda --benchmark_filter=LayerNorm
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace vit::cuda {

// Forward launch shapes. Both compute bitwise the same result (same per-lane summation order,
// same butterfly, explicit fmaf); they differ only in how rows are assigned to warps.
//   kDefault    each warp loads 2 consecutive rows at once (2 x C x sizeof(T) bytes in flight),
//               reduces them together, loads w/b once for both; 4 warps per block. The fastest of
//               the sweep in bench/sandbox/ on an H200 (bf16, 50,432 x 768, L2 flushed: 3.32 TB/s
//               against 2.33 for kReference and 1.41 for PyTorch's). All shapes give the same bits,
//               so the choice changes speed only: re-run the sweep on another card before changing it.
//   kReference  one row per warp, 8 warps per block, w/b loaded after the reductions: the simplest
//               shape, kept as the yardstick the others must match bit for bit.
// Why each knob exists: kernels/cuda/layernorm.cu, "Forward: what limits it". The other shapes
// (more rows per warp, other block sizes, persistent grids) live in bench/sandbox/.
enum class LayerNormFwdVariant : int { kDefault, kReference, kCount };
inline constexpr LayerNormFwdVariant kLayerNormFwdDefault = LayerNormFwdVariant::kDefault;
// "rows2_warps4" (the default), "legacy" (the reference): bench and test labels.
const char* layernorm_fwd_variant_name(LayerNormFwdVariant v);

// x, y (R, C); w, b (C) fp32; mean, rstd (R) fp32 (either may be null: inference).
template <typename T>
void layernorm_fwd(const T* x, const float* w, const float* b, T* y, float* mean, float* rstd, int R, int C, float eps,
                   cudaStream_t stream);
// The same with an explicit launch shape (the tests check both; bench_ops_cuda times both).
template <typename T>
void layernorm_fwd_variant(LayerNormFwdVariant v, const T* x, const float* w, const float* b, T* y, float* mean,
                           float* rstd, int R, int C, float eps, cudaStream_t stream);

// dx = LN-backward(dy) (+ dx_residual if not null; dx may alias dx_residual);
// dw += sum_rows dy * xhat; db += sum_rows dy. scratch: layernorm_bwd_scratch_floats(R, C).
template <typename T>
void layernorm_bwd(const T* x, const float* w, const float* mean, const float* rstd, const T* dy, T* dx, float* dw,
                   float* db, float* scratch, int R, int C, cudaStream_t stream, const T* dx_residual = nullptr);
size_t layernorm_bwd_scratch_floats(int R, int C);

}  // namespace vit::cuda
