// cuDNN's fused scaled-dot-product attention (flash attention inside cuDNN 9), built through the
// header-only cudnn-frontend graph API, on the engine's layouts: the same contract as
// vit::cuda::attention_fwd/bwd (kernels/cuda/attention.cuh), bf16 only (cuDNN's fused attention
// takes fp16/bf16 inputs; fp32 accumulation inside).
//
//   qkv (B, N, 3*D) [q | k | v], head h at columns h*Dh.. of each third -> Q, K, V as (B, H, N, Dh)
//        views with strides (N*3D, Dh, 3D, 1) and no copy
//   out (B, N, D) -> O with strides (N*D, Dh, D, 1)
//   lse (B, H, N) float -> cuDNN's softmax statistics, (B, H, N, 1): the same log-sum-exp of the
//        scaled scores that the own kernel saves, so either backward can follow either forward
//
// One graph per shape and direction is built on first use and cached (building takes milliseconds
// to seconds; do the first call outside CUDA-graph capture, as the engine's warm-up step does).
// Built only when cudnn-frontend's headers are found (VITENGINE_HAS_CUDNN_FE); without them
// cudnn_attention_built() is false and the calls throw.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/common/shapes.h"  // AttnShape

namespace vit::cuda {

// Which attention the bf16 model path runs: the engine's own kernels (default; what students read)
// or cuDNN's. Process-wide, like AttentionVariant; set from the run's config (attention=own|cudnn)
// through engine/runtime's set_gpu_attention. fp32 (checking mode) always runs the own kernels.
enum class AttentionBackend { kOwn = 0, kCudnn = 1 };
// Throws std::runtime_error for kCudnn in a build without cudnn-frontend.
void set_attention_backend(AttentionBackend b);
AttentionBackend attention_backend();

bool cudnn_attention_built();

void attention_fwd_cudnn(const __nv_bfloat16* qkv, __nv_bfloat16* out, float* lse, const AttnShape& shape,
                         cudaStream_t stream);
void attention_bwd_cudnn(const __nv_bfloat16* qkv, const __nv_bfloat16* out, const __nv_bfloat16* dout,
                         const float* lse, __nv_bfloat16* dqkv, const AttnShape& shape, cudaStream_t stream);

}  // namespace vit::cuda
