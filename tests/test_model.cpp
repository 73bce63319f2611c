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

TEST(Model, ScaledAdamWFreezesAndScalesPerTensor) {
  // Fine-tuning's optimizer step against whole-arena AdamW steps on copies of the model:
  // a tensor at scale s must end exactly where a plain step at lr * s puts it, a tensor at
  // scale 0 must not move (nor its moments), and the clipping norm covers live tensors only.
  vit::ViT m(tiny(0.0f));
  m.init(3);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 1.0f);
  const size_t n = m.num_params();
  for (size_t i = 0; i < n; ++i) m.grad_data()[i] = nd(rng);
  vit::ViT full(tiny(0.0f)), half(tiny(0.0f));  // references: every tensor at lr and at lr / 2
  for (vit::ViT* r : {&full, &half}) std::copy(m.param_data(), m.param_data() + 4 * n, r->param_data());
  std::vector<float> scale;
  double live_ss = 0;
  for (size_t i = 0; i < m.params().size(); ++i) {
    const auto& p = m.params()[i];
    scale.push_back(i % 3 == 0 ? 0.0f : (i % 3 == 1 ? 1.0f : 0.5f));
    if (scale.back() > 0)
      for (size_t k = 0; k < p.numel; ++k) live_ss += double(m.grad_data()[p.offset + k]) * m.grad_data()[p.offset + k];
  }
  const std::vector<float> before(m.param_data(), m.param_data() + 4 * n);
  vit::cpu::AdamWParams hp;
  hp.lr = 1e-2f, hp.weight_decay = 0.1f, hp.step = 1;
  // no clipping here (clip 0), so the reference steps see the same gradient scale
  EXPECT_NEAR(m.adamw_step_scaled(hp, 0.0f, scale), std::sqrt(live_ss), 1e-9 * std::sqrt(live_ss));
  full.adamw_step(hp, 0.0f);
  hp.lr *= 0.5f;
  half.adamw_step(hp, 0.0f);
  for (size_t i = 0; i < m.params().size(); ++i) {
    const auto& p = m.params()[i];
    for (size_t part = 0; part < 4; ++part) {
      const size_t off = part * n + p.offset;
      const float* want = scale[i] == 0 ? before.data() + off
                                        : (scale[i] == 1 ? full.param_data() + off : half.param_data() + off);
      for (size_t k = 0; k < p.numel; ++k)
        ASSERT_EQ(m.param_data()[off + k], want[k]) << p.name << " part " << part << " element " << k;
    }
  }
  EXPECT_THROW(m.adamw_step_scaled(hp, 0.0f, std::vector<float>(scale.size() - 1, 1.0f)), std::invalid_argument);
}
