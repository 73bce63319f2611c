// Softmax cross-entropy with label smoothing, fused: one warp per row computes the row max,
// log-sum-exp, the loss and (optionally) dlogits in registers/L1; the (B, C) probability
// tensor is never stored. Target = (1 - s) one_hot(y) + s / C (torch's definition):
//   loss_b    = lse_b - (1 - s) z_{b,y} - (s / C) sum_j z_{b,j}
//   dlogits   = (softmax(z_b) - target_b) / B
// The batch mean is a second one-block kernel summing the B row losses in a fixed order
// (deterministic). Labels outside [0, C) give a NaN loss (the host checks labels first).
// Test: vitengine_gpu_tests --gtest_filter='*Xent*'; bench: bench_ops_cuda --benchmark_filter=Xent
#pragma once
#include <cuda_runtime.h>

namespace vit::cuda {

// logits (B, C); labels (B) device ints; losses (B) fp32; mean_loss: one fp32 on the device.
template <typename T>
void softmax_xent_fwd(const T* logits, const int* labels, float* losses, float* mean_loss, int B, int C,
                      float smoothing, cudaStream_t stream);
// dlogits (B, C) = (softmax - target) / B, overwritten.
template <typename T>
void softmax_xent_bwd(const T* logits, const int* labels, T* dlogits, int B, int C, float smoothing,
                      cudaStream_t stream);
// Both in one pass (the engine's path). losses, mean_loss and dlogits may each be null.
template <typename T>
void softmax_xent_fwd_bwd(const T* logits, const int* labels, float* losses, float* mean_loss, T* dlogits, int B, int C,
                          float smoothing, cudaStream_t stream);

}  // namespace vit::cuda
