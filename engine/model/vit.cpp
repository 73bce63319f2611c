// The ViT on the CPU reference path. Forward saves, per block, exactly what the
// backward needs (the "tape" is the fixed block structure below); backward() walks it
// in reverse. Shapes: B batch, N = 1 + Np tokens, D width, M MLP width, H heads.
#include "engine/model/vit.h"
#include "engine/model/block.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>

namespace vit {

// ---------------------------------------------------------------- config
void ViTConfig::validate() const {
  auto bad = [&](const std::string& field, const std::string& why) {
    throw std::invalid_argument("ViTConfig." + field + ": " + why + " (" + to_string() + ")");
  };
  if (patch <= 0) bad("patch", "must be positive");
  if (image_size <= 0 || image_size % patch) bad("image_size", "must be a positive multiple of patch");
  if (channels <= 0) bad("channels", "must be positive");
  if (dim <= 0) bad("dim", "must be positive");
  if (depth <= 0) bad("depth", "must be positive");
  if (heads <= 0 || dim % heads) bad("heads", "must divide dim");
  if (mlp_dim <= 0) bad("mlp_dim", "must be positive");
  if (num_classes <= 0) bad("num_classes", "must be positive");
  if (!(dropout >= 0.f && dropout < 1.f)) bad("dropout", "must be in [0, 1)");
  if (!(ln_eps > 0.f)) bad("ln_eps", "must be positive");
}

ViTConfig ViTConfig::preset(const std::string& name) {
  ViTConfig c;
  c.name = name;
  if (name == "vit_ti16") {
    c.dim = 192, c.heads = 3, c.mlp_dim = 768;
  } else if (name == "vit_s16") {
    c.dim = 384, c.heads = 6, c.mlp_dim = 1536;
  } else if (name == "vit_b16") {
    c.dim = 768, c.heads = 12, c.mlp_dim = 3072;
  } else {
    throw std::invalid_argument("unknown model preset '" + name + "' (known: vit_ti16, vit_s16, vit_b16)");
  }
  return c;
}

bool ViTConfig::same_architecture(const ViTConfig& o) const {
  return image_size == o.image_size && patch == o.patch && channels == o.channels && dim == o.dim && depth == o.depth &&
         heads == o.heads && mlp_dim == o.mlp_dim && num_classes == o.num_classes;
}

std::string ViTConfig::to_string() const {
  std::ostringstream s;
  s << name << "(image " << image_size << ", patch " << patch << ", dim " << dim << ", depth " << depth << ", heads "
    << heads << ", mlp " << mlp_dim << ", classes " << num_classes << ", dropout " << dropout << ")";
  return s.str();
}

// ---------------------------------------------------------------- parameters
ViT::ViT(const ViTConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  table_ = param_table(cfg_);
  offsets_ = param_offsets(table_, cfg_.depth);
  for (auto& p : table_) {
    nparams_ += p.numel;
    if (p.decay) ndecay_ += p.numel;
  }
  arena_.assign(4 * nparams_, 0.0f);
  if (const char* p = std::getenv("VITENGINE_CPU_PRECISION")) {
    const std::string v = p;
    if (v != "fp32" && v != "bf16")
      throw std::invalid_argument("VITENGINE_CPU_PRECISION must be fp32 or bf16, got '" + v + "'");
    precision_ = v == "bf16" ? InferencePrecision::bf16 : InferencePrecision::fp32;
  }
}

const ParamInfo& ViT::param(const std::string& name) const {
  for (auto& p : table_)
    if (p.name == name) return p;
  throw std::out_of_range("no parameter named '" + name + "' in " + cfg_.to_string());
}

void ViT::init(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  auto trunc_normal = [&](float* x, size_t n, double std) {  // truncated at +-2 std, as timm/torch
    for (size_t i = 0; i < n; i++) {
      double v;
      do v = nd(rng);
      while (v < -2.0 || v > 2.0);
      x[i] = (float)(v * std);
    }
  };
  std::fill(arena_.begin(), arena_.end(), 0.0f);
  for (auto& p : table_) {
    float* x = param_data() + p.offset;
    const std::string& n = p.name;
    auto ends = [&](const std::string& s) {
      return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
    };
    if (n == "conv_proj.weight") {
      trunc_normal(x, p.numel, std::sqrt(1.0 / (cfg_.channels * cfg_.patch * cfg_.patch)));
    } else if (n == "heads.head.weight" || n == "class_token") {
      // zeros (torchvision)
    } else if (n == "encoder.pos_embedding") {
      for (size_t i = 0; i < p.numel; i++) x[i] = (float)(nd(rng) * 0.02);
    } else if (p.decay) {
      trunc_normal(x, p.numel, 0.02);
    } else if (ends("ln_1.weight") || ends("ln_2.weight") || n == "encoder.ln.weight") {
      std::fill(x, x + p.numel, 1.0f);
    }
  }
}

// ---------------------------------------------------------------- activations
// Saved per block: BlockActs (engine/model/block.h); then, all (B, N, .) row-major:
struct Acts {
  float *patches, *tokens, *x0;  // (B,Np,D), (B,N,D) embedded, (B,N,D) after embedding dropout
  std::vector<BlockActs> blocks;
  float* x_out;                            // final block output (B,N,D)
  float *cls, *lnf, *lnf_mean, *lnf_rstd;  // (B,D) class-token rows, final LN
  float *logits, *dlogits;                 // (B,C)
  // backward scratch
  float *dx, *dcls;
  BlockScratch scratch;
};

static BlockShape block_shape(const ViTConfig& c, int B) {
  return {B, c.seq_len(), c.dim, c.heads, c.mlp_dim, c.ln_eps};
}

static Acts layout_acts(const ViTConfig& c, int B, float* base, size_t* total) {
  const size_t N = c.seq_len(), D = c.dim, M = c.mlp_dim, Np = c.num_patches(), C = c.num_classes;
  size_t off = 0;
  auto take = [&](size_t n) {
    float* p = base ? base + off : nullptr;
    off += n;
    return p;
  };
  const size_t BND = B * N * D, BNM = B * N * M;
  const BlockShape bs = block_shape(c, B);
  Acts a;
  a.patches = take(B * Np * D);
  a.tokens = take(BND);
  a.x0 = take(BND);
  for (int l = 0; l < c.depth; l++) {
    BlockActs b;
    off += block_acts_layout(bs, c.dropout > 0, base ? base + off : nullptr, &b);
    b.x_in = l == 0 ? a.x0 : nullptr;  // linked below
    a.blocks.push_back(b);
  }
  for (int l = 1; l < c.depth; l++) a.blocks[l].x_in = take(BND);
  a.x_out = take(BND);
  a.cls = take(B * D);
  a.lnf = take(B * D);
  a.lnf_mean = take(B);
  a.lnf_rstd = take(B);
  a.logits = take(B * C);
  a.dlogits = take(B * C);
  a.dx = take(BND);
  a.scratch.dx2 = take(BND);
  a.scratch.dtmp = take(BND);
  a.scratch.dqkv = take(3 * BND);
  a.scratch.dh = take(BNM);
  a.scratch.dh2 = take(BNM);
  a.dcls = take(B * D);
  *total = off;
  return a;
}

// Block l's noise in a step: dropout only when training, drop-path rising with depth.
static BlockNoise block_noise(const ViTConfig& c, const ForwardOptions& o, int l) {
  BlockNoise n;
  n.dropout = o.training ? c.dropout : 0.0f;
  n.drop_path = o.training ? drop_path_rate(o.drop_path, l, c.depth) : 0.0f;
  n.seed = o.dropout_seed;
  n.site = 1 + 3 * l;
  n.layer = l;
  return n;
}

void ViT::ensure_activations(int B) {
  if ((size_t)B <= acts_batch_) return;
  size_t total = 0;
  layout_acts(cfg_, B, nullptr, &total);
  acts_.assign(total, 0.0f);  // the only allocation: grows with the largest batch seen
  acts_batch_ = B;
}

const float* ViT::forward(const float* images, int B, const ForwardOptions& opt) {
  if (B <= 0) throw std::invalid_argument("ViT::forward: batch size must be positive, got " + std::to_string(B));
  if (!images) throw std::invalid_argument("ViT::forward: images is null");
  B_ = B;
  last_inference_ = opt.inference && !opt.training;
  if (last_inference_) return forward_inference(images, B);
  ensure_activations(B);
  fopt_ = opt;
  images_ = images;
  size_t total;
  Acts a = layout_acts(cfg_, B, acts_.data(), &total);
  ModelParams p = bind(offsets_, arena_.data());  // not param_data(): that marks the weights changed
  const int N = cfg_.seq_len(), D = cfg_.dim, Np = cfg_.num_patches();
  const int S = cfg_.image_size, BN = B * N;
  const float pd = opt.training ? cfg_.dropout : 0.0f;
  using namespace cpu;

  patch_embed_fwd(images, p.conv_w, p.conv_b, a.patches, PatchShape{B, cfg_.channels, S, S, cfg_.patch, D});
  embed_tokens_fwd(a.patches, p.cls, p.pos, a.tokens, B, Np, D);
  dropout_fwd(a.tokens, a.x0, (size_t)BN * D, pd, site_seed(opt.dropout_seed, 0));

  for (int l = 0; l < cfg_.depth; l++) {
    float* x_out = l + 1 < cfg_.depth ? a.blocks[l + 1].x_in : a.x_out;
    block_fwd(p.blocks[l], a.blocks[l], x_out, a.scratch.dtmp, block_shape(cfg_, B), block_noise(cfg_, opt, l));
  }
  // encoder.ln is applied to every token in torchvision, but only token 0 reaches the
  // head, and LayerNorm is per row: normalising the class-token rows alone is exact.
  for (int i = 0; i < B; i++) std::memcpy(a.cls + (size_t)i * D, a.x_out + (size_t)i * N * D, sizeof(float) * D);
  layernorm_fwd(a.cls, p.lnf_w, p.lnf_b, a.lnf, a.lnf_mean, a.lnf_rstd, B, D, cfg_.ln_eps);
  linear_fwd(a.lnf, p.head_w, p.head_b, a.logits, B, D, cfg_.num_classes);
  features_ = a.lnf;
  return a.logits;
}

static const char* kNoTape =
    "the last ViT::forward was an inference forward (ForwardOptions::inference), which keeps no activations for "
    "loss, backward or attention maps";

float ViT::loss(const int* labels, float smoothing) {
  if (B_ == 0) throw std::logic_error("ViT::loss called before forward");
  if (last_inference_) throw std::logic_error(kNoTape);
  size_t total;
  Acts a = layout_acts(cfg_, B_, acts_.data(), &total);
  labels_.assign(labels, labels + B_);
  smoothing_ = smoothing;
  return cpu::softmax_xent_fwd(a.logits, labels, (float*)nullptr, B_, cfg_.num_classes, smoothing);
}

void ViT::backward() {
  if (labels_.size() != (size_t)B_) throw std::logic_error("ViT::backward called without loss() for this batch");
  size_t total;
  Acts a = layout_acts(cfg_, B_, acts_.data(), &total);
  cpu::softmax_xent_bwd(a.logits, labels_.data(), a.dlogits, B_, cfg_.num_classes, smoothing_);
  backward_from(a.dlogits);
}

void ViT::backward_from(const float* dlogits) {
  if (B_ == 0) throw std::logic_error("ViT::backward_from called before forward");
  if (last_inference_) throw std::logic_error(kNoTape);
  const int B = B_;
  size_t total;
  Acts a = layout_acts(cfg_, B, acts_.data(), &total);
  ModelParams p = bind(offsets_, arena_.data());
  ModelParams g = bind(offsets_, grad_data());
  const int N = cfg_.seq_len(), D = cfg_.dim, Np = cfg_.num_patches();
  const int S = cfg_.image_size, BN = B * N;
  const float pd = fopt_.training ? cfg_.dropout : 0.0f;
  const uint64_t seed = fopt_.dropout_seed;
  using namespace cpu;

  // head and final LayerNorm (class-token rows only; all other rows get zero gradient)
  linear_bwd(a.lnf, p.head_w, dlogits, a.dcls, g.head_w, g.head_b, B, D, cfg_.num_classes);
  layernorm_bwd(a.cls, p.lnf_w, a.lnf_mean, a.lnf_rstd, a.dcls, a.scratch.dtmp, g.lnf_w, g.lnf_b, B, D);
  std::fill(a.dx, a.dx + (size_t)BN * D, 0.0f);  // dx = d(block output)
  for (int i = 0; i < B; i++) std::memcpy(a.dx + (size_t)i * N * D, a.scratch.dtmp + (size_t)i * D, sizeof(float) * D);

  for (int l = cfg_.depth - 1; l >= 0; l--)
    block_bwd(p.blocks[l], g.blocks[l], a.blocks[l], a.dx, a.scratch, block_shape(cfg_, B), block_noise(cfg_, fopt_, l));
  dropout_bwd(a.dx, a.scratch.dtmp, (size_t)BN * D, pd, site_seed(seed, 0));
  embed_tokens_bwd(a.scratch.dtmp, a.patches /* reuse as dpatches */, g.cls, g.pos, B, Np, D);
  patch_embed_bwd(images_, a.patches, g.conv_w, g.conv_b, PatchShape{B, cfg_.channels, S, S, cfg_.patch, D});
}

void ViT::zero_grad() { std::fill(grad_data(), grad_data() + nparams_, 0.0f); }

const float* ViT::attention_probs(int layer) const {
  if (layer < 0 || layer >= cfg_.depth)
    throw std::out_of_range("attention_probs: layer " + std::to_string(layer) + " of " + std::to_string(cfg_.depth));
  if (B_ == 0) throw std::logic_error("attention_probs called before forward");
  if (last_inference_) throw std::logic_error(kNoTape);
  size_t total;
  Acts a = layout_acts(cfg_, B_, const_cast<float*>(acts_.data()), &total);
  return a.blocks[layer].probs;
}

double ViT::adamw_step(cpu::AdamWParams hp, float clip_norm) {
  double norm = std::sqrt(cpu::sum_squares(grad_data(), nparams_));
  if (!std::isfinite(norm)) throw NonFiniteError("AdamW: gradient norm is not finite (NaN or inf in gradients)");
  if (clip_norm > 0 && norm > clip_norm) hp.grad_scale *= (float)(clip_norm / (norm + 1e-6));
  cpu::adamw_step(param_data(), grad_data(), adam_m(), adam_v(), nparams_, ndecay_, hp);
  return norm;
}

double ViT::adamw_step_scaled(cpu::AdamWParams hp, float clip_norm, const std::vector<float>& scale) {
  const auto& table = params();
  if (scale.size() != table.size())
    throw std::invalid_argument("adamw_step_scaled: " + std::to_string(scale.size()) + " scales for " +
                                std::to_string(table.size()) + " tensors");
  double ss = 0;
  for (size_t i = 0; i < table.size(); ++i)
    if (scale[i] > 0) ss += cpu::sum_squares(grad_data() + table[i].offset, table[i].numel);
  const double norm = std::sqrt(ss);
  if (!std::isfinite(norm)) throw NonFiniteError("AdamW: gradient norm is not finite (NaN or inf in gradients)");
  if (clip_norm > 0 && norm > clip_norm) hp.grad_scale *= float(clip_norm / (norm + 1e-6));
  const float lr = hp.lr;
  for (size_t i = 0; i < table.size(); ++i) {
    if (!(scale[i] > 0)) continue;
    const auto& p = table[i];
    hp.lr = lr * scale[i];
    cpu::adamw_step(param_data() + p.offset, grad_data() + p.offset, adam_m() + p.offset, adam_v() + p.offset, p.numel,
                    p.decay ? p.numel : 0, hp);
  }
  return norm;
}

void ViT::reset_optimizer() { std::fill(arena_.begin() + 2 * nparams_, arena_.end(), 0.0f); }

}  // namespace vit
