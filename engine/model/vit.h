// The ViT model on the CPU reference path: config, parameter arena, forward with
// saved activations (autograd-lite), one-call backward, AdamW.
//
// Architecture = torchvision.models.VisionTransformer exactly (pre-norm blocks,
// LayerNorm eps 1e-6, exact GELU, fused in_proj, class token, learned pos
// embedding, dropout after embedding / attention / GELU / fc2, head on token 0).
#pragma once
#include <stdexcept>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/params.h"
#include "engine/util/aligned.h"
#include "kernels/cpu/infer.h"
#include "kernels/cpu/ops.h"

namespace vit {

// A NaN or inf where training needs finite numbers (the gradient norm before AdamW). The
// trainer turns it into TrainingDiverged; by type, not by the message text.
struct NonFiniteError : std::runtime_error {
  explicit NonFiniteError(const std::string& what) : std::runtime_error(what) {}
};

struct ViTConfig {
  std::string name = "vit_b16";  // preset name, informational
  int image_size = 224;          // input is image_size x image_size, 3 channels
  int patch = 16;                // patch side; image_size must be a multiple
  int channels = 3;              // input channels
  int dim = 768;                 // token width D
  int depth = 12;                // encoder blocks
  int heads = 12;                // attention heads; dim % heads == 0
  int mlp_dim = 3072;            // MLP hidden width
  int num_classes = 14;          // head outputs
  float dropout = 0.1f;          // dropout probability (torchvision's `dropout`)
  float ln_eps = 1e-6f;          // LayerNorm epsilon (torchvision: 1e-6)

  int grid() const { return image_size / patch; }
  int num_patches() const { return grid() * grid(); }
  int seq_len() const { return num_patches() + 1; }
  int head_dim() const { return dim / heads; }
  // Throws std::invalid_argument naming the bad field.
  void validate() const;
  // "vit_ti16" (192/12/3), "vit_s16" (384/12/6), "vit_b16" (768/12/12). Throws on unknown.
  static ViTConfig preset(const std::string& name);
  bool same_architecture(const ViTConfig& o) const;
  std::string to_string() const;  // one line, for logs and error messages
};

// ParamInfo, param_table, the offsets by role and site_seed: engine/model/params.h.

// Distance in floats between the segments [params | grads | m | v | bf16 shadow] of the device
// arena (engine/model/vit_cuda.cu): n rounded up to 64 floats, so every segment starts 256-byte
// aligned. (The host arena keeps them n apart.) With a distance of n, vit_b16's gradient
// segment (n = 85,809,422) would start only 8-byte aligned, and cuBLASLt would have to pick
// slower algorithms for every weight-gradient GEMM, whose output lies in that segment.
inline size_t device_segment_stride(size_t n) { return (n + 63) & ~size_t(63); }

struct ForwardOptions {
  bool training = false;       // dropout on
  bool keep_attention = true;  // probs are always saved for backward; this only says callers may read them
  uint64_t dropout_seed = 0;   // per-step seed for the dropout masks
  // Stochastic depth (training only): block l's two residual branches drop whole samples with
  // probability drop_path * l / (depth - 1), rising linearly from 0 at the first block (as the
  // reference recipe and timm). Masks come from drop_path_seed(dropout_seed, l, branch).
  float drop_path = 0.0f;
  // Nothing follows but reading the logits: no backward(), no attention_probs(). The forward then
  // takes the inference path (vit_infer.cpp), which saves no activations and works in one small
  // arena. Ignored when training.
  bool inference = false;
};

// Arithmetic of the CPU inference path's linear layers. bf16 rounds their inputs and weights to
// bfloat16 and accumulates in fp32 on Intel's AMX tile units; where the CPU has none it falls
// back to fp32. Attention, LayerNorm, GELU and the head stay fp32 either way.
enum class InferencePrecision { fp32, bf16 };
// The seed of block l's attention (branch 0) or MLP (branch 1) drop-path mask. Disjoint from the
// dropout sites (0 .. 3*depth) so the two masks are independent draws.
inline uint64_t drop_path_seed(uint64_t dropout_seed, int layer, int branch) {
  return dropout_seed ^ (0xD509A7B3C11E5F27ull * uint64_t(2 * layer + branch + 1));
}
// Block l's drop-path rate for a model of `depth` blocks.
inline float drop_path_rate(float drop_path, int layer, int depth) {
  return depth > 1 ? drop_path * float(layer) / float(depth - 1) : 0.0f;
}

class ViT {
 public:
  explicit ViT(const ViTConfig& cfg);
  const ViTConfig& config() const { return cfg_; }

