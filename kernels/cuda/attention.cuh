// Fused (flash-style) multi-head attention on the GPU, non-causal, for the ViT.
// Same math as vit::cpu::attention_fwd/bwd (kernels/cpu/ops.h), but the (N x N)
// probability matrix is never written to memory: the forward saves one
// log-sum-exp per query row instead, and the backward recomputes the scores.
//
// qkv  (B, N, 3*D) row-major, [q | k | v], head h = columns h*Dh..h*Dh+Dh-1 of each third
// out  (B, N, D)
// lse  (B, H, N) float: log sum_j exp(q_i.k_j * scale)
// T is float (checking mode) or __nv_bfloat16 (training); accumulation is fp32.
// bf16: qkv, out, dout, dqkv must be 16-byte aligned (16-byte copies); else std::invalid_argument.
#pragma once
#include <cuda_runtime.h>

#include "kernels/common/shapes.h"  // AttnShape

namespace vit::cuda {

template <typename T>
void attention_fwd(const T* qkv, T* out, float* lse, const AttnShape& shape, cudaStream_t stream);

// dqkv (B, N, 3*D) is overwritten. scratch: at least B*H*N floats (row dot(dout, out)).
template <typename T>
void attention_bwd(const T* qkv, const T* out, const T* dout, const float* lse, T* dqkv, float* scratch,
                   const AttnShape& shape, cudaStream_t stream);

}  // namespace vit::cuda
