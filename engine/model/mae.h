// A masked autoencoder (He et al. 2022) around the ViT, on the CPU reference path: self-supervised
// pretraining of the encoder on unlabelled images. Shapes, step by step (docs/pretraining.md):
//
//   images (B, C, S, S) --patch embed + class token + position--> tokens (B, 1+Np, D)
//   gather the class token and the Nv visible patches     --> x (B, 1+Nv, D)   Nv = Np (1 - mask_ratio)
//   encoder blocks, encoder LayerNorm                      --> latent (B, 1+Nv, D)
//   decoder_embed (linear D -> Dd)                         --> (B, 1+Nv, Dd)
//   scatter back to every position, mask token elsewhere   --> (B, 1+Np, Dd)
//   + decoder position embedding, decoder blocks, norm     --> (B, 1+Np, Dd)
//   decoder_pred (linear Dd -> C*P*P)                      --> pred (B, 1+Np, C*P*P)
//   loss = MSE of pred against the (per-patch normalised) pixels, over the hidden patches only.
//
// The encoder is a plain ViT (its class token, position embedding, blocks and final LayerNorm; its
// head is not used), so the pretrained encoder is saved as an ordinary .vit file that
// `train --init` fine-tunes. The decoder has its own arena [params | grads | m | v].
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/vit.h"

namespace vit {

struct MaeConfig {
  int dim = 128;            // decoder width Dd
  int depth = 2;            // decoder blocks
  int heads = 4;            // decoder attention heads
  int mlp_dim = 512;        // decoder MLP width
  float mask_ratio = 0.75f; // fraction of patches hidden from the encoder
  bool norm_pix_loss = true;  // target = each patch normalised to zero mean, unit variance
  // Patches the encoder sees: Np (1 - mask_ratio), rounded down as the MAE code does, at least 1.
  int num_visible(int num_patches) const;
  // Throws std::invalid_argument naming the field.
  void validate() const;
};

// The decoder's tensors, named as in the MAE reference code where it has one (decoder_embed,
// mask_token, decoder_pos_embed, decoder_norm, decoder_pred), its blocks with torchvision's block
// names under "decoder.layers.decoder_layer_<i>."; weight matrices first (weight decay).
std::vector<ParamInfo> decoder_param_table(const ViTConfig& enc, const MaeConfig& dec);

// The visible patches of one image: Nv distinct indices in [0, Np), ascending, drawn from `seed`
// alone (a per-sample generator: the same image in the same epoch is masked the same way on any
// number of threads or ranks, and after a resume).
void draw_visible_patches(uint64_t seed, int num_patches, int num_visible, int* keep);
// The seed of sample `index`'s mask in `epoch` of a run seeded `seed`.
uint64_t mask_seed(uint64_t seed, int64_t epoch, int64_t index);

class MaskedAutoencoder {
 public:
  MaskedAutoencoder(const ViTConfig& encoder, const MaeConfig& decoder);
  ViT& encoder() { return enc_; }
  const ViT& encoder() const { return enc_; }
  const MaeConfig& config() const { return cfg_; }
  int num_visible() const { return cfg_.num_visible(enc_.config().num_patches()); }
  int patch_values() const;  // C * P * P: one reconstructed patch

  // ---- decoder parameters: one arena [params | grads | adam m | adam v] ----
  const std::vector<ParamInfo>& decoder_params() const { return table_; }
  size_t num_decoder_params() const { return n_; }
  float* decoder_data() { return arena_.data(); }
  const float* decoder_data() const { return arena_.data(); }
  float* decoder_grad() { return arena_.data() + n_; }
  float* decoder_param_ptr(const std::string& name);  // throws if unknown

  // Encoder: ViT::init. Decoder: trunc-normal(0.02) matrices, zero biases, LayerNorm (1, 0),
  // mask token N(0, 0.02), position embedding the fixed 2-D sine-cosine table of the MAE code
  // (here a starting point: it is learned).
  void init(uint64_t seed);

  // images (B, C, S, S), normalised as for the ViT; keep (B, Nv) each image's visible patches
  // (distinct, in [0, Np)). Returns the loss; keeps what backward() needs.
  float forward(const float* images, const int* keep, int B);
  // Accumulates the gradients of the last forward's loss: the decoder's and the encoder's.
  void backward();
  void zero_grad();
  // AdamW over both arenas with one global gradient-norm clip (clip_norm <= 0: off). Returns the
  // norm before clipping; throws NonFiniteError on a NaN or inf gradient.
  double adamw_step(cpu::AdamWParams hp, float clip_norm);
  void reset_optimizer();

  // From the last forward, for pictures: each image with its hidden patches replaced by the
  // reconstruction, in the input's normalised pixel space (B, C, S, S). With norm_pix_loss the
  // prediction is un-normalised with the true patch's mean and spread, as the MAE paper's figures.
  std::vector<float> reconstruction() const;
  // 1 where patch p of image b was hidden, 0 where visible: (B, Np).
  std::vector<float> hidden_mask() const;
  int last_batch() const { return B_; }

 private:
  struct Acts;
  // The decoder's tensors (or their gradients: the same offsets on the gradient segment).
  struct DecoderParams {
    float *embed_w, *embed_b, *mask_token, *pos, *norm_w, *norm_b, *pred_w, *pred_b;
    std::vector<BlockParams> blocks;
  };
  DecoderParams bind_decoder(float* base) const;
  Acts layout(int B, float* base, size_t* total) const;
  void encode(const Acts& a);
  void decode(const Acts& a);
  ViTConfig ecfg_;
  MaeConfig cfg_;
  ViT enc_;
  std::vector<ParamInfo> table_;
  ParamOffsets enc_offsets_;                 // the encoder's tensors by role (its arena)
  std::vector<size_t> dec_offsets_;          // the decoder's eight named tensors, in DecoderParams order
  std::vector<BlockOffsets> dec_blocks_;     // the decoder's blocks
  size_t n_ = 0, ndecay_ = 0;
  FloatArena arena_;
  FloatArena acts_;
  int acts_batch_ = 0, B_ = 0;
  const float* images_ = nullptr;
  std::vector<int> rows_;  // (B, 1+Nv): 0 (the class token), then 1 + each visible patch
};

}  // namespace vit
