// The masked autoencoder's token ops on the GPU: the same maths, shapes and names as the CPU
// reference (kernels/cpu/ops.h, kernels/cpu/mae.cpp), a cudaStream_t last. Activations are T
// (float or bf16), arithmetic fp32; indices, targets, masks and the embedding gradients fp32/int.
// Every sum runs in a fixed order without atomics, so results are bitwise reproducible.
//   gather_tokens_fwd   y (B, K, D) = x[b, idx[b, k]]
//   gather_tokens_bwd   dx = 0, then dx[b, idx[b, k]] = dy[b, k]      (idx distinct per row)
//   scatter_tokens_fwd  y (B, N, D) = fill everywhere, then y[b, idx[b, k]] = x[b, k]
//   scatter_tokens_bwd  dx[b, k] = dy[b, idx[b, k]];  dfill += sum of dy over the rows not in idx
//   add_position_fwd    y = x + pos (N, D) per sample (y may alias x); _bwd: dpos += sum_b dy
//   normalize_rows      each row of K values to mean 0, unbiased variance 1 (eps inside the root)
//   masked_mse_fwd      loss = sum_r mask_r mean_k (pred - target)^2 / sum_r mask_r, one float on the device
//   masked_mse_bwd      dpred = 2 mask_r (pred - target) / (K sum_r mask_r)
// Test: vitengine_gpu_tests --gtest_filter='MaeCuda*' (against the CPU ops).
#pragma once
#include <cuda_runtime.h>

namespace vit::cuda {

template <typename T>
void gather_tokens_fwd(const T* x, const int* idx, T* y, int B, int N, int K, int D, cudaStream_t stream);
template <typename T>
void gather_tokens_bwd(const T* dy, const int* idx, T* dx, int B, int N, int K, int D, cudaStream_t stream);
template <typename T>
void scatter_tokens_fwd(const T* x, const int* idx, const float* fill, T* y, int B, int N, int K, int D,
                        cudaStream_t stream);
template <typename T>
void scatter_tokens_bwd(const T* dy, const int* idx, T* dx, float* dfill, int B, int N, int K, int D,
                        cudaStream_t stream);
template <typename T>
void add_position_fwd(const T* x, const float* pos, T* y, int B, int N, int D, cudaStream_t stream);
template <typename T>
void add_position_bwd(const T* dy, float* dpos, int B, int N, int D, cudaStream_t stream);
void normalize_rows(float* x, float* mean, float* std, int R, int K, float eps, cudaStream_t stream);
// row_err (R) is scratch; loss is one float on the device.
template <typename T>
void masked_mse_fwd(const T* pred, const float* target, const float* mask, float* row_err, float* loss, int R, int K,
                    cudaStream_t stream);
template <typename T>
void masked_mse_bwd(const T* pred, const float* target, const float* mask, T* dpred, int R, int K, float hidden_rows,
                    cudaStream_t stream);

}  // namespace vit::cuda
