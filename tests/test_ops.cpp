// One table of op checks (ggml test-backend-ops habit), CPU reference path:
//  - every backward against central finite differences, in float64, on small shapes;
//  - float forward against the float64 forward (the float path is what the engine runs);
//  - outputs asserted non-zero, so that an unwritten buffer cannot pass.
// Independent values for the forward passes come from PyTorch (test_parity.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

using namespace vit::cpu;
using Vec = std::vector<double>;

namespace {

std::mt19937_64& rng() {
  static std::mt19937_64 r(std::random_device{}());  // fresh inputs every run
  return r;
}
Vec randn(size_t n, double s = 1.0) {
  std::normal_distribution<double> d(0, s);
  Vec v(n);
  for (auto& x : v) x = d(rng());
  return v;
}
bool all_zero(const Vec& v) {
  for (double x : v)
    if (x != 0) return false;
  return true;
}

// Central differences of a scalar function f with respect to every element of x.
// h = 1e-6 in float64: truncation error O(h^2) ~ 1e-12 and rounding ~ 1e-16/h ~ 1e-10,
// so analytic and numeric gradients agree to ~1e-8 relative for smooth ops.
Vec numeric_grad(Vec& x, const std::function<double()>& f) {
  const double h = 1e-6;
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    double keep = x[i];
    x[i] = keep + h;
    double fp = f();
    x[i] = keep - h;
    double fm = f();
    x[i] = keep;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// ||a - b|| / max(||b||, tiny); prints the first mismatches on failure (llm.c validate_result).
void expect_close(const Vec& got, const Vec& ref, double tol, const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  ASSERT_FALSE(all_zero(got)) << what << ": all zeros (unwritten output?)";
  double num = 0, den = 0, maxd = 0;
  for (size_t i = 0; i < got.size(); i++) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
    maxd = std::max(maxd, std::fabs(got[i] - ref[i]));
  }
  double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (!(rel <= tol)) {
    int shown = 0;
    for (size_t i = 0; i < got.size() && shown < 5; i++)
      if (std::fabs(got[i] - ref[i]) > tol * std::fabs(ref[i]) + 1e-12) {
        ADD_FAILURE() << what << "[" << i << "] got " << got[i] << " want " << ref[i];
        shown++;
      }
  }
  EXPECT_LE(rel, tol) << what << ": relative error " << rel << ", max abs diff " << maxd;
}
double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}
// Gradients of smooth ops in float64 vs finite differences: 1e-6 leaves room for the
// O(h^2) truncation term on ops with large second derivatives (softmax, LayerNorm).
constexpr double kFdTol = 1e-6;

}  // namespace

TEST(Ops, LinearGradients) {
  const int M = 5, K = 7, N = 4;
  Vec x = randn(M * K), w = randn(N * K), b = randn(N), R = randn(M * N);
  auto f = [&] {
    Vec y(M * N);
    linear_fwd(x.data(), w.data(), b.data(), y.data(), M, K, N);
    return dot(y, R);
  };
  Vec dx(M * K), dw(N * K, 0), db(N, 0);
  linear_bwd(x.data(), w.data(), R.data(), dx.data(), dw.data(), db.data(), M, K, N);
  expect_close(dx, numeric_grad(x, f), kFdTol, "dx");
  expect_close(dw, numeric_grad(w, f), kFdTol, "dw");
  expect_close(db, numeric_grad(b, f), kFdTol, "db");
  // parameter gradients accumulate: a second call doubles them
  Vec dw2 = dw;
  linear_bwd(x.data(), w.data(), R.data(), dx.data(), dw2.data(), db.data(), M, K, N);
  for (size_t i = 0; i < dw.size(); i++) EXPECT_NEAR(dw2[i], 2 * dw[i], 1e-12);
}

TEST(Ops, LinearForwardMatchesLoops) {
  const int M = 9, K = 13, N = 6;
  Vec x = randn(M * K), w = randn(N * K), b = randn(N), y(M * N), ref(M * N);
  linear_fwd(x.data(), w.data(), b.data(), y.data(), M, K, N);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = b[n];
      for (int k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      ref[m * N + n] = s;
    }
  expect_close(y, ref, 1e-14, "y");  // same math in float64: only summation order differs
}

