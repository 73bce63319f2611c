// LayerNorm over the last dim C for R rows, eps as torchvision (1e-6), fp32 statistics.
//
// Forward: one warp per row (or per group of rows, see LayerNormFwdVariant). The row is loaded once into registers with 16-byte vector
// loads (8 bf16 or 4 floats per load, up to 8 loads per lane), so mean and variance are
// two exact passes over registers (no E[x^2]-E[x]^2 cancellation), then y is written once:
// the kernel reads C*sizeof(T) and writes C*sizeof(T) bytes per row, the memory minimum.
// Backward: one warp per row as well, dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with
// g = dy * w. dw and db are reduced WITHOUT atomics: each block of a fixed-size grid keeps
// per-lane partial sums over its rows, reduces its warps in a fixed order into shared memory,
// writes one partial row to `scratch`; a second kernel sums the partial rows in order.
// Same grid -> same summation order -> bitwise reproducible gradients.
// Requires C % (16 / sizeof(T)) == 0, C <= 256 * (16 / sizeof(T)) and 16-byte aligned x, y, dy, dx.
// Test: vitengine_gpu_tests --gtest_filter='*LayerNorm*'; bench: bench_ops_cuda --benchmark_filter=LayerNorm
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace vit::cuda {

// Forward launch shapes (issue 4). All of them compute bitwise the same result (same per-lane
// summation order, same butterfly, explicit fmaf); they differ only in how many rows a warp keeps in
// flight, the block size, and whether the grid is persistent. Why each knob exists:
// kernels/cuda/layernorm.cu, "Forward: what limits it".
//   kLegacy     one row per warp, 8 warps per block (the kernel before issue 4; the baseline row)
//   kRowsR_WarpsW   each warp loads R consecutive rows at once (R x C x sizeof(T) bytes in flight),
//                   reduces them together, loads w/b once and applies them to the R rows
//   kPersistRowsR_WarpsW   grid = what fits on the GPU at once; each warp walks groups of R rows
//                   with a stride and prefetches the next group before reducing the current one
// R is capped so that a lane holds at most 12 16-byte vectors of x (no spills): bf16 with C = 768
// (3 vectors per lane per row) runs every shape as named; fp32 with C = 768 (6 vectors) runs "Rows4"
// as 2 rows and "PersistRows2" as 1.
enum class LayerNormFwdVariant : int {
  kLegacy,
  kRows1_Warps4,
  kRows1_Warps8,
  kRows1_Warps16,
  kRows2_Warps4,
  kRows2_Warps8,
  kRows2_Warps16,
  kRows4_Warps4,
  kRows4_Warps8,
  kRows4_Warps16,
  kPersistRows1_Warps8,
  kPersistRows1_Warps16,
  kPersistRows2_Warps4,
  kPersistRows2_Warps8,
  kPersistRows2_Warps16,
  kCount
};
// The variant layernorm_fwd uses: the fastest row of `bench_ops_cuda --benchmark_filter=LayerNormFwd`
// on an H200 (2026-11-26, 50,432 x 768 bf16, L2 flushed): rows2_warps4 3.32 TB/s, rows1_warps4 3.29,
// persist_rows2_warps16 3.18, the earlier default rows4_warps8 3.07, legacy (one row per warp,
// parameters loaded after the reductions) 2.33; PyTorch 1.41 in the same run. All variants give
// the same bits, so this choice changes speed only. Re-measure on another card before changing it.
inline constexpr LayerNormFwdVariant kLayerNormFwdDefault = LayerNormFwdVariant::kRows2_Warps4;
// "rows4_warps8", "persist_rows2_warps8", "legacy", ... (bench and test labels)
const char* layernorm_fwd_variant_name(LayerNormFwdVariant v);

// x, y (R, C); w, b (C) fp32; mean, rstd (R) fp32 (either may be null: inference).
template <typename T>
void layernorm_fwd(const T* x, const float* w, const float* b, T* y, float* mean, float* rstd, int R, int C, float eps,
                   cudaStream_t stream);
// The same with an explicit launch shape (bench and tests sweep these).
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
