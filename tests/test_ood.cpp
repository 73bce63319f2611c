// The out-of-distribution scores (engine/eval/ood.h): energy against a long-double reference, the
// Mahalanobis distance against a long-double linear solve and against the chi-square law it follows
// on Gaussian data, the threshold's false-alarm rate, AUROC against counting every pair, the
// stored reference, the folder rule, and the features a Predictor scores.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/eval/inference.h"
#include "engine/eval/ood.h"
#include "engine/eval/tta.h"

namespace {

TEST(Ood, EnergyMatchesALongDoubleReference) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 8);
  for (int t = 0; t < 20; ++t) {
    std::vector<float> z(14);
    for (auto& v : z) v = nd(rng);
    if (t == 0) z[3] = 300;  // exp overflows in float without the max subtracted
    long double s = 0;
    for (float v : z) s += std::exp((long double)v);
    EXPECT_NEAR(vit::energy_score(z.data(), 14), double(-std::log(s)), 1e-9 * std::max(1.0, double(std::log(s))));
  }
}

TEST(Ood, ThresholdFlagsTheStatedShareOfInDomainScores) {
  std::mt19937 rng(2);
  std::normal_distribution<double> nd(-5, 2);
  for (double fpr : {0.01, 0.05, 0.2}) {
    std::vector<double> v(2000);
    for (auto& x : v) x = nd(rng);
    const double t = vit::ood_threshold(v, fpr);
    size_t over = 0;
    for (double x : v) over += x > t;
    EXPECT_NEAR(double(over) / double(v.size()), fpr, 1.0 / double(v.size())) << fpr;
  }
  EXPECT_THROW(vit::ood_threshold({}, 0.05), std::runtime_error);
  EXPECT_THROW(vit::ood_threshold({1, 2}, 1.5), std::runtime_error);
}

TEST(Ood, AurocMatchesCountingEveryPair) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> coarse(0, 9);  // many ties
  std::vector<double> in(300), out(200);
  for (auto& x : in) x = coarse(rng);
  for (auto& x : out) x = coarse(rng) + 2;
  double wins = 0;
  for (double o : out)
    for (double i : in) wins += o > i ? 1.0 : o == i ? 0.5 : 0.0;
  EXPECT_NEAR(vit::auroc(in, out), wins / double(in.size() * out.size()), 1e-12);
  EXPECT_DOUBLE_EQ(vit::auroc({1, 2}, {3, 4}), 1.0);
  EXPECT_DOUBLE_EQ(vit::auroc({3, 4}, {1, 2}), 0.0);
}

TEST(Ood, ReferenceFromMetaAndTheFolderRule) {
  EXPECT_FALSE(vit::OodReference::from_meta(nlohmann::json::object()).present);
  const auto r = vit::OodReference::from_meta({{"ood", {{"score", "energy"}, {"threshold", -3.0}, {"fpr", 0.05}}}});
  ASSERT_TRUE(r.present);
  EXPECT_TRUE(r.flags(-2.9));
  EXPECT_FALSE(r.flags(-3.1));
  EXPECT_FALSE(vit::folder_looks_unlike(r, 0.10));  // twice the false-alarm rate: not yet
  EXPECT_TRUE(vit::folder_looks_unlike(r, 0.30));
  EXPECT_FALSE(vit::folder_looks_unlike(vit::OodReference{}, 1.0));  // no threshold, no verdict
  EXPECT_THROW(vit::OodReference::from_meta({{"ood", {{"score", "mahalanobis"}}}}), std::runtime_error);
  EXPECT_THROW(vit::OodReference::from_meta({{"ood", {{"score", "mahalanobis"}, {"threshold", 1.0}}}}),
               std::runtime_error);  // a threshold without the statistics it thresholds
  EXPECT_THROW(vit::OodReference::from_meta({{"ood", {{"score", "knn"}, {"threshold", 1.0}}}}), std::runtime_error);
}