TEST(Ops, LayerNormGradients) {
  const int R_ = 4, C = 9;
  Vec x = randn(R_ * C, 2.0), w = randn(C), b = randn(C), R = randn(R_ * C);
  auto f = [&] {
    Vec y(R_ * C), mu(R_), rs(R_);
    layernorm_fwd(x.data(), w.data(), b.data(), y.data(), mu.data(), rs.data(), R_, C, 1e-6);
    return dot(y, R);
  };
  Vec y(R_ * C), mu(R_), rs(R_);
  layernorm_fwd(x.data(), w.data(), b.data(), y.data(), mu.data(), rs.data(), R_, C, 1e-6);
  // forward vs the definition
  for (int r = 0; r < R_; r++) {
    double m = 0, v = 0;
    for (int c = 0; c < C; c++) m += x[r * C + c] / C;
    for (int c = 0; c < C; c++) v += (x[r * C + c] - m) * (x[r * C + c] - m) / C;
    for (int c = 0; c < C; c++)
      EXPECT_NEAR(y[r * C + c], (x[r * C + c] - m) / std::sqrt(v + 1e-6) * w[c] + b[c], 1e-12);
  }
  Vec dx(R_ * C), dw(C, 0), db(C, 0);
  layernorm_bwd(x.data(), w.data(), mu.data(), rs.data(), R.data(), dx.data(), dw.data(), db.data(), R_, C);
  expect_close(dx, numeric_grad(x, f), kFdTol, "dx");
  expect_close(dw, numeric_grad(w, f), kFdTol, "dw");
  expect_close(db, numeric_grad(b, f), kFdTol, "db");
}

TEST(Ops, AttentionGradients) {
  const int B = 2, N = 5, H = 2, Dh = 3, D = H * Dh;
  Vec qkv = randn(B * N * 3 * D), R = randn(B * N * D);
  auto f = [&] {
    Vec out(B * N * D), probs(B * H * N * N);
    attention_fwd(qkv.data(), out.data(), probs.data(), vit::AttnShape{B, N, H, Dh});
    return dot(out, R);
  };
  Vec out(B * N * D), probs(B * H * N * N), dqkv(B * N * 3 * D);
  attention_fwd(qkv.data(), out.data(), probs.data(), vit::AttnShape{B, N, H, Dh});
  // forward vs a naive per-element evaluation of softmax(q k^T / sqrt(d)) v
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < N; i++) {
        Vec s(N);
        double mx = -1e300, z = 0;
        for (int j = 0; j < N; j++) {
          double a = 0;
          for (int d = 0; d < Dh; d++)
            a += qkv[(b * N + i) * 3 * D + h * Dh + d] * qkv[(b * N + j) * 3 * D + D + h * Dh + d];
          s[j] = a / std::sqrt((double)Dh);
          mx = std::max(mx, s[j]);
        }
        for (int j = 0; j < N; j++) z += (s[j] = std::exp(s[j] - mx));
        for (int j = 0; j < N; j++) EXPECT_NEAR(probs[((b * H + h) * N + i) * N + j], s[j] / z, 1e-12);
        for (int d = 0; d < Dh; d++) {
          double o = 0;
          for (int j = 0; j < N; j++) o += s[j] / z * qkv[(b * N + j) * 3 * D + 2 * D + h * Dh + d];
          EXPECT_NEAR(out[(b * N + i) * D + h * Dh + d], o, 1e-12);
        }
      }
  attention_bwd(qkv.data(), probs.data(), R.data(), dqkv.data(), vit::AttnShape{B, N, H, Dh});
  expect_close(dqkv, numeric_grad(qkv, f), kFdTol, "dqkv");
}

