// Which implementation of the bf16 fused attention vit::cuda::attention_fwd/bwd run (kernels/cuda/attention.cu).
// A process-wide switch for the GPU test and the benchmark, which check and time both; the engine never
// needs to touch it.
//   kFast   (default): ldmatrix fragment loads, two 16-row m-tiles per warp in the forward.
//   kSimple: plain shared-memory fragment loads, one m-tile per warp; the fallback if kFast ever fails
//            its test on a new card or toolkit.
// The product keeps these two, the default and one reference (as LayerNorm keeps kDefault and
// kReference); kernel shapes under study belong in bench/sandbox/, not here.
#pragma once

namespace vit::cuda {

enum class AttentionVariant { kSimple = 0, kFast = 1 };
void set_attention_variant(AttentionVariant v);
AttentionVariant attention_variant();
inline const char* attention_variant_name(AttentionVariant v) {
  return v == AttentionVariant::kFast ? "fast" : "simple";
}

}  // namespace vit::cuda