// Gaussian classes in d dimensions: means far apart, one shared covariance A A^T (A random).
struct GaussianClasses {
  int d, C;
  std::vector<double> A, mu;
  std::mt19937 rng;
  GaussianClasses(int d_, int C_, uint32_t seed) : d(d_), C(C_), A(size_t(d_) * d_), mu(size_t(C_) * d_), rng(seed) {
    std::normal_distribution<double> nd(0, 1);
    for (auto& v : A) v = 0.4 * nd(rng);
    for (int i = 0; i < d; ++i) A[size_t(i) * d + i] += 1.0;
    for (auto& v : mu) v = 20 * nd(rng);
  }
  void draw(int c, float* out) {
    std::normal_distribution<double> nd(0, 1);
    std::vector<double> z(d);
    for (auto& v : z) v = nd(rng);
    for (int i = 0; i < d; ++i) {
      double s = mu[size_t(c) * d + i];
      for (int k = 0; k < d; ++k) s += A[size_t(i) * d + k] * z[k];
      out[i] = float(s);
    }
  }
};

// (f - m)^T S^-1 (f - m) by solving S x = f - m with Gaussian elimination (partial pivoting) in
// long double: no Cholesky, no inverse, nothing the engine computes.
long double solve_quadratic(std::vector<long double> S, std::vector<long double> r, int d) {
  const std::vector<long double> r0 = r;
  for (int c = 0; c < d; ++c) {
    int p = c;
    for (int i = c + 1; i < d; ++i)
      if (std::fabs(S[size_t(i) * d + c]) > std::fabs(S[size_t(p) * d + c])) p = i;
    for (int k = 0; k < d; ++k) std::swap(S[size_t(c) * d + k], S[size_t(p) * d + k]);
    std::swap(r[c], r[p]);
    for (int i = c + 1; i < d; ++i) {
      const long double f = S[size_t(i) * d + c] / S[size_t(c) * d + c];
      for (int k = c; k < d; ++k) S[size_t(i) * d + k] -= f * S[size_t(c) * d + k];
      r[i] -= f * r[c];
    }
  }
  std::vector<long double> x(d);
  for (int i = d - 1; i >= 0; --i) {
    long double s = r[i];
    for (int k = i + 1; k < d; ++k) s -= S[size_t(i) * d + k] * x[k];
    x[i] = s / S[size_t(i) * d + i];
  }
  long double q = 0;
  for (int i = 0; i < d; ++i) q += r0[i] * x[i];
  return q;
}

TEST(OodMahalanobis, MatchesALongDoubleSolveWithAndWithoutShrinkage) {
  const int d = 7, C = 3, n = 240;
  GaussianClasses g(d, C, 5);
  std::vector<float> f(size_t(n) * d);
  std::vector<int> y(n);
  for (int i = 0; i < n; ++i) g.draw(y[i] = i % C, f.data() + size_t(i) * d);
  // The test's own statistics: class means and the pooled covariance over n.
  std::vector<long double> mu(size_t(C) * d, 0), S(size_t(d) * d, 0);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < d; ++k) mu[size_t(y[i]) * d + k] += f[size_t(i) * d + k] / (long double)(n / C);
  for (int i = 0; i < n; ++i)
    for (int a = 0; a < d; ++a)
      for (int b = 0; b < d; ++b)
        S[size_t(a) * d + b] += (f[size_t(i) * d + a] - mu[size_t(y[i]) * d + a]) *
                                (f[size_t(i) * d + b] - mu[size_t(y[i]) * d + b]) / (long double)n;
  long double tr = 0;
  for (int a = 0; a < d; ++a) tr += S[size_t(a) * d + a];
  for (double shrink : {0.0, 0.2}) {
    const vit::MahalanobisStats m = vit::fit_mahalanobis(f.data(), y.data(), n, d, C, shrink);
    std::vector<long double> Ss = S;
    for (int a = 0; a < d; ++a)
      for (int b = 0; b < d; ++b)
        Ss[size_t(a) * d + b] = (1 - shrink) * S[size_t(a) * d + b] + (a == b ? shrink * tr / d : 0);
    std::vector<float> q(d);
    for (int t = 0; t < 30; ++t) {
      g.draw(t % C, q.data());
      if (t % 2) q[t % d] += 15;  // some far from every class
      long double best = INFINITY;
      for (int c = 0; c < C; ++c) {
        std::vector<long double> r(d);
        for (int k = 0; k < d; ++k) r[k] = q[k] - mu[size_t(c) * d + k];
        best = std::min(best, solve_quadratic(Ss, r, d));
      }
      // The stored numbers keep 7 significant digits, as a float does.
      EXPECT_NEAR(m.score(q.data(), d), double(best), 1e-5 * double(best) + 1e-6) << shrink << " " << t;
    }
  }
}

