// Model-level checks the PyTorch parity files cannot cover: the backward pass with
// dropout on (the masks come from our counter hash, which torch does not share),
// config validation, and the attention probabilities exposed to students.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/vit.h"

namespace {

vit::ViTConfig tiny(float dropout) {
  vit::ViTConfig c;
  c.name = "tiny";
  c.image_size = 16, c.patch = 8, c.dim = 12, c.depth = 2, c.heads = 3, c.mlp_dim = 20, c.num_classes = 4;
  c.dropout = dropout;
  return c;
}

}  // namespace

TEST(Model, DirectionalDerivativeWithDropout) {
  // With a fixed dropout seed the loss is a smooth function of the parameters, so
  // (L(p + h d) - L(p - h d)) / 2h must equal grad . d. The model runs in float32, so
  // h = 1e-2 and a 2e-3 relative tolerance (float rounding ~1e-7 / h^2 truncation ~1e-4).
  vit::ViT m(tiny(0.3f));
  m.init(7);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0, 0.3f);
  for (auto& p : m.params())  // also randomise the zero-initialised head and class token
    if (p.name == "heads.head.weight" || p.name == "class_token")
      for (size_t i = 0; i < p.numel; i++) m.param_ptr(p.name)[i] = nd(rng);
  const int B = 3;
  std::vector<float> x(B * 3 * 16 * 16);
  for (auto& v : x) v = nd(rng) * 3;
  std::vector<int> y = {0, 3, 1};
  vit::ForwardOptions opt;
  opt.training = true;
  opt.dropout_seed = 99;
  auto L = [&] {
    m.forward(x.data(), B, opt);
    return (double)m.loss(y.data(), 0.1f);
  };
  L();
  m.zero_grad();
  m.backward();
  const size_t n = m.num_params();
  std::vector<float> d(n), p0(m.param_data(), m.param_data() + n), g(m.grad_data(), m.grad_data() + n);
  for (auto& v : d) v = nd(rng);
  double gd = 0;
  for (size_t i = 0; i < n; i++) gd += (double)g[i] * d[i];
  const double h = 1e-2;
  for (size_t i = 0; i < n; i++) m.param_data()[i] = p0[i] + (float)(h * d[i]);
  double lp = L();
  for (size_t i = 0; i < n; i++) m.param_data()[i] = p0[i] - (float)(h * d[i]);
  double lm = L();
  EXPECT_NE(gd, 0.0);
  EXPECT_NEAR((lp - lm) / (2 * h), gd, 2e-3 * std::fabs(gd) + 1e-5);
  // Dropout is on: a different seed gives a different loss; eval mode is deterministic.
  for (size_t i = 0; i < n; i++) m.param_data()[i] = p0[i];
  double l1 = L();
  opt.dropout_seed = 100;
  EXPECT_NE(l1, L());
}

TEST(Model, AttentionProbabilitiesAreRowStochastic) {
  vit::ViT m(tiny(0.0f));
  m.init(3);
  std::vector<float> x(2 * 3 * 16 * 16, 0.5f);
  for (size_t i = 0; i < x.size(); i++) x[i] = std::sin(0.1f * i);
  m.forward(x.data(), 2);
  const int N = m.config().seq_len(), H = m.config().heads;
  for (int l = 0; l < m.config().depth; l++) {
    const float* P = m.attention_probs(l);
    for (int r = 0; r < 2 * H * N; r++) {
      double s = 0;
      for (int j = 0; j < N; j++) {
        EXPECT_GE(P[r * N + j], 0.f);
        s += P[r * N + j];
      }
      EXPECT_NEAR(s, 1.0, 1e-5);
    }
  }
  EXPECT_THROW(m.attention_probs(2), std::out_of_range);
}

TEST(Model, ConfigValidationNamesTheField) {
  vit::ViTConfig c = tiny(0);
  c.heads = 5;  // 12 % 5 != 0
  try {
    c.validate();
    FAIL() << "expected an exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("heads"), std::string::npos) << e.what();
  }
  EXPECT_THROW(vit::ViTConfig::preset("vit_h14"), std::invalid_argument);
  auto b = vit::ViTConfig::preset("vit_b16");
  EXPECT_EQ(b.dim, 768);
  EXPECT_EQ(b.depth, 12);
  EXPECT_EQ(b.heads, 12);
  EXPECT_EQ(b.mlp_dim, 3072);
  EXPECT_EQ(b.num_classes, 14);
  EXPECT_FLOAT_EQ(b.dropout, 0.1f);
  vit::ViT m(b);
  EXPECT_EQ(m.num_params(), 85809422u);  // torchvision vit_b_16 with a 14-class head: 85,798,656 + 10,766
}