  // ---- parameters: one arena [params | grads | adam m | adam v] ----
  const std::vector<ParamInfo>& params() const { return table_; }
  size_t num_params() const { return nparams_; }
  size_t num_decay_params() const { return ndecay_; }
  // Writable parameters: the bf16 copies of the weights are rebuilt before the next bf16 inference.
  float* param_data() {
    packed_stale_ = true;
    return arena_.data();
  }
  float* grad_data() { return arena_.data() + nparams_; }
  float* adam_m() { return arena_.data() + 2 * nparams_; }
  float* adam_v() { return arena_.data() + 3 * nparams_; }
  const float* param_data() const { return arena_.data(); }
  const ParamInfo& param(const std::string& name) const;  // throws if unknown
  float* param_ptr(const std::string& name) { return param_data() + param(name).offset; }
  float* grad_ptr(const std::string& name) { return grad_data() + param(name).offset; }

  // Reference recipe init: trunc-normal(0.02) linear weights, zero biases, LN (1, 0),
  // conv fan-in init, pos N(0, 0.02), class token zeros, head zeros (torchvision).
  void init(uint64_t seed);

  // ---- forward / backward ----
  // images (B, 3, S, S), already normalised. Returns logits (B, num_classes),
  // valid until the next forward. Activations for backward are kept in a second arena,
  // resized only when B grows.
  const float* forward(const float* images, int B, const ForwardOptions& opt = {});
  // Mean label-smoothed cross-entropy of the last forward; also stores labels for backward.
  float loss(const int* labels, float smoothing = 0.0f);
  // Accumulates every parameter gradient of the last loss() into grad_data().
  void backward();
  // Backward from a caller-given dlogits (B, num_classes) instead of loss().
  void backward_from(const float* dlogits);
  void zero_grad();

  // The inference path's precision: fp32 unless set here or by the environment variable
  // VITENGINE_CPU_PRECISION=bf16 (read when the model is made); bf16 where the CPU lacks AMX stays fp32.
  void set_inference_precision(InferencePrecision p) { precision_ = p; }
  // What the inference path runs now: bf16 only if asked for and the CPU has AMX-BF16.
  InferencePrecision inference_precision() const;

  // The class token after the final LayerNorm (B, D): what the head reads, from the last forward
  // (either path). Adaptation trains heads on these, and out-of-distribution scores read them.
  const float* features() const { return features_; }
  // Attention probabilities of layer l from the last forward: (B, H, N, N).
  const float* attention_probs(int layer) const;
  int last_batch() const { return B_; }

  // ---- optimizer ----
  // One AdamW step over the whole arena; returns the global grad norm before clipping.
  // clip_norm <= 0 disables clipping.
  double adamw_step(cpu::AdamWParams hp, float clip_norm);
  // The same update with a learning-rate scale per parameter tensor (params() order), for
  // fine-tuning: scale 0 freezes a tensor (its moments are not touched, and its gradient is
  // left out of the clipping norm), scale s trains it at lr * s. Returns that norm.
  double adamw_step_scaled(cpu::AdamWParams hp, float clip_norm, const std::vector<float>& scale);
  void reset_optimizer();

 private:
  void ensure_activations(int B);
  const float* forward_inference(const float* images, int B);  // vit_infer.cpp
  void pack_weights_bf16();                                    // vit_infer.cpp
  ViTConfig cfg_;
  std::vector<ParamInfo> table_;
  ParamOffsets offsets_;  // table_ by role, for binding the arenas
  size_t nparams_ = 0, ndecay_ = 0;
  FloatArena arena_;  // params, grads, m, v
  FloatArena acts_;   // activations of the last forward
  size_t acts_batch_ = 0;
  int B_ = 0;
  ForwardOptions fopt_;
  const float* images_ = nullptr;
  std::vector<int> labels_;
  float smoothing_ = 0;
  const float* features_ = nullptr;
  bool last_inference_ = false;  // the last forward saved nothing: backward() must refuse
  // The inference path: its arena, and the bf16 weights (conv, then per block qkv, proj, fc1, fc2).
  FloatArena infer_;
  InferencePrecision precision_ = InferencePrecision::fp32;
  std::vector<cpu::PackedBF16> packed_;
  bool packed_stale_ = true;
};

}  // namespace vit