TEST(OodMahalanobis, FollowsTheChiSquareLawOnGaussianDataAndSeparatesAShiftedCloud) {
  // Drawn from the fitted classes, the squared distance to the own class is chi-square with d
  // degrees of freedom: mean d, variance 2d. A cloud moved off every class scores higher.
  const int d = 10, C = 4, n = 8000;
  GaussianClasses g(d, C, 9);
  std::vector<float> f(size_t(n) * d), q(d);
  std::vector<int> y(n);
  for (int i = 0; i < n; ++i) g.draw(y[i] = i % C, f.data() + size_t(i) * d);
  const vit::MahalanobisStats m = vit::fit_mahalanobis(f.data(), y.data(), n, d, C, 0.0);
  std::vector<double> in, out;
  for (int t = 0; t < 4000; ++t) {
    g.draw(t % C, q.data());
    in.push_back(m.score(q.data(), d));
    for (int k = 0; k < d; k += 2) q[k] += 3;  // 3 units along half the axes
    out.push_back(m.score(q.data(), d));
  }
  double mean = 0, var = 0;
  for (double v : in) mean += v / double(in.size());
  for (double v : in) var += (v - mean) * (v - mean) / double(in.size() - 1);
  EXPECT_NEAR(mean, d, 0.35);     // standard error sqrt(2d / 4000) = 0.07
  EXPECT_NEAR(var, 2.0 * d, 2.5);  // chi-square variance
  EXPECT_GT(vit::auroc(in, out), 0.95);
}

TEST(OodMahalanobis, StoredStatisticsScoreAsFittedAndBadOnesAreRefused) {
  const int d = 5, C = 3, n = 90;
  GaussianClasses g(d, C, 11);
  std::vector<float> f(size_t(n) * d), q(d);
  std::vector<int> y(n);
  for (int i = 0; i < n; ++i) g.draw(y[i] = i % 2 == 0 ? 0 : 2, f.data() + size_t(i) * d);  // class 1 absent
  const vit::MahalanobisStats m = vit::fit_mahalanobis(f.data(), y.data(), n, d, C);
  EXPECT_EQ(m.classes, (std::vector<int>{0, 2}));
  // Through the model's metadata, as every command reads it, via the JSON text a file holds.
  const nlohmann::json extra = nlohmann::json::parse(
      nlohmann::json({{"ood", {{"score", "mahalanobis"}, {"threshold", 12.5}, {"mahalanobis", m.to_json()}}}}).dump());
  const vit::OodReference r = vit::OodReference::from_meta(extra);
  ASSERT_TRUE(r.present && r.needs_features());
  for (int t = 0; t < 10; ++t) {
    g.draw(t % C, q.data());
    EXPECT_DOUBLE_EQ(r.score(nullptr, 0, q.data(), d), m.score(q.data(), d));
  }
  EXPECT_THROW(m.score(q.data(), d - 1), std::invalid_argument);
  nlohmann::json bad = m.to_json();
  bad["whiten_lower"].erase(0);
  EXPECT_THROW(vit::MahalanobisStats::from_json(bad), std::runtime_error);
  bad = m.to_json();
  bad["means"] = "x";
  EXPECT_THROW(vit::MahalanobisStats::from_json(bad), std::runtime_error);
  y[3] = C;
  EXPECT_THROW(vit::fit_mahalanobis(f.data(), y.data(), n, d, C), std::invalid_argument);
  const std::vector<float> same(size_t(n) * d, 1.0f);
  EXPECT_THROW(vit::fit_mahalanobis(same.data(), std::vector<int>(n, 0).data(), n, d, C, 0.0), std::runtime_error);
}

