// Test-time augmentation: the dihedral views against closed-form index maps, and predict()'s
// mean of views against separate forward passes of hand-made views.
#include <gtest/gtest.h>
#include <array>

#include <random>
#include <set>

#include "engine/data/dataset.h"
#include "engine/eval/inference.h"
#include "engine/runtime/backend.h"
#include "engine/eval/predict.h"
#include "engine/eval/tta.h"
#include "engine/model/vit.h"
#include "tests/data_test_util.h"

using namespace vit;
using namespace vit::testutil;

namespace {

std::vector<float> random_images(int B, int C, int S, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(B) * C * S * S);
  for (auto& v : x) v = nd(g);
  return x;
}

// View k written out, independently of engine/eval/tta.cpp's loop: mirror (x -> S-1-x) first when
// k >= 4, then k % 4 clockwise quarter turns, each in closed form (a clockwise turn sends the
// top row to the right column).
float closed_form(const std::vector<float>& in, int S, size_t plane, int k, int x, int y) {
  int sx, sy;
  switch (k % 4) {
    case 0:
      sx = x, sy = y;
      break;
    case 1:
      sx = y, sy = S - 1 - x;
      break;
    case 2:
      sx = S - 1 - x, sy = S - 1 - y;
      break;
    default:
      sx = S - 1 - y, sy = x;
      break;
  }
  if (k >= 4) sx = S - 1 - sx;
  return in[plane * size_t(S) * S + size_t(sy) * S + sx];
}

// A tiny ViT for 16 px images; its head gets random weights, because torchvision's zero head
// would give every view the same logits and the averaging would go untested.
ViTConfig tiny_config() {
  ViTConfig c;
  c.name = "tiny";
  c.image_size = 16, c.patch = 4, c.dim = 12, c.depth = 2, c.heads = 3, c.mlp_dim = 24, c.num_classes = 3;
  c.dropout = 0;
  return c;
}
void init_with_head(ViT& m, uint64_t seed) {
  m.init(seed);
  std::mt19937 g(uint32_t(seed) + 1);
  std::normal_distribution<float> nd(0.f, 0.5f);
  float* head = m.param_ptr("heads.head.weight");
  for (size_t i = 0; i < m.param("heads.head.weight").numel; ++i) head[i] = nd(g);
}

}  // namespace

TEST(TTA, ViewCountsAndUnknownModes) {
  EXPECT_EQ(tta_view_count("none"), 1);
  EXPECT_EQ(tta_view_count("flip"), 2);
  EXPECT_EQ(tta_view_count("d4"), 8);
  try {
    tta_view_count("rot45");
    FAIL() << "expected an exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("rot45"), std::string::npos) << e.what();
  }
  std::vector<float> a(16), b(16);
  EXPECT_THROW(dihedral_view(a.data(), b.data(), 1, 1, 4, 8), std::invalid_argument);
}

TEST(TTA, DihedralViewsMatchClosedForms) {
  const int B = 2, C = 3;
  for (int S : {1, 4, 5}) {
    const auto in = random_images(B, C, S, 7 + S);
    std::set<std::vector<float>> distinct;
    for (int k = 0; k < 8; ++k) {
      std::vector<float> out(in.size(), NAN);
      dihedral_view(in.data(), out.data(), B, C, S, k);
      for (size_t p = 0; p < size_t(B) * C; ++p)
        for (int y = 0; y < S; ++y)
          for (int x = 0; x < S; ++x)
            ASSERT_EQ(out[p * S * S + size_t(y) * S + x], closed_form(in, S, p, k, x, y))
                << "S " << S << " view " << k << " plane " << p << " at (" << x << ", " << y << ")";
      distinct.insert(out);
    }
    EXPECT_EQ(distinct.size(), S == 1 ? 1u : 8u) << "S " << S << ": the eight views of a random image differ";
  }
  // The hand example: 2x2 [[1, 2], [3, 4]] turned clockwise is [[3, 1], [4, 2]].
  const float m[4] = {1, 2, 3, 4};
  float t[4];
  dihedral_view(m, t, 1, 1, 2, 1);
  EXPECT_EQ(std::vector<float>(t, t + 4), (std::vector<float>{3, 1, 4, 2}));
}

// predict's progress: after each batch, the rows so far, the batch's number and the batch count
// (5 images in batches of 2: 2, 4, 5 rows after batches 1, 2, 3 of 3).
TEST(TTA, PredictReportsProgressAfterEachBatch) {
  TempDir dir("progress");
  std::vector<Sample> samples;
  for (int i = 0; i < 5; ++i) {
    const std::string name = "img_" + std::to_string(i) + ".png";
    write_png((dir.path / name).string(), noise_image(16, 16, 500 + i, 100));
    Sample s;
    s.path = name, s.src = dir.path.string(), s.split = "test", s.sha256 = "x", s.source = "synthetic", s.label = 0;
    samples.push_back(s);
  }
  ViT host(tiny_config());
  init_with_head(host, 3);
  auto backend = make_backend("cpu", host, 8);
  Loader loader(samples, {}, eval_loader_config(16, 2, 1));
  std::vector<std::array<size_t, 3>> calls;
  predict(*backend, loader, 1, nullptr, 0, [&](size_t rows, size_t batch, size_t batches) {
    calls.push_back({rows, batch, batches});
  });
  const std::vector<std::array<size_t, 3>> expect = {{2, 1, 3}, {4, 2, 3}, {5, 3, 3}};
  EXPECT_EQ(calls, expect);
}

