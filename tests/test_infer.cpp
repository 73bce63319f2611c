// The CPU inference path against the reference path (model) and its fused ops against the
// reference ops evaluated in float64 (kernels). The inference path is what predict, eval and
// serve run, so the tolerances below bound what they can differ from the training forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <random>
#include <vector>

#include "engine/model/vit.h"

namespace {

// Big enough to cross every split of the inference path: N = 101 tokens (two 64-row attention
// tiles), B * N = 303 rows (several row blocks per thread), dims that the bf16 tile kernel takes
// (multiples of 32; conv K = 3 * 16 * 16 = 768).
vit::ViTConfig mid() {
  vit::ViTConfig c;
  c.name = "mid";
  c.image_size = 160, c.patch = 16, c.dim = 64, c.depth = 3, c.heads = 2, c.mlp_dim = 128, c.num_classes = 5;
  c.dropout = 0.1f;  // must not matter: inference has no dropout
  return c;
}

// Every parameter random (the init's zero head would make every logit 0 and any path pass).
void randomise(vit::ViT& m, std::mt19937& rng) {
  std::normal_distribution<float> nd(0, 1);
  for (const auto& p : m.params()) {
    const bool norm = p.name.find("ln") != std::string::npos;
    const float s = norm ? 0.2f : (p.shape.size() > 1 ? 1.0f / std::sqrt((float)p.shape.back()) : 0.1f);
    float* x = m.param_ptr(p.name);
    for (size_t i = 0; i < p.numel; i++)
      x[i] = (norm && p.name.find("weight") != std::string::npos ? 1.f : 0.f) + s * nd(rng);
  }
}

// max |a - b| / max |b|, asserting b is not all zeros.
double rel_max_diff(const float* a, const float* b, size_t n) {
  double d = 0, s = 0;
  for (size_t i = 0; i < n; i++)
    d = std::max(d, (double)std::fabs(a[i] - b[i])), s = std::max(s, (double)std::fabs(b[i]));
  EXPECT_GT(s, 0.1) << "reference logits are (near) zero: the test would pass on anything";
  return d / s;
}

struct Fixture {
  vit::ViT m{mid()};
  std::vector<float> x;
  int B = 3;
  std::vector<float> ref;  // logits of the reference (training-capable) forward, eval mode
  Fixture() {
    std::mt19937 rng(5);
    randomise(m, rng);
    std::normal_distribution<float> nd(0, 1);
    x.resize((size_t)B * 3 * 160 * 160);
    for (auto& v : x) v = nd(rng);
    const float* z = m.forward(x.data(), B);
    ref.assign(z, z + B * 5);
  }
  const float* infer() {
    vit::ForwardOptions o;
    o.inference = true;
    return m.forward(x.data(), B, o);
  }
};

}  // namespace

// fp32 inference vs the reference forward: both float, other summation orders and a rational erf
// (a few ulp): 1e-4 of the largest logit leaves ~100x room over the ~1e-6 seen.
TEST(Inference, Fp32MatchesReferenceForward) {
  Fixture f;
  const float* z = f.infer();
  EXPECT_LT(rel_max_diff(z, f.ref.data(), f.ref.size()), 1e-4);
}

// bf16 linear layers (inputs and weights rounded to 8 significant bits, fp32 sums) through three
// blocks: each rounding is at most 2^-9 relative, and with random signs they add up to about
// 1% of the largest logit here; 3% is the bound, and it must differ from fp32 (it really ran).
TEST(Inference, Bf16StaysCloseAndRepacksAfterAWeightChange) {
  Fixture f;
  f.m.set_inference_precision(vit::InferencePrecision::bf16);
  if (f.m.inference_precision() != vit::InferencePrecision::bf16) GTEST_SKIP() << "no AMX-BF16 on this CPU";
  const float* z = f.infer();
  const double d = rel_max_diff(z, f.ref.data(), f.ref.size());
  EXPECT_LT(d, 3e-2);
  EXPECT_GT(d, 1e-6);
  // A weight written through param_data() must reach the bf16 copy.
  float* w = f.m.param_ptr("encoder.layers.encoder_layer_0.mlp.0.weight");
  for (size_t i = 0; i < f.m.param("encoder.layers.encoder_layer_0.mlp.0.weight").numel; i++) w[i] *= -1;
  const float* zr = f.m.forward(f.x.data(), f.B);
  std::vector<float> ref2(zr, zr + f.ref.size());
  EXPECT_LT(rel_max_diff(f.infer(), ref2.data(), ref2.size()), 3e-2);
}

