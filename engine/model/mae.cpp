// The masked autoencoder on the CPU reference path (engine/model/mae.h). Forward saves what the
// backward needs in one arena (the "tape" is the fixed structure below); backward walks it in
// reverse. B batch, Np patches, Nv visible patches, D / Dd encoder / decoder width, K = C*P*P.
#include "engine/model/mae.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>

#include "engine/model/block.h"
#include "engine/util/rng.h"

namespace vit {

// ---------------------------------------------------------------- config and tensors
int MaeConfig::num_visible(int num_patches) const {
  return std::max(1, int(double(num_patches) * (1.0 - double(mask_ratio))));
}

void MaeConfig::validate() const {
  auto bad = [](const std::string& f, const std::string& why) {
    throw std::invalid_argument("masked autoencoder: " + f + " " + why);
  };
  if (dim <= 0) bad("decoder_dim", "must be positive");
  if (depth <= 0) bad("decoder_depth", "must be positive");
  if (heads <= 0 || dim % heads) bad("decoder_heads", "must divide decoder_dim (" + std::to_string(dim) + ")");
  if (mlp_dim <= 0) bad("decoder_mlp_dim", "must be positive");
  if (!(mask_ratio > 0.0f && mask_ratio < 1.0f)) bad("mask_ratio", "must be in (0, 1)");
}

static std::string decoder_prefix(int i) { return "decoder.layers.decoder_layer_" + std::to_string(i) + "."; }

std::vector<ParamInfo> decoder_param_table(const ViTConfig& e, const MaeConfig& d) {
  const int64_t D = e.dim, Dd = d.dim, M = d.mlp_dim, K = int64_t(e.channels) * e.patch * e.patch;
  std::vector<ParamInfo> t;
  add_param(t, "decoder_embed.weight", {Dd, D}, true);
  for (int i = 0; i < d.depth; i++) add_block_weights(t, decoder_prefix(i), Dd, M);
  add_param(t, "decoder_pred.weight", {K, Dd}, true);
  add_param(t, "decoder_embed.bias", {Dd}, false);
  add_param(t, "mask_token", {1, 1, Dd}, false);
  add_param(t, "decoder_pos_embed", {1, e.seq_len(), Dd}, false);
  for (int i = 0; i < d.depth; i++) add_block_rest(t, decoder_prefix(i), Dd, M);
  add_param(t, "decoder_norm.weight", {Dd}, false);
  add_param(t, "decoder_norm.bias", {Dd}, false);
  add_param(t, "decoder_pred.bias", {K}, false);
  assign_offsets(t);
  return t;
}

uint64_t mask_seed(uint64_t seed, int64_t epoch, int64_t index) {
  return mix_seed(seed ^ 0x6D61736B2D6D6165ull /* "mask-mae" */, uint64_t(epoch), uint64_t(index));
}

void draw_visible_patches(uint64_t seed, int num_patches, int num_visible, int* keep) {
  if (num_visible <= 0 || num_visible > num_patches)
    throw std::invalid_argument("draw_visible_patches: " + std::to_string(num_visible) + " visible of " +
                                std::to_string(num_patches) + " patches");
  std::vector<int> order(num_patches);
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed);
  shuffle(order, rng);
  std::sort(order.begin(), order.begin() + num_visible);  // ascending: the tokens keep image order
  std::copy(order.begin(), order.begin() + num_visible, keep);
}

// ---------------------------------------------------------------- model
MaskedAutoencoder::MaskedAutoencoder(const ViTConfig& encoder, const MaeConfig& decoder)
    : ecfg_(encoder), cfg_(decoder), enc_(encoder) {
  cfg_.validate();
  table_ = decoder_param_table(ecfg_, cfg_);
  enc_offsets_ = param_offsets(enc_.params(), ecfg_.depth);
  for (const char* name : {"decoder_embed.weight", "decoder_embed.bias", "mask_token", "decoder_pos_embed",
                           "decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"})
    dec_offsets_.push_back(param_offset(table_, name));
  for (int i = 0; i < cfg_.depth; i++) dec_blocks_.push_back(block_offsets(table_, decoder_prefix(i)));
  for (const auto& p : table_) {
    n_ += p.numel;
    if (p.decay) ndecay_ += p.numel;
  }
  arena_.assign(4 * n_, 0.0f);
}

int MaskedAutoencoder::patch_values() const { return ecfg_.channels * ecfg_.patch * ecfg_.patch; }

