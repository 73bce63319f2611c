// The masked autoencoder (engine/model/mae.h) against a PyTorch one written independently
// (tools/gen_mae_parity.py -> tests/data/mae_parity_*): the loss, every gradient (the decoder's
// included) and 10 AdamW steps with a fixed mask; and the mask draws.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "engine/model/mae.h"
#include "tests/parity_util.h"

using parity::all_zero;
using parity::load_ref;
using parity::rel_err;
using parity::RefFile;

namespace {

struct Loaded {
  std::unique_ptr<vit::MaskedAutoencoder> mae;
  std::vector<int> keep;
  int B = 0;
};

Loaded load_mae(RefFile& r) {
  const auto& m = r.meta;
  vit::ViTConfig e;
  e.name = "mae_parity";
  e.image_size = m["image_size"], e.patch = m["patch"], e.dim = m["dim"], e.depth = m["depth"];
  e.heads = m["heads"], e.mlp_dim = m["mlp_dim"], e.num_classes = 1, e.dropout = 0.0f;
  vit::MaeConfig d;
  d.dim = m["dec_dim"], d.depth = m["dec_depth"], d.heads = m["dec_heads"], d.mlp_dim = m["dec_mlp"];
  Loaded l;
  l.mae = std::make_unique<vit::MaskedAutoencoder>(e, d);
  l.B = m["batch"];
  size_t seen = 0;
  auto put = [&](const vit::ParamInfo& p, float* dst) {
    auto it = r.t.find("param." + p.name);
    if (it == r.t.end()) throw std::runtime_error("reference lacks " + p.name);
    if (r.shape.at("param." + p.name) != p.shape) throw std::runtime_error("shape of " + p.name + " differs");
    std::copy(it->second.begin(), it->second.end(), dst);
    seen++;
  };
  for (const auto& p : l.mae->encoder().params()) put(p, l.mae->encoder().param_ptr(p.name));
  for (const auto& p : l.mae->decoder_params()) put(p, l.mae->decoder_param_ptr(p.name));
  size_t ref_params = 0;
  for (auto& [k, v] : r.t) ref_params += k.rfind("param.", 0) == 0;
  if (seen != ref_params) throw std::runtime_error("the reference has tensors vitengine does not");
  EXPECT_EQ(l.mae->num_visible(), r.meta["num_visible"].get<int>());
  for (float f : r.t["keep"]) l.keep.push_back(int(f));
  return l;
}

class MaeParity : public ::testing::TestWithParam<std::string> {};

TEST_P(MaeParity, LossAndEveryGradient) {
  RefFile r = load_ref(GetParam());
  Loaded l = load_mae(r);
  auto& mae = *l.mae;
  const float loss = mae.forward(r.t["input"].data(), l.keep.data(), l.B);
  // fp32 against fp32 in another summation order: the 1e-4 relative
  EXPECT_NEAR(loss, r.t["loss"][0], 1e-4 * std::fabs(r.t["loss"][0]));
  mae.zero_grad();
  mae.backward();
  auto check = [&](const vit::ParamInfo& p, const float* g) {
    const auto& ref = r.t.at("grad." + p.name);
    if (p.name.rfind("heads.", 0) == 0) {  // the encoder's head is not in the autoencoder
      EXPECT_TRUE(all_zero(g, p.numel)) << p.name;
      return;
    }
    ASSERT_FALSE(all_zero(g, p.numel)) << p.name;
    // Through encoder, decoder and the per-patch normalised target: 1e-4 relative (the ViT parity's
    // bound; measured ~1e-6)
    EXPECT_LT(rel_err(g, ref.data(), p.numel), 1e-4) << "gradient of " << p.name;
  };
  for (const auto& p : mae.encoder().params()) check(p, mae.encoder().grad_data() + p.offset);
  for (const auto& p : mae.decoder_params()) check(p, mae.decoder_grad() + p.offset);
}

TEST_P(MaeParity, TenAdamWStepsFollowPyTorch) {
  RefFile r = load_ref(GetParam());
  Loaded l = load_mae(r);
  vit::cpu::AdamWParams hp;
  hp.lr = r.meta["lr"], hp.weight_decay = r.meta["weight_decay"];
  const auto& want = r.t["losses10"];
  for (int s = 0; s < 10; s++) {
    const float loss = l.mae->forward(r.t["input"].data(), l.keep.data(), l.B);
    EXPECT_NEAR(loss, want[s], 1e-4 * std::fabs(want[s])) << "step " << s + 1;
    l.mae->zero_grad();
    l.mae->backward();
    hp.step = s + 1;
    l.mae->adamw_step(hp, r.meta["clip"].get<float>());
  }
}

INSTANTIATE_TEST_SUITE_P(PyTorch, MaeParity, ::testing::Values("mae_parity_a", "mae_parity_b"));

TEST(Mae, MaskDrawsArePerSampleDistinctSortedAndSeeded) {
  const int Np = 196, Nv = 49;
  std::vector<int> a(Nv), b(Nv), c(Nv);
  vit::draw_visible_patches(vit::mask_seed(0, 3, 17), Np, Nv, a.data());
  vit::draw_visible_patches(vit::mask_seed(0, 3, 17), Np, Nv, b.data());
  vit::draw_visible_patches(vit::mask_seed(0, 3, 18), Np, Nv, c.data());
  EXPECT_EQ(a, b);  // a pure function of (seed, epoch, sample)
  EXPECT_NE(a, c);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<int>(a.begin(), a.end()).size(), size_t(Nv));
  EXPECT_GE(a.front(), 0);
  EXPECT_LT(a.back(), Np);
  // every patch is visible about Nv/Np of the time over many samples (uniform masking)
  std::vector<int> count(Np, 0);
  const int draws = 4000;
  for (int i = 0; i < draws; i++) {
    vit::draw_visible_patches(vit::mask_seed(1, 0, i), Np, Nv, a.data());
    for (int p : a) count[p]++;
  }
  const double want = double(draws) * Nv / Np;  // 1000, binomial sd ~27
  for (int p = 0; p < Np; p++) EXPECT_NEAR(count[p], want, 150) << "patch " << p;
}

