// The out-of-distribution score (engine/eval/ood.h): energy against a long-double reference, the
// threshold's false-alarm rate, AUROC against counting every pair, and the folder rule.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/eval/ood.h"

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
}

}  // namespace
