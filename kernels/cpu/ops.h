// vitengine op signatures: the CPU reference path.
//
// Every op is a plain function over raw row-major arrays, templated on the
// element type so that the same code runs in float (the engine) and in double
// (the finite-difference oracle in tests/). The CUDA ops (kernels/cuda/*.cuh) have the same
// names, math and shapes in namespace vit::cuda, the same parameter structs (AdamWParams,
// PatchShape, AttnShape: kernels/common/) and a cudaStream_t last, but not always the same arguments,
// because the GPU keeps different state between forward and backward:
//   - linear_bwd is split into linear_bwd_dx / linear_bwd_dw / linear_bwd_dw_db, and the GEMMs take
//     a cuBLASLt GemmContext (kernels/cuda/gemm.cuh);
//   - patch_embed_fwd keeps its im2col columns for the backward, which reads them, not the image;
//   - attention_fwd saves the log-sum-exp per row (B, H, N), not the (B, H, N, N) probabilities,
//     and attention_bwd recomputes them (kernels/cuda/attention.cuh);
//   - the backward passes that reduce over rows (layernorm, bias, patch embedding) take a scratch
//     buffer, so that the sums run in a fixed order without atomics (bitwise reproducible);
//   - dropout and drop-path take an optional device pointer to the seed, for CUDA graphs.
//
// Conventions (llm.c, layernorm.cuh explains why):
//   - parameter gradients ACCUMULATE (+=): a weight used twice gets both parts;
//   - activation gradients OVERWRITE (=): the caller adds residual branches itself.
// Shapes are written (B, N, D) = batch, tokens, channels.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common/op_params.h"  // AdamWParams, dropout_keep: shared with the CUDA ops
#include "kernels/common/shapes.h"     // PatchShape, AttnShape