TEST(Ops, GeluGradientsAndExactErf) {
  Vec x = randn(50, 2.0), R = randn(50);
  auto f = [&] {
    Vec y(50);
    gelu_fwd(x.data(), y.data(), 50);
    return dot(y, R);
  };
  Vec y(50), dx(50);
  gelu_fwd(x.data(), y.data(), 50);
  // torch.nn.functional.gelu(torch.tensor([-1., 0.5, 2.], dtype=torch.float64)) (exact erf form)
  double xs[3] = {-1.0, 0.5, 2.0}, ys[3], want[3] = {-0.15865525393145707, 0.34573123063700656, 1.9544997361036416};
  gelu_fwd(xs, ys, 3);
  for (int i = 0; i < 3; i++) EXPECT_NEAR(ys[i], want[i], 1e-15) << "x=" << xs[i];
  gelu_bwd(x.data(), R.data(), dx.data(), 50);
  expect_close(dx, numeric_grad(x, f), kFdTol, "dx");
}

TEST(Ops, DropoutMaskScaleAndGradient) {
  const size_t n = 20000;
  Vec x = randn(n), y(n), R = randn(n), dx(n);
  const float p = 0.25f;
  dropout_fwd(x.data(), y.data(), n, p, 1234);
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (y[i] != 0) {
      kept++;
      EXPECT_NEAR(y[i], x[i] / (1 - p), 1e-12);
    }
  }
  // keep rate ~ 0.75; 5 sigma of a binomial(20000, 0.75) is ~0.015
  EXPECT_NEAR((double)kept / n, 0.75, 0.015);
  dropout_bwd(R.data(), dx.data(), n, p, 1234);
  for (size_t i = 0; i < n; i++) EXPECT_EQ(dx[i] != 0, y[i] != 0) << "mask differs at " << i;
  Vec y2(n);
  dropout_fwd(x.data(), y2.data(), n, p, 1235);
  EXPECT_NE(y, y2) << "different seeds must give different masks";
  dropout_fwd(x.data(), y2.data(), n, 0.0f, 1);
  EXPECT_EQ(y2, x) << "p = 0 is the identity";
}

TEST(Ops, PatchEmbedGradientsAndConv) {
  const int B = 2, C = 3, S = 8, P = 4, D = 5, Np = (S / P) * (S / P);
  Vec img = randn(B * C * S * S), w = randn(D * C * P * P), b = randn(D), R = randn(B * Np * D);
  Vec out(B * Np * D);
  patch_embed_fwd(img.data(), w.data(), b.data(), out.data(), vit::PatchShape{B, C, S, S, P, D});
  // direct convolution definition
  for (int bb = 0; bb < B; bb++)
    for (int py = 0; py < S / P; py++)
      for (int px = 0; px < S / P; px++)
        for (int d = 0; d < D; d++) {
          double s = b[d];
          for (int c = 0; c < C; c++)
            for (int ky = 0; ky < P; ky++)
              for (int kx = 0; kx < P; kx++)
                s += img[((bb * C + c) * S + py * P + ky) * S + px * P + kx] * w[((d * C + c) * P + ky) * P + kx];
          EXPECT_NEAR(out[((size_t)bb * Np + py * (S / P) + px) * D + d], s, 1e-12);
        }
  auto f = [&] {
    Vec o(B * Np * D);
    patch_embed_fwd(img.data(), w.data(), b.data(), o.data(), vit::PatchShape{B, C, S, S, P, D});
    return dot(o, R);
  };
  Vec dw(w.size(), 0), db(D, 0);
  patch_embed_bwd(img.data(), R.data(), dw.data(), db.data(), vit::PatchShape{B, C, S, S, P, D});
  expect_close(dw, numeric_grad(w, f), kFdTol, "dw");
  expect_close(db, numeric_grad(b, f), kFdTol, "db");
}