float* MaskedAutoencoder::decoder_param_ptr(const std::string& name) {
  for (const auto& p : table_)
    if (p.name == name) return arena_.data() + p.offset;
  throw std::out_of_range("no decoder tensor named '" + name + "'");
}

// MAE's fixed 2-D sine-cosine table: half the width encodes the patch row, half the column, each
// as sin and cos of the position at Dd/4 frequencies 1 / 10000^(i / (Dd/4)); the class token's
// row is zero. A width not divisible by 4 gets N(0, 0.02) instead.
static void sincos_2d(float* pos, int grid, int Dd, std::mt19937_64& rng) {
  if (Dd % 4) {
    std::normal_distribution<double> nd(0.0, 0.02);
    for (size_t i = 0; i < size_t(1 + grid * grid) * Dd; i++) pos[i] = float(nd(rng));
    return;
  }
  const int q = Dd / 4;
  std::fill(pos, pos + Dd, 0.0f);
  for (int r = 0; r < grid; r++)
    for (int c = 0; c < grid; c++) {
      float* row = pos + size_t(1 + r * grid + c) * Dd;
      for (int i = 0; i < q; i++) {
        const double w = 1.0 / std::pow(10000.0, double(i) / q);
        row[i] = float(std::sin(c * w)), row[q + i] = float(std::cos(c * w));
        row[2 * q + i] = float(std::sin(r * w)), row[3 * q + i] = float(std::cos(r * w));
      }
    }
}

