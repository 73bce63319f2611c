// Attention maps for one image: attention rollout (Abnar & Zuidema 2020,
// "Quantifying Attention Flow in Transformers") and per-layer / per-head CLS attention.
//
// Rollout: each layer's attention, averaged over heads, gets the residual connection
// added as an identity, A_l = 0.5 * mean_h(P_l) + 0.5 * I, with rows renormalised to
// sum to 1. The joint attention from the output back to the input tokens is the
// product R = A_L * A_{L-1} * ... * A_1 (N x N). Row 0 of R (the class token) over
// the patch tokens 1..N-1 is the map shown on the image.
//
// Inputs are the probabilities ViT::attention_probs(l) gives, (B, H, N, N); pass the
// pointer to one image's block: attention_probs(l) + b * H * N * N.
#pragma once
#include <vector>

namespace vit {

// Full rollout matrix R (N x N, row-major) from `layers` (first layer first), each (H, N, N).
std::vector<float> attention_rollout(const std::vector<const float*>& layers, int H, int N);

// Row 0 of R without forming R: r = e_0^T A_L ... A_1 (O(L N^2)). Returns the N-1 patch
// entries (the class token's own entry dropped), in patch order (row-major grid).
std::vector<float> cls_rollout(const std::vector<const float*>& layers, int H, int N);

// Class-token attention over the patches of one layer (H, N, N): head `head`, or the
// mean over heads when head < 0. Returns N-1 values (row 0, columns 1..N-1).
std::vector<float> cls_attention(const float* layer, int H, int N, int head);

}  // namespace vit