TEST(Ops, EmbedTokensGradients) {
  const int B = 2, Np = 3, D = 4, N = Np + 1;
  Vec pt = randn(B * Np * D), cls = randn(D), pos = randn(N * D), R = randn(B * N * D);
  auto f = [&] {
    Vec o(B * N * D);
    embed_tokens_fwd(pt.data(), cls.data(), pos.data(), o.data(), B, Np, D);
    return dot(o, R);
  };
  Vec dpt(pt.size()), dcls(D, 0), dpos(N * D, 0);
  embed_tokens_bwd(R.data(), dpt.data(), dcls.data(), dpos.data(), B, Np, D);
  expect_close(dpt, numeric_grad(pt, f), kFdTol, "dpatches");
  expect_close(dcls, numeric_grad(cls, f), kFdTol, "dcls");
  expect_close(dpos, numeric_grad(pos, f), kFdTol, "dpos");
}

TEST(Ops, SoftmaxXentGradientsWithSmoothing) {
  const int B = 3, C = 6;
  Vec z = randn(B * C, 3.0);
  std::vector<int> y = {0, 5, 2};
  for (double s : {0.0, 0.1}) {
    auto f = [&] { return softmax_xent_fwd(z.data(), y.data(), (double*)nullptr, B, C, s); };
    Vec dz(B * C);
    softmax_xent_bwd(z.data(), y.data(), dz.data(), B, C, s);
    expect_close(dz, numeric_grad(z, f), kFdTol, s == 0 ? "dz (s=0)" : "dz (s=0.1)");
  }
  // hand value: uniform logits give loss log(C) whatever the smoothing
  Vec zz(B * C, 0.7);
  EXPECT_NEAR(softmax_xent_fwd(zz.data(), y.data(), (double*)nullptr, B, C, 0.1), std::log(6.0), 1e-12);
  std::vector<int> bad = {0, 6, 1};
  EXPECT_THROW(softmax_xent_fwd(z.data(), bad.data(), (double*)nullptr, B, C, 0.0), std::out_of_range);
}

TEST(Ops, AdamWMatchesClosedFormFirstStep) {
  // At step 1, m = (1-b1) g, v = (1-b2) g^2, so the update is lr * g / (|g| + eps'),
  // i.e. about lr * sign(g), on top of the decoupled decay p * (1 - lr wd).
  const size_t n = 10, nd = 6;
  Vec p = randn(n), g = randn(n), m(n, 0), v(n, 0), p0 = p;
  AdamWParams hp;
  hp.lr = 0.01f, hp.weight_decay = 0.1f, hp.step = 1;
  adamw_step(p.data(), g.data(), m.data(), v.data(), n, nd, hp);
  for (size_t i = 0; i < n; i++) {
    double decayed = i < nd ? p0[i] * (1 - 0.01 * 0.1) : p0[i];
    double upd = 0.01 * g[i] / (std::fabs(g[i]) + 1e-8);
    EXPECT_NEAR(p[i], decayed - upd, 1e-9) << i;
  }
}

TEST(Ops, FloatPathTracksFloat64) {
  // The engine runs in float: its attention + LayerNorm + GELU agree with float64 to
  // float rounding (~1e-7 relative, amplified by softmax and sums: 1e-5 allows it).
  const int B = 2, N = 7, H = 2, Dh = 4, D = H * Dh;
  Vec qkv = randn(B * N * 3 * D);
  std::vector<float> qf(qkv.begin(), qkv.end()), of(B * N * D), pf(B * H * N * N);
  Vec od(B * N * D), pdd(B * H * N * N);
  attention_fwd(qkv.data(), od.data(), pdd.data(), vit::AttnShape{B, N, H, Dh});
  attention_fwd(qf.data(), of.data(), pf.data(), vit::AttnShape{B, N, H, Dh});
  expect_close(Vec(of.begin(), of.end()), od, 1e-5, "float attention");
  std::vector<float> gf(of.size());
  gelu_fwd(of.data(), gf.data(), of.size());
  Vec gd(od.size());
  gelu_fwd(od.data(), gd.data(), od.size());
  expect_close(Vec(gf.begin(), gf.end()), gd, 1e-5, "float gelu");
}

