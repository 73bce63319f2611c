// The ViT on the CPU reference path. Forward saves, per block, exactly what the
// backward needs (the "tape" is the fixed block structure below); backward() walks it
// in reverse. Shapes: B batch, N = 1 + Np tokens, D width, M MLP width, H heads.
#include "engine/model/vit.h"

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
// Pointers to one block's parameters (or gradients: same offsets, other base).
struct BlockParams {
  float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
};
struct ModelParams {
  float *conv_w, *conv_b, *cls, *pos, *lnf_w, *lnf_b, *head_w, *head_b;
  std::vector<BlockParams> blocks;
};

static ModelParams bind(const ParamOffsets& o, float* base) {
  ModelParams p;
  p.conv_w = base + o.conv_w, p.conv_b = base + o.conv_b, p.cls = base + o.cls, p.pos = base + o.pos;
  p.lnf_w = base + o.lnf_w, p.lnf_b = base + o.lnf_b, p.head_w = base + o.head_w, p.head_b = base + o.head_b;
  for (const BlockOffsets& b : o.blocks)
    p.blocks.push_back({base + b.ln1_w, base + b.ln1_b, base + b.qkv_w, base + b.qkv_b, base + b.proj_w,
                        base + b.proj_b, base + b.ln2_w, base + b.ln2_b, base + b.fc1_w, base + b.fc1_b, base + b.fc2_w,
                        base + b.fc2_b});
  return p;
}
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
// Saved per block (all (B, N, .) row-major):
struct BlockActs {
  float* x_in;  // block input (B,N,D) = previous block's output
  float *ln1, *ln1_mean, *ln1_rstd;
  float* qkv;    // (B,N,3D)
  float* probs;  // (B,H,N,N)
  float* att;    // (B,N,D) attention output before out_proj
  float* x_mid;  // (B,N,D) after the attention residual
  float *ln2, *ln2_mean, *ln2_rstd;
  float* h;   // (B,N,M) fc1 output (pre-GELU)
  float* g;   // (B,N,M) GELU output
  float* gd;  // (B,N,M) after dropout (== g when dropout is off)
};
struct Acts {
  float *patches, *tokens, *x0;  // (B,Np,D), (B,N,D) embedded, (B,N,D) after embedding dropout
  std::vector<BlockActs> blocks;
  float* x_out;                            // final block output (B,N,D)
  float *cls, *lnf, *lnf_mean, *lnf_rstd;  // (B,D) class-token rows, final LN
  float *logits, *dlogits;                 // (B,C)
  // backward scratch
  float *dx, *dx2, *dtmp, *dqkv, *dh, *dh2, *dcls;
};