namespace vit::cpu {

using vit::AdamWParams;
using vit::dropout_keep;

// ---- patch embedding: a 16x16 stride-16 conv, as im2col + GEMM ----
// img (B, C, H, W) -> out (B, Np, D), Np = (H/P)*(W/P); w (D, C, P, P), b (D).
template <typename T>
void patch_embed_fwd(const T* img, const T* w, const T* b, T* out, const PatchShape& s);
// dw += , db += . No image gradient: the input is data.
template <typename T>
void patch_embed_bwd(const T* img, const T* dout, T* dw, T* db, const PatchShape& s);

// ---- class token + position embedding ----
// patches (B, Np, D), cls (D), pos (Np+1, D) -> out (B, Np+1, D): row 0 = cls + pos[0].
template <typename T>
void embed_tokens_fwd(const T* patches, const T* cls, const T* pos, T* out, int B, int Np, int D);
// dpatches = ; dcls += ; dpos += .
template <typename T>
void embed_tokens_bwd(const T* dout, T* dpatches, T* dcls, T* dpos, int B, int Np, int D);

// ---- masked-autoencoder token ops (He et al. 2022; kernels/cpu/mae.cpp) ----
// idx (B, K) holds, per sample, K distinct row indices in [0, N).
// gather: y (B, K, D) = x[b, idx[b, k]] -- the encoder keeps only the visible tokens.
template <typename T>
void gather_tokens_fwd(const T* x, const int* idx, T* y, int B, int N, int K, int D);
// dx = (zero, then dy scattered back to the gathered rows).
template <typename T>
void gather_tokens_bwd(const T* dy, const int* idx, T* dx, int B, int N, int K, int D);
// scatter: y (B, N, D) = x[b, k] at row idx[b, k], `fill` (D) at every other row -- the decoder
// puts the encoded tokens back in place and a learned mask token where a patch was hidden.
template <typename T>
void scatter_tokens_fwd(const T* x, const int* idx, const T* fill, T* y, int B, int N, int K, int D);
// dx = dy at the scattered rows; dfill += the sum of dy over the filled rows.
template <typename T>
void scatter_tokens_bwd(const T* dy, const int* idx, T* dx, T* dfill, int B, int N, int K, int D);
// position embedding: y (B, N, D) = x + pos (N, D) (y may alias x); the backward is dx = dy and
// dpos += the sum of dy over the batch.
template <typename T>
void add_position_fwd(const T* x, const T* pos, T* y, int B, int N, int D);
template <typename T>
void add_position_bwd(const T* dy, T* dpos, int B, int N, int D);
// img (B, C, H, W) -> patches (B, Np, C*P*P), each patch's values in (c, ky, kx) order: the
// reconstruction target, laid out as the patch embedding's weight reads a patch.
template <typename T>
void patchify(const T* img, T* patches, int B, int C, int H, int W, int P);
// The inverse: patches (B, Np, C*P*P) -> img (B, C, H, W), for pictures of reconstructions.
template <typename T>
void unpatchify(const T* patches, T* img, int B, int C, int H, int W, int P);
// Normalises each of R rows of K values in place to zero mean and unit variance (the unbiased
// variance, + eps inside the root: the MAE paper's norm_pix_loss target). mean and std (R) get
// each row's statistics if not null, to undo it for pictures.
template <typename T>
void normalize_rows(T* x, T* mean, T* std, int R, int K, T eps);
// Mean squared error over the masked rows: pred, target (R, K), mask (R) 1 = hidden (scored),
// 0 = visible. loss = sum_r mask_r * mean_k (pred - target)^2 / sum_r mask_r.
template <typename T>
T masked_mse_fwd(const T* pred, const T* target, const T* mask, int R, int K);
// dpred = 2 mask_r (pred - target) / (K sum_r mask_r).
template <typename T>
void masked_mse_bwd(const T* pred, const T* target, const T* mask, T* dpred, int R, int K);

// ---- linear layer, torch weight layout: y (M, N) = x (M, K) @ w (N, K)^T + b (N) ----
template <typename T>
void linear_fwd(const T* x, const T* w, const T* b, T* y, int M, int K, int N);
// dx = dy @ w (skipped if dx == nullptr); dw += dy^T @ x; db += colsum(dy) (skipped if db == nullptr).
template <typename T>
void linear_bwd(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int M, int K, int N);

// ---- LayerNorm over the last dim C, for R rows; saves mean and 1/std per row ----
template <typename T>
void layernorm_fwd(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int R, int C, T eps);
// dx = ; dw += ; db += .
template <typename T>
void layernorm_bwd(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, T* dx, T* dw, T* db, int R,
                   int C);

// ---- multi-head scaled dot-product attention, non-causal ----
// qkv (B, N, 3*D) as produced by the fused in_proj: [q | k | v], each D = H*Dh wide,
// head h owns columns h*Dh .. h*Dh+Dh-1 of each third (torchvision's layout).
// out (B, N, D); probs (B, H, N, N) = softmax(q k^T / sqrt(Dh)) is saved for the
// backward pass and for students / attention maps.
template <typename T>
void attention_fwd(const T* qkv, T* out, T* probs, const AttnShape& shape);
// dqkv = (overwrites all three thirds).
template <typename T>
void attention_bwd(const T* qkv, const T* probs, const T* dout, T* dqkv, const AttnShape& shape);

// ---- exact-erf GELU (torch.nn.GELU() default, not the tanh approximation) ----
template <typename T>
void gelu_fwd(const T* x, T* y, size_t n);
template <typename T>
void gelu_bwd(const T* x, const T* dy, T* dx, size_t n);

// ---- residual add: out = a + b (out may alias a) ----
template <typename T>
void add_fwd(const T* a, const T* b, T* out, size_t n);

// ---- dropout with a counter-based mask: element i of a call with `seed` is kept
// iff hash(seed, i) >= p. The mask is never stored; backward recomputes it, and the
// CPU and CUDA paths draw the same mask. p == 0 is the identity. ----
template <typename T>
void dropout_fwd(const T* x, T* y, size_t n, float p, uint64_t seed);
template <typename T>
void dropout_bwd(const T* dy, T* dx, size_t n, float p, uint64_t seed);

// ---- stochastic depth (drop path, Huang et al. 2016): sample b of a residual branch's output
// (B, per_sample values) is kept whole with probability 1 - p and scaled by 1/(1-p), or zeroed
// whole. Sample b's keep test is dropout_keep(seed, b, p), so CPU and CUDA draw the same samples.
// The backward is the same function (d(keep * x * s)/dx = keep * s). y may alias x. ----
template <typename T>
void drop_path(const T* x, T* y, int B, size_t per_sample, float p, uint64_t seed);

// ---- softmax cross-entropy with label smoothing, mean over the batch ----
// logits (B, C), labels (B) in [0, C). Target = (1-s) one-hot + s/C (torch's definition).
// Returns the mean loss; losses (B) gets each row's loss if not null.
template <typename T>
T softmax_xent_fwd(const T* logits, const int* labels, T* losses, int B, int C, T smoothing);
// dlogits = (softmax - target) / B. Recomputes the softmax: the probabilities are never stored.
template <typename T>
void softmax_xent_bwd(const T* logits, const int* labels, T* dlogits, int B, int C, T smoothing);

// ---- AdamW (Loshchilov & Hutter), decoupled weight decay, bias-corrected ----
// One call updates a whole arena of n values; the first n_decay get weight decay
// (the engine lays out weight matrices first, biases / norms / embeddings after).
// grad_scale multiplies every gradient first (gradient clipping, loss scaling).
template <typename T>
void adamw_step(T* p, const T* g, T* m, T* v, size_t n, size_t n_decay, const AdamWParams& hp);

// Sum of squares of n values (for gradient-norm clipping), accumulated in double.
template <typename T>
double sum_squares(const T* x, size_t n);

}  // namespace vit::cpu