TEST(Ops, DropPathKeepsOrDropsWholeSamples) {
  // Each sample is either all zeros or exactly x / (1 - p); about p of 4,000 samples are dropped
  // (binomial sd ~ 32 at p = 0.3: +-6 sd = 190); the gradient is the same map.
  const int B = 4000;
  const size_t per = 5;
  const float p = 0.3f;
  std::vector<double> x(B * per), y(B * per);
  for (size_t i = 0; i < x.size(); i++) x[i] = 1.0 + double(i % 7);
  vit::cpu::drop_path(x.data(), y.data(), B, per, p, 42);
  int dropped = 0;
  for (int b = 0; b < B; b++) {
    const bool keep = y[b * per] != 0.0;
    dropped += !keep;
    for (size_t i = 0; i < per; i++)
      ASSERT_EQ(y[b * per + i], keep ? x[b * per + i] / (1.0 - double(p)) : 0.0) << "sample " << b << " element " << i;
  }
  EXPECT_NEAR(dropped, p * B, 190);
  std::vector<double> z(x);
  vit::cpu::drop_path(z.data(), z.data(), B, per, p, 42);  // in place: same result
  EXPECT_EQ(z, y);
  vit::cpu::drop_path(x.data(), z.data(), B, per, 0.0f, 42);  // p = 0: identity
  EXPECT_EQ(z, x);
}

// ---- masked-autoencoder ops (kernels/cpu/mae.cpp) ----
namespace {
// K distinct rows of N per sample, in a scrambled order (the gather must not assume sorted).
std::vector<int> distinct_rows(int B, int N, int K) {
  std::vector<int> idx;
  for (int b = 0; b < B; b++) {
    std::vector<int> all(N);
    for (int n = 0; n < N; n++) all[n] = n;
    std::shuffle(all.begin(), all.end(), rng());
    idx.insert(idx.end(), all.begin(), all.begin() + K);
  }
  return idx;
}
}  // namespace

TEST(Ops, MaeGatherTokensGradients) {
  const int B = 2, N = 7, K = 3, D = 4;
  Vec x = randn(B * N * D), R = randn(B * K * D);
  const std::vector<int> idx = distinct_rows(B, N, K);
  auto f = [&] {
    Vec y(B * K * D);
    gather_tokens_fwd(x.data(), idx.data(), y.data(), B, N, K, D);
    return dot(y, R);
  };
  Vec dx(x.size(), 123.0);  // overwritten, not accumulated
  gather_tokens_bwd(R.data(), idx.data(), dx.data(), B, N, K, D);
  expect_close(dx, numeric_grad(x, f), kFdTol, "dx");
  // the forward picks the named rows
  Vec y(B * K * D);
  gather_tokens_fwd(x.data(), idx.data(), y.data(), B, N, K, D);
  EXPECT_EQ(y[(1 * K + 2) * D + 3], x[(1 * N + idx[1 * K + 2]) * D + 3]);
}

TEST(Ops, MaeScatterTokensGradients) {
  const int B = 2, N = 6, K = 2, D = 3;
  Vec x = randn(B * K * D), fill = randn(D), R = randn(B * N * D);
  const std::vector<int> idx = distinct_rows(B, N, K);
  auto f = [&] {
    Vec y(B * N * D);
    scatter_tokens_fwd(x.data(), idx.data(), fill.data(), y.data(), B, N, K, D);
    return dot(y, R);
  };
  Vec dx(x.size(), 7.0), dfill(D, 0);
  scatter_tokens_bwd(R.data(), idx.data(), dx.data(), dfill.data(), B, N, K, D);
  expect_close(dx, numeric_grad(x, f), kFdTol, "dx");
  expect_close(dfill, numeric_grad(fill, f), kFdTol, "dfill");
  // scatter after gather puts every visible row back and the fill everywhere else
  Vec full = randn(B * N * D), vis(B * K * D), back(B * N * D);
  gather_tokens_fwd(full.data(), idx.data(), vis.data(), B, N, K, D);
  scatter_tokens_fwd(vis.data(), idx.data(), fill.data(), back.data(), B, N, K, D);
  for (int b = 0; b < B; b++)
    for (int n = 0; n < N; n++) {
      bool seen = false;
      for (int k = 0; k < K; k++) seen |= idx[b * K + k] == n;
      for (int d = 0; d < D; d++)
        EXPECT_EQ(back[(b * N + n) * D + d], seen ? full[(b * N + n) * D + d] : fill[d]) << b << " " << n;
    }
}