// The features a Predictor scores are what the head read: with test-time augmentation their mean
// over the views, so that head(mean features) is the mean of the views' logits.
TEST(OodMahalanobis, PredictorFeaturesAreWhatTheHeadReads) {
  vit::ViTConfig c;
  c.name = "tiny";
  c.image_size = 32, c.patch = 8, c.dim = 12, c.depth = 1, c.heads = 3, c.mlp_dim = 24, c.num_classes = 3;
  vit::LoadedModel lm;
  lm.model = std::make_unique<vit::ViT>(c);
  lm.model->init(3);
  lm.meta.class_names = {"a", "b", "c"};
  vit::ViT& m = *lm.model;
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0, 0.5f);
  for (const char* name : {"heads.head.weight", "heads.head.bias"})
    for (size_t i = 0; i < m.param(name).numel; ++i) m.param_ptr(name)[i] = nd(rng);
  std::vector<float> W(m.param_ptr("heads.head.weight"), m.param_ptr("heads.head.weight") + 3 * 12),
      b(m.param_ptr("heads.head.bias"), m.param_ptr("heads.head.bias") + 3);
  vit::Predictor pred(std::move(lm), "tiny-test");
  std::vector<float> x(2 * pred.input_floats());
  for (auto& v : x) v = nd(rng);
  for (const char* tta : {"none", "d4"}) {
    pred.set_tta(tta);
    const auto ps = pred.run(x.data(), 2, false);
    for (const auto& p : ps) {
      ASSERT_EQ(p.features.size(), 12u);
      for (int k = 0; k < 3; ++k) {
        double z = b[k];
        for (int j = 0; j < 12; ++j) z += double(W[size_t(k) * 12 + j]) * p.features[j];
        EXPECT_NEAR(z, p.logits[k], 1e-4) << tta;
      }
      EXPECT_DOUBLE_EQ(p.ood_score, vit::energy_score(p.logits.data(), 3));  // no reference: energy
    }
    if (std::string(tta) == "d4") {  // and the views differ, so the mean is not one view's features
      pred.set_tta("none");
      EXPECT_NE(pred.run(x.data(), 2, false)[0].features, ps[0].features);
    }
  }
}

// Statistics of another width (another model's) are refused when the model loads, by name.
TEST(OodMahalanobis, StatisticsOfAnotherWidthAreRefusedAtLoad) {
  vit::ViTConfig c;
  c.name = "tiny";
  c.image_size = 32, c.patch = 8, c.dim = 12, c.depth = 1, c.heads = 3, c.mlp_dim = 24, c.num_classes = 2;
  std::vector<float> f(40 * 5);
  std::vector<int> y(40);
  std::mt19937 rng(6);
  std::normal_distribution<float> nd(0, 1);
  for (auto& v : f) v = nd(rng);
  for (int i = 0; i < 40; ++i) y[i] = i % 2;
  const vit::MahalanobisStats m = vit::fit_mahalanobis(f.data(), y.data(), 40, 5, 2);  // 5 wide, the model 12
  vit::LoadedModel lm;
  lm.model = std::make_unique<vit::ViT>(c);
  lm.model->init(1);
  lm.meta.class_names = {"a", "b"};
  lm.meta.extra = {{"ood", {{"score", "mahalanobis"}, {"threshold", 10.0}, {"mahalanobis", m.to_json()}}}};
  try {
    vit::Predictor p(std::move(lm), "tiny-foreign");
    FAIL() << "statistics of 5 features were accepted for a model of 12";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tiny-foreign"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ood-ref"), std::string::npos) << e.what();
  }
}

}  // namespace
