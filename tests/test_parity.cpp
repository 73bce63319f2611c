// Parity with torchvision.models.VisionTransformer: logits, loss, every parameter
// gradient and a 10-step AdamW loss curve, against tensors PyTorch wrote
// (tools/gen_parity.py -> tests/data/parity_*.{json,bin}), plus a full-size vit_b16
// forward with hash-generated weights (tests/data/vit_b16_hashinit.json).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/util/rng.h"
#include "tests/parity_util.h"
#include "engine/model/vit.h"

using json = nlohmann::json;

namespace {
using parity::RefFile;
using parity::load_ref;
using parity::rel_err;
using parity::all_zero;

vit::ViTConfig config_of(const json& m) {
  vit::ViTConfig c;
  c.name = "parity";
  c.image_size = m["image_size"], c.patch = m["patch"], c.dim = m["dim"], c.depth = m["depth"];
  c.heads = m["heads"], c.mlp_dim = m["mlp_dim"], c.num_classes = m["num_classes"];
  c.dropout = 0.0f;
  return c;
}

void load_params(vit::ViT& m, const RefFile& r) {
  size_t seen = 0;
  for (auto& p : m.params()) {
    auto it = r.t.find("param." + p.name);
    ASSERT_NE(it, r.t.end()) << "reference lacks " << p.name;
    ASSERT_EQ(r.shape.at("param." + p.name), p.shape) << p.name;
    std::copy(it->second.begin(), it->second.end(), m.param_ptr(p.name));
    seen++;
  }
  size_t ref_params = 0;
  for (auto& [k, v] : r.t) ref_params += k.rfind("param.", 0) == 0;
  ASSERT_EQ(seen, ref_params) << "key count differs from torchvision's state_dict";
}

std::vector<int> labels_of(RefFile& r) {  // stored as floats, like every reference tensor
  std::vector<int> labels;
  for (float f : r.t["labels"]) labels.push_back((int)f);
  return labels;
}

class Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Parity, LogitsLossAndEveryGradient) {
  RefFile r = load_ref(GetParam());
  vit::ViT m(config_of(r.meta));
  load_params(m, r);
  const int B = r.meta["batch"];
  const std::vector<int> labels = labels_of(r);
  const float* logits = m.forward(r.t["input"].data(), B);
  const size_t nl = (size_t)B * m.config().num_classes;
  ASSERT_FALSE(all_zero(logits, nl));
  // fp32 vs fp32 with different summation orders: 1e-4 relative (the bound)
  EXPECT_LT(rel_err(logits, r.t["logits"].data(), nl), 1e-4);
  float loss = m.loss(labels.data(), r.meta["smoothing"].get<float>());
  EXPECT_NEAR(loss, r.t["loss"][0], 1e-4 * std::fabs(r.t["loss"][0]));
  m.zero_grad();
  m.backward();
  for (auto& p : m.params()) {
    const float* g = m.grad_data() + p.offset;
    const auto& ref = r.t.at("grad." + p.name);
    ASSERT_FALSE(all_zero(g, p.numel)) << p.name;
    // Gradients pass through up to 2*depth+2 fp32 GEMM/LayerNorm chains: 1e-4 relative
    // (measured ~1e-6; float epsilon is 1.2e-7).
    EXPECT_LT(rel_err(g, ref.data(), p.numel), 1e-4) << "gradient of " << p.name;
  }
}

TEST_P(Parity, TenAdamWStepsFollowPyTorch) {
  RefFile r = load_ref(GetParam());
  vit::ViT m(config_of(r.meta));
  load_params(m, r);
  const int B = r.meta["batch"];
  const std::vector<int> labels = labels_of(r);
  vit::cpu::AdamWParams hp;
  hp.lr = r.meta["lr"], hp.weight_decay = r.meta["weight_decay"];
  const auto& want = r.t["losses10"];
  for (int s = 0; s < 10; s++) {
    m.forward(r.t["input"].data(), B);
    float loss = m.loss(labels.data(), r.meta["smoothing"].get<float>());
    // The curve drifts by fp32 rounding through 10 updates: 1e-4 relative per step.
    EXPECT_NEAR(loss, want[s], 1e-4 * std::fabs(want[s])) << "step " << s + 1;
    m.zero_grad();
    m.backward();
    hp.step = s + 1;
    m.adamw_step(hp, r.meta["clip"].get<float>());
  }
}

INSTANTIATE_TEST_SUITE_P(Torchvision, Parity, ::testing::Values("parity_tiny_a", "parity_tiny_b", "parity_tiny_c"));

// The same hash as tools/gen_parity.py:hash_uniform.
uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}
void hash_uniform(const std::string& key, float* out, size_t n, double scale, double shift) {
  uint64_t seed = fnv1a64(key);
  for (size_t i = 0; i < n; i++) {
    const uint64_t z = vit::splitmix64_at(seed, i);
    double u = (double)(z >> 40) / 16777216.0 * 2.0 - 1.0;
    out[i] = (float)(shift + scale * u);
  }
}

TEST(ParityFull, VitB16ForwardMatchesTorchvision) {
  std::ifstream f(std::string(VITENGINE_TEST_DATA) + "/vit_b16_hashinit.json");
  ASSERT_TRUE(f) << "missing tests/data/vit_b16_hashinit.json (run tools/gen_parity.py)";
  json j = json::parse(f);
  vit::ViTConfig c = vit::ViTConfig::preset("vit_b16");
  c.dropout = 0;
  vit::ViT m(c);
  auto ends = [](const std::string& n, const std::string& s) {
    return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
  };
  for (auto& p : m.params()) {
    double scale = p.decay ? 0.05 : 0.02, shift = 0;
    if (ends(p.name, "ln_1.weight") || ends(p.name, "ln_2.weight") || p.name == "encoder.ln.weight")
      scale = 0.1, shift = 1.0;
    hash_uniform(p.name, m.param_ptr(p.name), p.numel, scale, shift);
  }
  const int B = j["batch"];
  std::vector<float> x((size_t)B * 3 * 224 * 224);
  hash_uniform("input", x.data(), x.size(), 1.0, 0.0);
  const float* logits = m.forward(x.data(), B);
  std::vector<float> want = j["logits"].get<std::vector<float>>();
  ASSERT_EQ(want.size(), (size_t)B * 14);
  ASSERT_FALSE(all_zero(logits, want.size()));
  // 12 blocks of fp32 GEMMs with K up to 3072: 1e-4 relative
  EXPECT_LT(rel_err(logits, want.data(), want.size()), 1e-4);
}

}  // namespace