void MaskedAutoencoder::init(uint64_t seed) {
  enc_.init(seed);
  std::mt19937_64 rng(seed ^ 0xDEC0DE5EEDull);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::fill(arena_.begin(), arena_.end(), 0.0f);
  for (const auto& p : table_) {
    float* x = arena_.data() + p.offset;
    const std::string& n = p.name;
    auto ends = [&](const std::string& s) { return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
    if (p.decay) {
      for (size_t i = 0; i < p.numel; i++) {
        double v;
        do v = nd(rng);
        while (v < -2.0 || v > 2.0);
        x[i] = float(v * 0.02);
      }
    } else if (n == "mask_token") {
      for (size_t i = 0; i < p.numel; i++) x[i] = float(nd(rng) * 0.02);
    } else if (n == "decoder_pos_embed") {
      sincos_2d(x, ecfg_.grid(), cfg_.dim, rng);
    } else if (ends("ln_1.weight") || ends("ln_2.weight") || n == "decoder_norm.weight") {
      std::fill(x, x + p.numel, 1.0f);
    }
  }
}

// ---------------------------------------------------------------- activations
struct MaskedAutoencoder::Acts {
  int B, Nv, Ne, Nd, K;  // Ne = 1 + Nv encoder tokens, Nd = 1 + Np decoder tokens
  BlockShape es, ds;
  float *patches, *tokens, *x0;            // (B,Np,D), (B,Nd,D) embedded, (B,Ne,D) gathered
  std::vector<BlockActs> enc, dec;         // x_in of block 0: x0 / y0
  float *enc_out, *latent, *lat_mean, *lat_rstd;  // (B,Ne,D), LN over every token
  float *emb, *y0;                         // (B,Ne,Dd) decoder_embed, (B,Nd,Dd) scattered + position
  float *dec_out, *dn, *dn_mean, *dn_rstd;  // (B,Nd,Dd), decoder_norm
  float *pred, *target, *tmean, *tstd, *mask;  // (B,Nd,K) x2, (B*Nd) x3; row 0 of each image is the class token's
  // backward scratch
  float *dpred, *ddec, *demb, *dlat, *denc, *dtokens;
  BlockScratch es_t, ds_t;
};

MaskedAutoencoder::Acts MaskedAutoencoder::layout(int B, float* base, size_t* total) const {
  Acts a;
  const int Np = ecfg_.num_patches(), D = ecfg_.dim, Dd = cfg_.dim;
  a.B = B, a.Nv = num_visible(), a.Ne = 1 + a.Nv, a.Nd = 1 + Np, a.K = patch_values();
  a.es = {B, a.Ne, D, ecfg_.heads, ecfg_.mlp_dim, ecfg_.ln_eps};
  a.ds = {B, a.Nd, Dd, cfg_.heads, cfg_.mlp_dim, ecfg_.ln_eps};
  size_t off = 0;
  auto take = [&](size_t n) {
    float* p = base ? base + off : nullptr;
    off += n;
    return p;
  };
  const size_t BNe = size_t(B) * a.Ne, BNd = size_t(B) * a.Nd;
  a.patches = take(size_t(B) * Np * D);
  a.tokens = take(BNd * D);
  a.x0 = take(BNe * D);
  auto blocks = [&](std::vector<BlockActs>& v, int depth, const BlockShape& s, float* first, size_t width) {
    for (int l = 0; l < depth; l++) {
      BlockActs b;
      off += block_acts_layout(s, false, base ? base + off : nullptr, &b);
      b.x_in = l == 0 ? first : take(size_t(s.B) * s.N * width);
      v.push_back(b);
    }
  };
  blocks(a.enc, ecfg_.depth, a.es, a.x0, D);
  a.enc_out = take(BNe * D);
  a.latent = take(BNe * D);
  a.lat_mean = take(BNe);
  a.lat_rstd = take(BNe);
  a.emb = take(BNe * Dd);
  a.y0 = take(BNd * Dd);
  blocks(a.dec, cfg_.depth, a.ds, a.y0, Dd);
  a.dec_out = take(BNd * Dd);
  a.dn = take(BNd * Dd);
  a.dn_mean = take(BNd);
  a.dn_rstd = take(BNd);
  a.pred = take(BNd * a.K);
  a.target = take(BNd * a.K);
  a.tmean = take(BNd);
  a.tstd = take(BNd);
  a.mask = take(BNd);
  a.dpred = take(BNd * a.K);
  a.ddec = take(BNd * Dd);
  a.demb = take(BNe * Dd);
  a.dlat = take(BNe * D);
  a.denc = take(BNe * D);
  a.dtokens = take(BNd * D);
  auto scratch = [&](const BlockShape& s) {
    const size_t BN = size_t(s.B) * s.N;
    return BlockScratch{take(BN * s.D), take(BN * s.D), take(3 * BN * s.D), take(BN * s.M), take(BN * s.M)};
  };
  a.es_t = scratch(a.es);
  a.ds_t = scratch(a.ds);
  *total = off;
  return a;
}

// ---------------------------------------------------------------- forward
void MaskedAutoencoder::encode(const Acts& a) {
  using namespace cpu;
  const ViTConfig& c = ecfg_;
  const int B = a.B, D = c.dim, Np = c.num_patches(), S = c.image_size;
  ModelParams p = bind(enc_offsets_, const_cast<float*>(enc_.param_data()));
  patch_embed_fwd(images_, p.conv_w, p.conv_b, a.patches, PatchShape{B, c.channels, S, S, c.patch, D});
  embed_tokens_fwd(a.patches, p.cls, p.pos, a.tokens, B, Np, D);
  gather_tokens_fwd(a.tokens, rows_.data(), a.x0, B, a.Nd, a.Ne, D);
  for (int l = 0; l < c.depth; l++) {
    float* out = l + 1 < c.depth ? a.enc[l + 1].x_in : a.enc_out;
    BlockActs b = a.enc[l];
    block_fwd(p.blocks[l], b, out, a.es_t.dtmp, a.es, BlockNoise{});
  }
  layernorm_fwd(a.enc_out, p.lnf_w, p.lnf_b, a.latent, a.lat_mean, a.lat_rstd, B * a.Ne, D, c.ln_eps);
}

MaskedAutoencoder::DecoderParams MaskedAutoencoder::bind_decoder(float* base) const {
  const auto& o = dec_offsets_;
  DecoderParams d{base + o[0], base + o[1], base + o[2], base + o[3], base + o[4], base + o[5], base + o[6], base + o[7], {}};
  for (const BlockOffsets& b : dec_blocks_) d.blocks.push_back(bind_block(b, base));
  return d;
}

void MaskedAutoencoder::decode(const Acts& a) {
  using namespace cpu;
  const int B = a.B, D = ecfg_.dim, Dd = cfg_.dim;
  const DecoderParams w = bind_decoder(arena_.data());
  linear_fwd(a.latent, w.embed_w, w.embed_b, a.emb, B * a.Ne, D, Dd);
  scatter_tokens_fwd(a.emb, rows_.data(), w.mask_token, a.y0, B, a.Nd, a.Ne, Dd);
  add_position_fwd(a.y0, w.pos, a.y0, B, a.Nd, Dd);
  for (int l = 0; l < cfg_.depth; l++) {
    float* out = l + 1 < cfg_.depth ? a.dec[l + 1].x_in : a.dec_out;
    BlockActs b = a.dec[l];
    block_fwd(w.blocks[l], b, out, a.ds_t.dtmp, a.ds, BlockNoise{});
  }
  layernorm_fwd(a.dec_out, w.norm_w, w.norm_b, a.dn, a.dn_mean, a.dn_rstd, B * a.Nd, Dd, ecfg_.ln_eps);
  linear_fwd(a.dn, w.pred_w, w.pred_b, a.pred, B * a.Nd, Dd, a.K);
}

float MaskedAutoencoder::forward(const float* images, const int* keep, int B) {
  if (B <= 0) throw std::invalid_argument("MaskedAutoencoder::forward: batch size must be positive");
  if (!images || !keep) throw std::invalid_argument("MaskedAutoencoder::forward: images or keep is null");
  const int Np = ecfg_.num_patches(), Nv = num_visible();
  rows_.resize(size_t(B) * (1 + Nv));
  for (int b = 0; b < B; b++) {
    int* r = rows_.data() + size_t(b) * (1 + Nv);
    r[0] = 0;  // the class token always goes through
    std::vector<char> seen(Np, 0);
    for (int k = 0; k < Nv; k++) {
      const int p = keep[size_t(b) * Nv + k];
      if (p < 0 || p >= Np || seen[p]++)
        throw std::invalid_argument("MaskedAutoencoder::forward: image " + std::to_string(b) + "'s visible patch " +
                                    std::to_string(p) + " is out of range [0, " + std::to_string(Np) +
                                    ") or repeated");
      r[1 + k] = 1 + p;
    }
  }
  if (B > acts_batch_) {
    size_t total = 0;
    layout(B, nullptr, &total);
    acts_.assign(total, 0.0f);
    acts_batch_ = B;
  }
  B_ = B;
  images_ = images;
  size_t total;
  const Acts a = layout(B, acts_.data(), &total);
  encode(a);
  decode(a);
  // The target: every patch's pixels (row 0, the class token's, stays zero and unscored).
  const int K = a.K, S = ecfg_.image_size;
  std::fill(a.target, a.target + size_t(B) * a.Nd * K, 0.0f);
  for (int b = 0; b < B; b++)
    cpu::patchify(images + size_t(b) * ecfg_.channels * S * S, a.target + (size_t(b) * a.Nd + 1) * K, 1,
                  ecfg_.channels, S, S, ecfg_.patch);
  if (cfg_.norm_pix_loss) cpu::normalize_rows(a.target, a.tmean, a.tstd, B * a.Nd, K, 1e-6f);
  std::fill(a.mask, a.mask + size_t(B) * a.Nd, 1.0f);
  for (int b = 0; b < B; b++)
    for (int k = 0; k < a.Ne; k++) a.mask[size_t(b) * a.Nd + rows_[size_t(b) * a.Ne + k]] = 0.0f;
  return cpu::masked_mse_fwd(a.pred, a.target, a.mask, B * a.Nd, K);
}

// ---------------------------------------------------------------- backward
void MaskedAutoencoder::backward() {
  if (B_ == 0) throw std::logic_error("MaskedAutoencoder::backward called before forward");
  using namespace cpu;
  size_t total;
  const Acts a = layout(B_, acts_.data(), &total);
  const int B = B_, D = ecfg_.dim, Dd = cfg_.dim, Np = ecfg_.num_patches(), S = ecfg_.image_size;
  const DecoderParams w = bind_decoder(arena_.data()), g = bind_decoder(decoder_grad());
  // decoder: loss -> pred -> norm -> blocks -> position -> scatter -> decoder_embed
  masked_mse_bwd(a.pred, a.target, a.mask, a.dpred, B * a.Nd, a.K);
  linear_bwd(a.dn, w.pred_w, a.dpred, a.ds_t.dtmp, g.pred_w, g.pred_b, B * a.Nd, Dd, a.K);
  layernorm_bwd(a.dec_out, w.norm_w, a.dn_mean, a.dn_rstd, a.ds_t.dtmp, a.ddec, g.norm_w, g.norm_b, B * a.Nd, Dd);
  for (int l = cfg_.depth - 1; l >= 0; l--)
    block_bwd(w.blocks[l], g.blocks[l], a.dec[l], a.ddec, a.ds_t, a.ds, BlockNoise{});
  add_position_bwd(a.ddec, g.pos, B, a.Nd, Dd);
  scatter_tokens_bwd(a.ddec, rows_.data(), a.demb, g.mask_token, B, a.Nd, a.Ne, Dd);
  linear_bwd(a.latent, w.embed_w, a.demb, a.dlat, g.embed_w, g.embed_b, B * a.Ne, D, Dd);
  // encoder: norm -> blocks -> gather -> class token and position -> patch embedding
  ModelParams p = bind(enc_offsets_, const_cast<float*>(enc_.param_data()));
  ModelParams eg = bind(enc_offsets_, enc_.grad_data());
  layernorm_bwd(a.enc_out, p.lnf_w, a.lat_mean, a.lat_rstd, a.dlat, a.denc, eg.lnf_w, eg.lnf_b, B * a.Ne, D);
  for (int l = ecfg_.depth - 1; l >= 0; l--)
    block_bwd(p.blocks[l], eg.blocks[l], a.enc[l], a.denc, a.es_t, a.es, BlockNoise{});
  gather_tokens_bwd(a.denc, rows_.data(), a.dtokens, B, a.Nd, a.Ne, D);
  embed_tokens_bwd(a.dtokens, a.patches /* reuse as dpatches */, eg.cls, eg.pos, B, Np, D);
  patch_embed_bwd(images_, a.patches, eg.conv_w, eg.conv_b, PatchShape{B, ecfg_.channels, S, S, ecfg_.patch, D});
}

void MaskedAutoencoder::zero_grad() {
  enc_.zero_grad();
  std::fill(arena_.begin() + n_, arena_.begin() + 2 * n_, 0.0f);
}

double MaskedAutoencoder::adamw_step(cpu::AdamWParams hp, float clip_norm) {
  const size_t ne = enc_.num_params();
  const double norm = std::sqrt(cpu::sum_squares(enc_.grad_data(), ne) + cpu::sum_squares(decoder_grad(), n_));
  if (!std::isfinite(norm)) throw NonFiniteError("AdamW: gradient norm is not finite (NaN or inf in gradients)");
  if (clip_norm > 0 && norm > clip_norm) hp.grad_scale *= float(clip_norm / (norm + 1e-6));
  cpu::adamw_step(enc_.param_data(), enc_.grad_data(), enc_.adam_m(), enc_.adam_v(), ne, enc_.num_decay_params(), hp);
  float* d = arena_.data();
  cpu::adamw_step(d, d + n_, d + 2 * n_, d + 3 * n_, n_, ndecay_, hp);
  return norm;
}

void MaskedAutoencoder::reset_optimizer() {
  enc_.reset_optimizer();
  std::fill(arena_.begin() + 2 * n_, arena_.end(), 0.0f);
}

// ---------------------------------------------------------------- pictures
std::vector<float> MaskedAutoencoder::hidden_mask() const {
  if (B_ == 0) throw std::logic_error("MaskedAutoencoder::hidden_mask called before forward");
  size_t total;
  const Acts a = layout(B_, const_cast<float*>(acts_.data()), &total);
  std::vector<float> m(size_t(B_) * (a.Nd - 1));
  for (int b = 0; b < B_; b++)
    for (int p = 0; p + 1 < a.Nd; p++) m[size_t(b) * (a.Nd - 1) + p] = a.mask[size_t(b) * a.Nd + 1 + p];
  return m;
}

std::vector<float> MaskedAutoencoder::reconstruction() const {
  if (B_ == 0) throw std::logic_error("MaskedAutoencoder::reconstruction called before forward");
  size_t total;
  const Acts a = layout(B_, const_cast<float*>(acts_.data()), &total);
  const int C = ecfg_.channels, S = ecfg_.image_size, P = ecfg_.patch, Np = a.Nd - 1, K = a.K;
  std::vector<float> cols(size_t(B_) * Np * K), out(size_t(B_) * C * S * S);
  cpu::patchify(images_, cols.data(), B_, C, S, S, P);
  for (int b = 0; b < B_; b++)
    for (int p = 0; p < Np; p++) {
      const size_t r = size_t(b) * a.Nd + 1 + p;
      if (a.mask[r] == 0.0f) continue;  // visible: the original pixels
      const float m = cfg_.norm_pix_loss ? a.tmean[r] : 0.0f, s = cfg_.norm_pix_loss ? a.tstd[r] : 1.0f;
      for (int k = 0; k < K; k++) cols[(size_t(b) * Np + p) * K + k] = a.pred[r * K + k] * s + m;
    }
  cpu::unpatchify(cols.data(), out.data(), B_, C, S, S, P);
  return out;
}

}  // namespace vit
