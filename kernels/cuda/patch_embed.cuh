// Patch embedding (a P x P stride-P conv as im2col + GEMM), the class token + position
// embedding, image normalisation from uint8, and the class-token gather/scatter of the head.
//
//   normalize_images:  u8 (B, S, S, 3) HWC  ->  img (B, 3, S, S) float, (x/255 - mean[c]) / std[c]
//   im2col:            img (B, C, H, W)     ->  cols (B*Np, C*P*P); row = b*Np + py*G + px,
//                      column = (c*P + ky)*P + kx, which is the flattening of the conv weight
//                      (D, C, P, P) -> (D, C*P*P), so the conv is cols @ w^T + b.
//   patch_embed_fwd:   im2col + linear_fwd  -> out (B, Np, D)
//   patch_embed_bwd:   dw (D, C*P*P) += dout^T @ cols; db += colsum(dout) (no image gradient)
//   embed_tokens_fwd:  out (B, Np+1, D): row 0 = cls + pos[0], row n = patches[n-1] + pos[n],
//                      followed by dropout (the encoder's dropout; p = 0 = none), fused
//   embed_tokens_bwd:  dpatches = (overwrite), dcls += , dpos += (sums over the batch in order)
//   gather_cls:        x (B, N, D) -> out (B, D) = x[:, 0]         (the head reads token 0)
//   scatter_cls_grad:  dcls (B, D) -> dx (B, N, D): row 0 = dcls, others 0 (fully written)
// Test: vitengine_gpu_tests --gtest_filter='*PatchEmbed*:*EmbedTokens*:*Normalize*'
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/common/shapes.h"
#include "kernels/cuda/gemm.cuh"

namespace vit::cuda {

struct ImageNorm {
  float mean[3] = {0.485f, 0.456f, 0.406f};  // ImageNet, torchvision's default transform
  float std[3] = {0.229f, 0.224f, 0.225f};
};

void normalize_images(const uint8_t* u8, float* img, int B, int S, const ImageNorm& norm, cudaStream_t stream);

template <typename TIn, typename TOut>
void im2col(const TIn* img, TOut* cols, int B, int C, int H, int W, int P, cudaStream_t stream);

// cols: scratch (B*Np, C*P*P) kept for the backward pass.
template <typename T>
void patch_embed_fwd(GemmContext& ctx, const float* img, const T* w, const T* b, T* cols, T* out, const PatchShape& s,
                     cudaStream_t stream);
template <typename T>
void patch_embed_bwd(GemmContext& ctx, const T* cols, const T* dout, float* dw, float* db, float* scratch,
                     const PatchShape& s, cudaStream_t stream);

template <typename T>
void embed_tokens_fwd(const T* patches, const float* cls, const float* pos, T* out, int B, int Np, int D,
                      cudaStream_t stream, float dropout_p = 0.f, uint64_t seed = 0,
                      const uint64_t* seed_ptr = nullptr);
template <typename T>
void embed_tokens_bwd(const T* dout, T* dpatches, float* dcls, float* dpos, int B, int Np, int D, cudaStream_t stream,
                      float dropout_p = 0.f, uint64_t seed = 0, const uint64_t* seed_ptr = nullptr);

template <typename T>
void gather_cls(const T* x, T* out, int B, int N, int D, cudaStream_t stream);
template <typename T>
void scatter_cls_grad(const T* dcls, T* dx, int B, int N, int D, cudaStream_t stream);

}  // namespace vit::cuda