TEST(Mae, ReconstructionKeepsVisiblePatchesAndRefusesBadMasks) {
  vit::ViTConfig e = vit::ViTConfig::preset("vit_ti16");
  e.image_size = 16, e.patch = 4, e.dim = 24, e.depth = 1, e.heads = 2, e.mlp_dim = 32, e.num_classes = 1;
  vit::MaeConfig d;
  d.dim = 16, d.depth = 1, d.heads = 2, d.mlp_dim = 32;
  vit::MaskedAutoencoder mae(e, d);
  mae.init(5);
  EXPECT_EQ(mae.num_visible(), 4);  // 16 patches, 75% hidden
  std::vector<float> img(2 * 3 * 16 * 16);
  for (size_t i = 0; i < img.size(); i++) img[i] = float(std::sin(0.37 * double(i)));
  std::vector<int> keep = {0, 5, 10, 15, 1, 2, 3, 4};
  const float loss = mae.forward(img.data(), keep.data(), 2);
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_GT(loss, 0.0f);
  const std::vector<float> rec = mae.reconstruction(), hidden = mae.hidden_mask();
  ASSERT_EQ(hidden.size(), 32u);
  EXPECT_EQ(hidden[0], 0.0f);
  EXPECT_EQ(hidden[1], 1.0f);
  EXPECT_EQ(hidden[16 + 1], 0.0f);
  // patch 5 of image 0 (row 1, column 1) is visible: its pixels come back unchanged; patch 6 is not
  for (int c = 0; c < 3; c++)
    for (int y = 4; y < 8; y++)
      for (int x = 4; x < 8; x++) EXPECT_EQ(rec[(c * 16 + y) * 16 + x], img[(c * 16 + y) * 16 + x]);
  bool changed = false;
  for (int y = 4; y < 8; y++)
    for (int x = 8; x < 12; x++) changed |= rec[y * 16 + x] != img[y * 16 + x];
  EXPECT_TRUE(changed);
  std::vector<int> repeated = {0, 0, 1, 2, 1, 2, 3, 4};
  EXPECT_THROW(mae.forward(img.data(), repeated.data(), 2), std::invalid_argument);
  std::vector<int> outside = {0, 1, 2, 16, 1, 2, 3, 4};
  EXPECT_THROW(mae.forward(img.data(), outside.data(), 2), std::invalid_argument);
}

}  // namespace