// predict(views) must give, row by row in sample order, the mean of the model's logits on each
// view, with batches that do not divide the set (5 images, batch 2).
TEST(TTA, PredictAveragesTheViewsLogits) {
  TempDir dir("tta");
  std::vector<Sample> samples;
  for (int i = 0; i < 5; ++i) {
    const std::string name = "img_" + std::to_string(i) + ".png";
    write_png((dir.path / name).string(), noise_image(16, 16, 300 + i, 90 + 20 * i));
    Sample s;
    s.path = name, s.src = dir.path.string(), s.split = "test", s.sha256 = "x", s.source = "synthetic", s.label = i % 3;
    samples.push_back(s);
  }
  const ViTConfig c = tiny_config();
  ViT host(c);
  init_with_head(host, 11);
  auto backend = make_backend("cpu", host, 8);
  Loader loader(samples, {}, eval_loader_config(16, 2, 1));
  const Predictions one = predict(*backend, loader, 1);
  for (int views : {2, 8}) {
    const Predictions p = predict(*backend, loader, views);
    ASSERT_EQ(p.n(), 5u);
    ASSERT_EQ(p.index, one.index);
    // The reference: the loader's images (batch 5, all at once), every view made here, one forward each.
    Loader all(samples, {}, eval_loader_config(16, 5, 1));
    all.start_epoch(0);
    Batch b;
    ASSERT_TRUE(all.next(b));
    ASSERT_EQ(b.n, 5);
    std::vector<double> want(5 * 3, 0.0);
    std::vector<float> v(b.images.size());
    ViT ref(c);
    std::copy(host.param_data(), host.param_data() + host.num_params(), ref.param_data());
    for (int k = 0; k < views; ++k) {
      dihedral_view(b.images.data(), v.data(), 5, 3, 16, k);
      const float* z = ref.forward(v.data(), 5);
      for (int i = 0; i < 15; ++i) want[i] += z[i] / double(views);
    }
    double spread = 0;  // the views must disagree, or averaging would not be tested
    for (size_t r = 0; r < 5; ++r)
      for (int j = 0; j < 3; ++j) {
        const size_t row = p.index[r];
        EXPECT_NEAR(p.logits[r * 3 + j], want[row * 3 + j], 1e-5) << views << " views, sample " << row;
        spread = std::max(spread, std::abs(double(one.logits[r * 3 + j]) - want[row * 3 + j]));
      }
    EXPECT_GT(spread, 1e-4) << views << " views gave the identity view's logits";
  }
  EXPECT_THROW(predict(*backend, loader, 9), std::invalid_argument);
}

// The prediction service's TTA (Predictor::set_tta): calibrated probabilities of the mean logits
// of the views, and the attention left readable for explain is the unturned image's.
TEST(TTA, PredictorAveragesViewsAndKeepsTheUnturnedAttention) {
  const ViTConfig c = tiny_config();
  LoadedModel lm;
  lm.model = std::make_unique<ViT>(c);
  init_with_head(*lm.model, 3);
  lm.meta.class_names = {"a", "b", "c"};
  lm.meta.temperature = 1.7f;
  ViT ref(c);
  std::copy(lm.model->param_data(), lm.model->param_data() + lm.model->num_params(), ref.param_data());
  Predictor pred(std::move(lm), "tiny-test");
  EXPECT_THROW(pred.set_tta("rot45"), std::invalid_argument);
  const int B = 2;
  const auto x = random_images(B, 3, 16, 21);
  pred.set_tta("d4");
  const auto got = pred.run(x.data(), B);
  std::vector<double> mean(B * 3, 0.0);
  std::vector<float> v(x.size());
  for (int k = 0; k < 8; ++k) {
    dihedral_view(x.data(), v.data(), B, 3, 16, k);
    const float* z = ref.forward(v.data(), B);
    for (int i = 0; i < B * 3; ++i) mean[i] += z[i] / 8.0;
  }
  for (int b = 0; b < B; ++b) {
    double mx = -1e30, den = 0;
    for (int j = 0; j < 3; ++j) mx = std::max(mx, mean[b * 3 + j] / 1.7);
    for (int j = 0; j < 3; ++j) den += std::exp(mean[b * 3 + j] / 1.7 - mx);
    for (int j = 0; j < 3; ++j)
      EXPECT_NEAR(got[b].probs[j], std::exp(mean[b * 3 + j] / 1.7 - mx) / den, 1e-5) << "image " << b << " class " << j;
  }
  ref.forward(x.data(), B);  // the unturned image
  const size_t per_layer = size_t(B) * c.heads * c.seq_len() * c.seq_len();
  for (int l = 0; l < c.depth; ++l) {
    const float *a = pred.model().attention_probs(l), *r = ref.attention_probs(l);
    for (size_t i = 0; i < per_layer; ++i) ASSERT_NEAR(a[i], r[i], 1e-6) << "layer " << l << " element " << i;
  }
}