TEST(Inference, KeepsNothingForBackward) {
  Fixture f;
  f.infer();
  std::vector<int> y(f.B, 1);
  EXPECT_THROW(f.m.loss(y.data()), std::logic_error);
  EXPECT_THROW(f.m.backward_from(f.ref.data()), std::logic_error);
  EXPECT_THROW(f.m.attention_probs(0), std::logic_error);
  // a later reference forward makes them available again
  f.m.forward(f.x.data(), f.B);
  EXPECT_NO_THROW(f.m.attention_probs(0));
}

// Batch 1 and a batch larger than 2 x 64 class-token rows take other splits than B = 3.
TEST(Inference, BatchOneAndLargeBatchMatch) {
  vit::ViTConfig c = mid();
  c.image_size = 32;  // N = 5: many sequences per row block
  vit::ViT m(c);
  std::mt19937 rng(9);
  randomise(m, rng);
  std::normal_distribution<float> nd(0, 1);
  for (int B : {1, 150}) {
    std::vector<float> x((size_t)B * 3 * 32 * 32);
    for (auto& v : x) v = nd(rng);
    const float* z = m.forward(x.data(), B);
    std::vector<float> ref(z, z + B * 5);
    vit::ForwardOptions o;
    o.inference = true;
    EXPECT_LT(rel_max_diff(m.forward(x.data(), B, o), ref.data(), ref.size()), 1e-4) << "B = " << B;
  }
}

namespace {
float round_bf16(float f) {  // round to nearest even, as the kernel
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

// The tile kernel against float64 on the same bf16-rounded inputs: the products are exact in fp32,
// so only the fp32 sums differ (K = 64 terms: ~1e-6 relative); 1e-5 of the largest output. M = 37
// and N = 48 take the partial row and column tiles; each epilogue is checked.
TEST(InferOps, Bf16LinearMatchesFloat64OnRoundedInputs) {
  if (!vit::cpu::amx_bf16_available()) GTEST_SKIP() << "no AMX-BF16 on this CPU";
  const int M = 37, K = 64, N = 48;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(M * K), w(N * K), b(N), y0(M * N);
  for (auto* v : {&x, &w, &b, &y0})
    for (auto& e : *v) e = nd(rng);
  const vit::cpu::PackedBF16 pw = vit::cpu::pack_bf16(w.data(), N, K);
  std::vector<uint16_t> xs(48 * K);
  for (auto e : {vit::cpu::Epilogue::store, vit::cpu::Epilogue::gelu, vit::cpu::Epilogue::accumulate}) {
    std::vector<float> y = y0;
    vit::cpu::linear_rows_bf16(x.data(), pw, b.data(), y.data(), M, e, xs.data());
    std::vector<float> ref(M * N);
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) {
        double s = b[n];
        for (int k = 0; k < K; k++) s += (double)round_bf16(x[m * K + k]) * round_bf16(w[n * K + k]);
        if (e == vit::cpu::Epilogue::gelu) s = 0.5 * s * (1 + std::erf(s / std::sqrt(2.0)));
        if (e == vit::cpu::Epilogue::accumulate) s += y0[m * N + n];
        ref[m * N + n] = (float)s;
      }
    EXPECT_LT(rel_max_diff(y.data(), ref.data(), ref.size()), 1e-5) << "epilogue " << (int)e;
  }
}

// Attention over query tiles against the reference op in float64: float sums and exp, 1e-5.
TEST(InferOps, AttentionTilesMatchFloat64Reference) {
  const vit::AttnShape s{2, 70, 2, 16};
  const int D = s.D();
  std::mt19937 rng(4);
  std::normal_distribution<double> nd(0, 1);
  std::vector<double> qkv((size_t)s.B * s.N * 3 * D), out((size_t)s.B * s.N * D), probs((size_t)s.B * s.H * s.N * s.N);
  for (auto& v : qkv) v = nd(rng);
  vit::cpu::attention_fwd(qkv.data(), out.data(), probs.data(), s);
  std::vector<float> qf(qkv.begin(), qkv.end()), of(out.size()), scores(32 * s.N), ref(out.begin(), out.end());
  for (int b = 0; b < s.B; b++)
    for (int h = 0; h < s.H; h++)
      for (int q0 = 0; q0 < s.N; q0 += 32)
        vit::cpu::attention_rows(qf.data(), of.data(), s, b, h, q0, std::min(q0 + 32, s.N), scores.data());
  EXPECT_LT(rel_max_diff(of.data(), ref.data(), ref.size()), 1e-5);
}
