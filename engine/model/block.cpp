// The transformer block on the CPU reference path (engine/model/block.h).
#include "engine/model/block.h"

#include "engine/model/vit.h"  // site_seed, drop_path_seed
#include "kernels/cpu/ops.h"

namespace vit {

size_t block_acts_layout(const BlockShape& s, bool dropout, float* base, BlockActs* a) {
  const size_t BN = size_t(s.B) * s.N, BND = BN * s.D, BNM = BN * s.M;
  size_t off = 0;
  auto take = [&](size_t n) {
    float* p = base ? base + off : nullptr;
    off += n;
    return p;
  };
  a->ln1 = take(BND);
  a->ln1_mean = take(BN);
  a->ln1_rstd = take(BN);
  a->qkv = take(3 * BND);
  a->probs = take(size_t(s.B) * s.H * s.N * s.N);
  a->att = take(BND);
  a->x_mid = take(BND);
  a->ln2 = take(BND);
  a->ln2_mean = take(BN);
  a->ln2_rstd = take(BN);
  a->h = take(BNM);
  a->g = take(BNM);
  a->gd = dropout ? take(BNM) : a->g;
  return off;
}

size_t block_acts_floats(const BlockShape& s, bool dropout) {
  BlockActs a;
  return block_acts_layout(s, dropout, nullptr, &a);
}

void block_fwd(const BlockParams& w, BlockActs& a, float* x_out, float* tmp, const BlockShape& s,
               const BlockNoise& n) {
  using namespace cpu;
  const int BN = s.B * s.N, D = s.D, M = s.M;
  const size_t BND = size_t(BN) * D;
  // attention branch: x_mid = x + dropout(out_proj(attention(in_proj(ln_1(x)))))
  layernorm_fwd(a.x_in, w.ln1_w, w.ln1_b, a.ln1, a.ln1_mean, a.ln1_rstd, BN, D, s.ln_eps);
  linear_fwd(a.ln1, w.qkv_w, w.qkv_b, a.qkv, BN, D, 3 * D);  // (B,N,D) -> (B,N,3D)
  attention_fwd(a.qkv, a.att, a.probs, AttnShape{s.B, s.N, s.H, D / s.H});
  linear_fwd(a.att, w.proj_w, w.proj_b, tmp, BN, D, D);
  dropout_fwd(tmp, tmp, BND, n.dropout, site_seed(n.seed, n.site));
  if (n.drop_path > 0) drop_path(tmp, tmp, s.B, size_t(s.N) * D, n.drop_path, drop_path_seed(n.seed, n.layer, 0));
  add_fwd(a.x_in, tmp, a.x_mid, BND);
  // MLP branch: x_out = x_mid + dropout(fc2(dropout(gelu(fc1(ln_2(x_mid))))))
  layernorm_fwd(a.x_mid, w.ln2_w, w.ln2_b, a.ln2, a.ln2_mean, a.ln2_rstd, BN, D, s.ln_eps);
  linear_fwd(a.ln2, w.fc1_w, w.fc1_b, a.h, BN, D, M);
  gelu_fwd(a.h, a.g, size_t(BN) * M);
  if (a.gd != a.g) dropout_fwd(a.g, a.gd, size_t(BN) * M, n.dropout, site_seed(n.seed, n.site + 1));
  linear_fwd(a.gd, w.fc2_w, w.fc2_b, tmp, BN, M, D);
  dropout_fwd(tmp, tmp, BND, n.dropout, site_seed(n.seed, n.site + 2));
  if (n.drop_path > 0) drop_path(tmp, tmp, s.B, size_t(s.N) * D, n.drop_path, drop_path_seed(n.seed, n.layer, 1));
  add_fwd(a.x_mid, tmp, x_out, BND);
}

void block_bwd(const BlockParams& w, const BlockParams& g, const BlockActs& a, float* dx, const BlockScratch& t,
               const BlockShape& s, const BlockNoise& n) {
  using namespace cpu;
  const int BN = s.B * s.N, D = s.D, M = s.M;
  const size_t BND = size_t(BN) * D;
  // MLP branch. dx holds d(x_out); it also flows straight to x_mid through the residual.
  dropout_bwd(dx, t.dtmp, BND, n.dropout, site_seed(n.seed, n.site + 2));
  if (n.drop_path > 0)
    drop_path(t.dtmp, t.dtmp, s.B, size_t(s.N) * D, n.drop_path, drop_path_seed(n.seed, n.layer, 1));
  linear_bwd(a.gd, w.fc2_w, t.dtmp, t.dh, g.fc2_w, g.fc2_b, BN, M, D);
  if (a.gd != a.g) dropout_bwd(t.dh, t.dh, size_t(BN) * M, n.dropout, site_seed(n.seed, n.site + 1));
  gelu_bwd(a.h, t.dh, t.dh2, size_t(BN) * M);
  linear_bwd(a.ln2, w.fc1_w, t.dh2, t.dtmp, g.fc1_w, g.fc1_b, BN, D, M);
  layernorm_bwd(a.x_mid, w.ln2_w, a.ln2_mean, a.ln2_rstd, t.dtmp, t.dx2, g.ln2_w, g.ln2_b, BN, D);
  add_fwd(dx, t.dx2, dx, BND);  // dx = d(x_mid)
  // attention branch
  dropout_bwd(dx, t.dtmp, BND, n.dropout, site_seed(n.seed, n.site));
  if (n.drop_path > 0)
    drop_path(t.dtmp, t.dtmp, s.B, size_t(s.N) * D, n.drop_path, drop_path_seed(n.seed, n.layer, 0));
  linear_bwd(a.att, w.proj_w, t.dtmp, t.dx2, g.proj_w, g.proj_b, BN, D, D);  // dx2 = d(att)
  attention_bwd(a.qkv, a.probs, t.dx2, t.dqkv, AttnShape{s.B, s.N, s.H, D / s.H});
  linear_bwd(a.ln1, w.qkv_w, t.dqkv, t.dtmp, g.qkv_w, g.qkv_b, BN, D, 3 * D);
  layernorm_bwd(a.x_in, w.ln1_w, a.ln1_mean, a.ln1_rstd, t.dtmp, t.dx2, g.ln1_w, g.ln1_b, BN, D);
  add_fwd(dx, t.dx2, dx, BND);  // dx = d(x_in)
}

}  // namespace vit