TEST(Ops, MaeAddPositionGradients) {
  const int B = 3, N = 4, D = 2;
  Vec x = randn(B * N * D), pos = randn(N * D), R = randn(B * N * D);
  auto f = [&] {
    Vec y(B * N * D);
    add_position_fwd(x.data(), pos.data(), y.data(), B, N, D);
    return dot(y, R);
  };
  Vec dpos(N * D, 0);
  add_position_bwd(R.data(), dpos.data(), B, N, D);
  expect_close(dpos, numeric_grad(pos, f), kFdTol, "dpos");
  expect_close(R, numeric_grad(x, f), kFdTol, "dx = dy");
}

TEST(Ops, MaeMaskedMseGradientsAndOnlyHiddenRowsCount) {
  const int R = 6, K = 5;
  Vec pred = randn(R * K), target = randn(R * K), mask = {1, 0, 1, 1, 0, 1};
  auto f = [&] { return masked_mse_fwd(pred.data(), target.data(), mask.data(), R, K); };
  Vec dpred(R * K, 9.0);
  masked_mse_bwd(pred.data(), target.data(), mask.data(), dpred.data(), R, K);
  expect_close(dpred, numeric_grad(pred, f), kFdTol, "dpred");
  // the definition, written out: mean over hidden rows of the mean square error per row
  double want = 0;
  for (int r = 0; r < R; r++)
    if (mask[r] != 0)
      for (int k = 0; k < K; k++) want += std::pow(pred[r * K + k] - target[r * K + k], 2) / K;
  EXPECT_NEAR(f(), want / 4, 1e-12);
  // visible rows do not move the loss
  pred[1 * K + 2] += 100;
  EXPECT_NEAR(f(), want / 4, 1e-12);
}

TEST(Ops, MaeNormalizeRowsAndPatchifyRoundTrip) {
  const int R = 3, K = 12;
  Vec x = randn(R * K, 3.0), orig = x, mean(R), sd(R);
  normalize_rows(x.data(), mean.data(), sd.data(), R, K, 1e-6);
  for (int r = 0; r < R; r++) {
    double s = 0, ss = 0, m0 = 0;
    for (int k = 0; k < K; k++) s += x[r * K + k], m0 += orig[r * K + k];
    m0 /= K;
    for (int k = 0; k < K; k++) ss += std::pow(orig[r * K + k] - m0, 2);
    EXPECT_NEAR(s, 0, 1e-10);
    EXPECT_NEAR(mean[r], m0, 1e-12);
    EXPECT_NEAR(sd[r], std::sqrt(ss / (K - 1) + 1e-6), 1e-12);  // torch.var: unbiased
    for (int k = 0; k < K; k++) EXPECT_NEAR(x[r * K + k] * sd[r] + mean[r], orig[r * K + k], 1e-12);
  }
  // patchify: patch (py, px) of sample b holds pixel (c, py*P+ky, px*P+kx) at c*P*P + ky*P + kx
  const int B = 2, C = 3, H = 8, W = 12, P = 4, Np = (H / P) * (W / P);
  Vec img = randn(B * C * H * W), cols(B * Np * C * P * P), back(img.size());
  patchify(img.data(), cols.data(), B, C, H, W, P);
  const int b = 1, c = 2, y = 5, xx = 10, py = y / P, px = xx / P;
  EXPECT_EQ(cols[((b * Np) + py * (W / P) + px) * C * P * P + c * P * P + (y % P) * P + xx % P],
            img[((b * C + c) * H + y) * W + xx]);
  unpatchify(cols.data(), back.data(), B, C, H, W, P);
  EXPECT_EQ(back, img);
}