static Acts layout_acts(const ViTConfig& c, int B, float* base, size_t* total) {
  const size_t N = c.seq_len(), D = c.dim, M = c.mlp_dim, H = c.heads, Np = c.num_patches(), C = c.num_classes;
  size_t off = 0;
  auto take = [&](size_t n) {
    float* p = base ? base + off : nullptr;
    off += n;
    return p;
  };
  const size_t BND = B * N * D, BNM = B * N * M;
  Acts a;
  a.patches = take(B * Np * D);
  a.tokens = take(BND);
  a.x0 = take(BND);
  for (int l = 0; l < c.depth; l++) {
    BlockActs b;
    b.x_in = l == 0 ? a.x0 : nullptr;  // linked below
    b.ln1 = take(BND);
    b.ln1_mean = take(B * N);
    b.ln1_rstd = take(B * N);
    b.qkv = take(3 * BND);
    b.probs = take(B * H * N * N);
    b.att = take(BND);
    b.x_mid = take(BND);
    b.ln2 = take(BND);
    b.ln2_mean = take(B * N);
    b.ln2_rstd = take(B * N);
    b.h = take(BNM);
    b.g = take(BNM);
    b.gd = c.dropout > 0 ? take(BNM) : b.g;
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
  a.dx2 = take(BND);
  a.dtmp = take(BND);
  a.dqkv = take(3 * BND);
  a.dh = take(BNM);
  a.dh2 = take(BNM);
  a.dcls = take(B * D);
  *total = off;
  return a;
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
  const int N = cfg_.seq_len(), D = cfg_.dim, M = cfg_.mlp_dim, H = cfg_.heads, Np = cfg_.num_patches();
  const int S = cfg_.image_size, BN = B * N;
  const float pd = opt.training ? cfg_.dropout : 0.0f;
  using namespace cpu;

  patch_embed_fwd(images, p.conv_w, p.conv_b, a.patches, PatchShape{B, cfg_.channels, S, S, cfg_.patch, D});
  embed_tokens_fwd(a.patches, p.cls, p.pos, a.tokens, B, Np, D);
  dropout_fwd(a.tokens, a.x0, (size_t)BN * D, pd, site_seed(opt.dropout_seed, 0));

  for (int l = 0; l < cfg_.depth; l++) {
    BlockActs& b = a.blocks[l];
    const BlockParams& w = p.blocks[l];
    float* x_out = l + 1 < cfg_.depth ? a.blocks[l + 1].x_in : a.x_out;
    const int s0 = 1 + 3 * l;
    // attention branch: x_mid = x + dropout(out_proj(attention(in_proj(ln_1(x)))))
    layernorm_fwd(b.x_in, w.ln1_w, w.ln1_b, b.ln1, b.ln1_mean, b.ln1_rstd, BN, D, cfg_.ln_eps);
    linear_fwd(b.ln1, w.qkv_w, w.qkv_b, b.qkv, BN, D, 3 * D);  // (B,N,D) -> (B,N,3D)
    attention_fwd(b.qkv, b.att, b.probs, vit::AttnShape{B, N, H, D / H});
    linear_fwd(b.att, w.proj_w, w.proj_b, a.dtmp, BN, D, D);
    dropout_fwd(a.dtmp, a.dtmp, (size_t)BN * D, pd, site_seed(opt.dropout_seed, s0));
    const float dp = opt.training ? drop_path_rate(opt.drop_path, l, cfg_.depth) : 0.0f;
    if (dp > 0) drop_path(a.dtmp, a.dtmp, B, (size_t)N * D, dp, drop_path_seed(opt.dropout_seed, l, 0));
    add_fwd(b.x_in, a.dtmp, b.x_mid, (size_t)BN * D);
    // MLP branch: x_out = x_mid + dropout(fc2(dropout(gelu(fc1(ln_2(x_mid))))))
    layernorm_fwd(b.x_mid, w.ln2_w, w.ln2_b, b.ln2, b.ln2_mean, b.ln2_rstd, BN, D, cfg_.ln_eps);
    linear_fwd(b.ln2, w.fc1_w, w.fc1_b, b.h, BN, D, M);
    gelu_fwd(b.h, b.g, (size_t)BN * M);
    if (b.gd != b.g) dropout_fwd(b.g, b.gd, (size_t)BN * M, pd, site_seed(opt.dropout_seed, s0 + 1));
    linear_fwd(b.gd, w.fc2_w, w.fc2_b, a.dtmp, BN, M, D);
    dropout_fwd(a.dtmp, a.dtmp, (size_t)BN * D, pd, site_seed(opt.dropout_seed, s0 + 2));
    if (dp > 0) drop_path(a.dtmp, a.dtmp, B, (size_t)N * D, dp, drop_path_seed(opt.dropout_seed, l, 1));
    add_fwd(b.x_mid, a.dtmp, x_out, (size_t)BN * D);
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
  const int N = cfg_.seq_len(), D = cfg_.dim, M = cfg_.mlp_dim, H = cfg_.heads, Np = cfg_.num_patches();
  const int S = cfg_.image_size, BN = B * N;
  const float pd = fopt_.training ? cfg_.dropout : 0.0f;
  const uint64_t seed = fopt_.dropout_seed;
  using namespace cpu;

  // head and final LayerNorm (class-token rows only; all other rows get zero gradient)
  linear_bwd(a.lnf, p.head_w, dlogits, a.dcls, g.head_w, g.head_b, B, D, cfg_.num_classes);
  layernorm_bwd(a.cls, p.lnf_w, a.lnf_mean, a.lnf_rstd, a.dcls, a.dtmp, g.lnf_w, g.lnf_b, B, D);
  std::fill(a.dx, a.dx + (size_t)BN * D, 0.0f);  // dx = d(block output)
  for (int i = 0; i < B; i++) std::memcpy(a.dx + (size_t)i * N * D, a.dtmp + (size_t)i * D, sizeof(float) * D);

  for (int l = cfg_.depth - 1; l >= 0; l--) {
    BlockActs& b = a.blocks[l];
    const BlockParams& w = p.blocks[l];
    const BlockParams& gw = g.blocks[l];
    const int s0 = 1 + 3 * l;
    // MLP branch. dx holds d(x_out); it also flows straight to x_mid through the residual.
    dropout_bwd(a.dx, a.dtmp, (size_t)BN * D, pd, site_seed(seed, s0 + 2));
    const float dp = fopt_.training ? drop_path_rate(fopt_.drop_path, l, cfg_.depth) : 0.0f;
    if (dp > 0) drop_path(a.dtmp, a.dtmp, B, (size_t)N * D, dp, drop_path_seed(seed, l, 1));
    linear_bwd(b.gd, w.fc2_w, a.dtmp, a.dh, gw.fc2_w, gw.fc2_b, BN, M, D);
    if (b.gd != b.g) dropout_bwd(a.dh, a.dh, (size_t)BN * M, pd, site_seed(seed, s0 + 1));
    gelu_bwd(b.h, a.dh, a.dh2, (size_t)BN * M);
    linear_bwd(b.ln2, w.fc1_w, a.dh2, a.dtmp, gw.fc1_w, gw.fc1_b, BN, D, M);
    layernorm_bwd(b.x_mid, w.ln2_w, b.ln2_mean, b.ln2_rstd, a.dtmp, a.dx2, gw.ln2_w, gw.ln2_b, BN, D);
    add_fwd(a.dx, a.dx2, a.dx, (size_t)BN * D);  // dx = d(x_mid)
    // attention branch
    dropout_bwd(a.dx, a.dtmp, (size_t)BN * D, pd, site_seed(seed, s0));
    if (dp > 0) drop_path(a.dtmp, a.dtmp, B, (size_t)N * D, dp, drop_path_seed(seed, l, 0));
    linear_bwd(b.att, w.proj_w, a.dtmp, a.dx2, gw.proj_w, gw.proj_b, BN, D, D);  // dx2 = d(att)
    attention_bwd(b.qkv, b.probs, a.dx2, a.dqkv, vit::AttnShape{B, N, H, D / H});
    linear_bwd(b.ln1, w.qkv_w, a.dqkv, a.dtmp, gw.qkv_w, gw.qkv_b, BN, D, 3 * D);
    layernorm_bwd(b.x_in, w.ln1_w, b.ln1_mean, b.ln1_rstd, a.dtmp, a.dx2, gw.ln1_w, gw.ln1_b, BN, D);
    add_fwd(a.dx, a.dx2, a.dx, (size_t)BN * D);  // dx = d(x_in)
  }
  dropout_bwd(a.dx, a.dtmp, (size_t)BN * D, pd, site_seed(seed, 0));
  embed_tokens_bwd(a.dtmp, a.patches /* reuse as dpatches */, g.cls, g.pos, B, Np, D);
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
