// AdamW over the whole parameter arena in ONE launch (same math as vit::cpu::adamw_step),
// plus the deterministic sum of squares behind gradient-norm clipping.
//
// Per element i (fp32 master weights, fp32 moments):
//   g  = grad[i] * grad_scale * clip      clip = clip_norm / (||g|| + 1e-6) if ||g|| > clip_norm
//   p *= 1 - lr * wd                      (only the first n_decay elements: weight matrices)
//   m  = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// and, in bf16 training, the bf16 shadow copy the GEMMs read is refreshed in the same pass.
// The hyper-parameters may come from device memory (hp_dev) so that a captured CUDA graph
// replays with the current step's lr and step count; the clip factor is computed on the
// device from the device-side sum of squares, so no host round trip is needed.
// sum_squares: fixed grid (kSumSqBlocks) -> per-block fp64 partials -> one block sums them
// in order: bitwise reproducible.
// Test: vitengine_gpu_tests --gtest_filter='*AdamW*:*SumSquares*'; bench: bench_ops_cuda --benchmark_filter=AdamW
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/common/op_params.h"

namespace vit::cuda {

constexpr int kSumSqBlocks = 1024;

// out: one double on the device = sum x^2; scratch: kSumSqBlocks doubles.
void sum_squares(const float* x, size_t n, double* out, double* scratch, cudaStream_t stream);

// p, g, m, v: n floats each. If hp_dev is set it is read on the device instead of hp.
// If grad_sumsq is set and clip_norm > 0, gradients are additionally scaled by
// clip_norm / (sqrt(*grad_sumsq) + 1e-6) when sqrt(*grad_sumsq) > clip_norm. p_bf16 (n values) is written if not null.
void adamw_step(float* p, const float* g, float* m, float* v, size_t n, size_t n_decay, const AdamWParams& hp,
                cudaStream_t stream, __nv_bfloat16* p_bf16 = nullptr, const AdamWParams* hp_dev = nullptr,
                const double* grad_sumsq = nullptr, float clip_norm = 0.f);

}  // namespace vit::cuda
