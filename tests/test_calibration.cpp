// ECE on hand-worked examples, and temperature fitting on synthetic logits whose
// NLL optimum is known in closed form.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/eval/calibration.h"

using namespace vit;

TEST(Calibration, EceHandWorked) {
  // 10 bins. Two samples at 0.85 (bin (0.8, 0.9]), one right: accuracy 0.5, gap 0.35.
  // Two at 0.65 (bin (0.6, 0.7]), both right: accuracy 1, gap 0.35.
  // ECE = 2/4 * 0.35 + 2/4 * 0.35 = 0.35; MCE = 0.35.
  auto r = calibration({0.85, 0.85, 0.65, 0.65}, {true, false, true, true}, 10);
  EXPECT_NEAR(r.ece, 0.35, 1e-12);
  EXPECT_NEAR(r.mce, 0.35, 1e-12);
  EXPECT_EQ(r.bins[8].count, 2);
  EXPECT_EQ(r.bins[6].count, 2);
  EXPECT_NEAR(r.bins[8].accuracy, 0.5, 1e-12);
  EXPECT_NEAR(r.bins[6].mean_confidence, 0.65, 1e-12);
}

TEST(Calibration, EceUnevenBins) {
  // bin (0.9, 1.0]: 0.95, 0.95, 0.95 with 2 right -> acc 2/3, conf 0.95, gap 0.2833..
  // bin (0.4, 0.5]: 0.45 wrong -> acc 0, gap 0.45.
  // ECE = 3/4 * (0.95 - 2/3) + 1/4 * 0.45
  auto r = calibration({0.95, 0.95, 0.95, 0.45}, {true, true, false, false}, 10);
  EXPECT_NEAR(r.ece, 0.75 * (0.95 - 2.0 / 3.0) + 0.25 * 0.45, 1e-12);
  EXPECT_NEAR(r.mce, 0.45, 1e-12);
}

TEST(Calibration, PerfectlyCalibratedLogitsHaveZeroEce) {
  // Logits (ln 3, 0) -> top probability 3/4; three of four are right -> ECE 0.
  const float a = std::log(3.0f);
  float z[8] = {a, 0, a, 0, a, 0, a, 0};
  int y[4] = {0, 0, 0, 1};
  auto r = calibration(z, y, 4, 2, 1.0, 15);
  EXPECT_NEAR(r.ece, 0.0, 1e-6);   // float logits: ln 3 rounded to float, ~1e-8 in p
  EXPECT_GT(r.bins[11].count, 0);  // 0.75 -> bin (11/15, 12/15]
}

TEST(Calibration, NllMatchesHandValue) {
  // logits (0, 0): p = 1/2 for both -> NLL = ln 2; at T = 2, logits (2, 0) -> p = e/(e+1).
  float z[4] = {0, 0, 2, 0};
  int y[2] = {0, 0};
  EXPECT_NEAR(mean_nll(z, y, 1, 2), std::log(2.0), 1e-12);
  EXPECT_NEAR(mean_nll(z + 2, y, 1, 2, 2.0), -std::log(std::exp(1.0) / (std::exp(1.0) + 1)), 1e-12);
}

TEST(Calibration, TemperatureRecoversKnownOptimum) {
  // K = 4 classes, every sample has logit a = 3 on class 0 and 0 elsewhere.
  // 7 of 10 are class 0, the other 3 are classes 1, 2, 3. The NLL
  //   -0.7 ln q - 0.3 ln((1-q)/3),  q = e^{a/T} / (e^{a/T} + 3),
  // is minimised at q = 0.7, i.e. a/T = ln(0.7 * 3 / 0.3) = ln 7, T* = 3 / ln 7 = 1.5417...
  const int K = 4, n = 10;
  std::vector<float> z(n * K, 0.0f);
  std::vector<int> y(n, 0);
  for (int i = 0; i < n; ++i) z[i * K] = 3.0f;
  y[7] = 1, y[8] = 2, y[9] = 3;
  double T = fit_temperature(z.data(), y.data(), n, K);
  EXPECT_NEAR(T, 3.0 / std::log(7.0), 1e-6);
  // the fit lowers the NLL and, being the optimum, beats its neighbours
  EXPECT_LT(mean_nll(z.data(), y.data(), n, K, T), mean_nll(z.data(), y.data(), n, K, 1.0));
  EXPECT_LT(mean_nll(z.data(), y.data(), n, K, T), mean_nll(z.data(), y.data(), n, K, T * 1.01));
  EXPECT_LT(mean_nll(z.data(), y.data(), n, K, T), mean_nll(z.data(), y.data(), n, K, T / 1.01));
}

TEST(Calibration, OverconfidentLogitsGetTemperatureAboveOne) {
  // Two classes, logit gap 4, right 80% of the time: sigma(4/T) = 0.8 -> T = 4 / ln 4.
  const int n = 10;
  std::vector<float> z(2 * n);
  std::vector<int> y(n, 0);
  for (int i = 0; i < n; ++i) z[2 * i] = 4.0f, z[2 * i + 1] = 0.0f;
  y[8] = y[9] = 1;
  double T = fit_temperature(z.data(), y.data(), n, 2);
  EXPECT_NEAR(T, 4.0 / std::log(4.0), 1e-6);
  EXPECT_GT(T, 1.0);
  // after scaling, the confidence equals the accuracy: ECE 0
  auto r = calibration(z.data(), y.data(), n, 2, T, 15);
  EXPECT_NEAR(r.ece, 0.0, 1e-6);
  EXPECT_THROW(fit_temperature(z.data(), y.data(), 0, 2), std::invalid_argument);
}
