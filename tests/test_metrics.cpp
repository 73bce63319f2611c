// Metrics against hand-computed values on small confusion matrices (worked by hand
// in the comments; none of these numbers come from the code under test).
#include <gtest/gtest.h>

#include "engine/eval/metrics.h"

using namespace vit;

namespace {
// rows = truth, cols = prediction
//        A  B  C
//   A  [ 5, 1, 0 ]  support 6
//   B  [ 2, 3, 1 ]  support 6
//   C  [ 0, 0, 4 ]  support 4      total 16, correct 12
const Confusion kCm = {{5, 1, 0}, {2, 3, 1}, {0, 0, 4}};
}  // namespace

TEST(Metrics, HandComputedThreeClass) {
  Metrics m = compute_metrics(kCm, {"A", "B", "C"});
  EXPECT_EQ(m.total, 16);
  EXPECT_DOUBLE_EQ(m.accuracy, 12.0 / 16.0);
  // precision = tp / column sum: A 5/7, B 3/4, C 4/5
  EXPECT_DOUBLE_EQ(m.per_class[0].precision, 5.0 / 7.0);
  EXPECT_DOUBLE_EQ(m.per_class[1].precision, 3.0 / 4.0);
  EXPECT_DOUBLE_EQ(m.per_class[2].precision, 4.0 / 5.0);
  // recall = tp / row sum: A 5/6, B 1/2, C 1
  EXPECT_DOUBLE_EQ(m.per_class[0].recall, 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(m.per_class[1].recall, 0.5);
  EXPECT_DOUBLE_EQ(m.per_class[2].recall, 1.0);
  // F1: A = 2(5/7)(5/6)/(5/7+5/6) = 10/13; B = 2(3/4)(1/2)/(5/4) = 3/5; C = 2(4/5)/(9/5) = 8/9
  EXPECT_NEAR(m.per_class[0].f1, 10.0 / 13.0, 1e-15);
  EXPECT_NEAR(m.per_class[1].f1, 3.0 / 5.0, 1e-15);
  EXPECT_NEAR(m.per_class[2].f1, 8.0 / 9.0, 1e-15);
  EXPECT_NEAR(m.macro_f1, (10.0 / 13 + 3.0 / 5 + 8.0 / 9) / 3, 1e-15);
  // balanced accuracy = mean recall = (5/6 + 1/2 + 1) / 3 = 7/9
  EXPECT_NEAR(m.balanced_accuracy, 7.0 / 9.0, 1e-15);
  EXPECT_EQ(m.per_class[1].support, 6);
  EXPECT_EQ(m.per_class[0].predicted, 7);
}

TEST(Metrics, ConfusionFromLabels) {
  // the same matrix written as label pairs
  std::vector<int> t, p;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < kCm[i][j]; ++k) t.push_back(i), p.push_back(j);
  EXPECT_EQ(confusion_matrix(t, p, 3), kCm);
  EXPECT_THROW(confusion_matrix({0, 3}, {0, 0}, 3), std::out_of_range);
  EXPECT_THROW(confusion_matrix({0}, {0, 1}, 3), std::invalid_argument);
}

TEST(Metrics, AbsentClassIsLeftOutOfTheAverages) {
  // D never occurs in the truth but is predicted once (for an A): precision 0, support 0.
  Confusion cm = {{4, 1, 0, 1}, {2, 3, 1, 0}, {0, 0, 4, 0}, {0, 0, 0, 0}};
  Metrics m = compute_metrics(cm, {"A", "B", "C", "D"});
  EXPECT_EQ(m.per_class[3].support, 0);
  EXPECT_EQ(m.per_class[3].predicted, 1);
  EXPECT_DOUBLE_EQ(m.per_class[3].f1, 0.0);
  // A: P = 4/6, R = 4/6, F1 = 2/3. B: 3/4, 1/2 -> 3/5. C: 4/5, 1 -> 8/9.
  EXPECT_NEAR(m.macro_f1, (2.0 / 3 + 3.0 / 5 + 8.0 / 9) / 3, 1e-15);
  EXPECT_NEAR(m.balanced_accuracy, (4.0 / 6 + 0.5 + 1.0) / 3, 1e-15);
  EXPECT_DOUBLE_EQ(m.accuracy, 11.0 / 16.0);
}

TEST(Metrics, ExtraColumnCountsAsError) {
  // 2 true classes, 3 columns: the third is "other" (a prediction that maps nowhere).
  Confusion cm = {{3, 0, 1}, {1, 2, 2}};
  Metrics m = compute_metrics(cm, {"X", "Y"});
  EXPECT_EQ(m.col_names.back(), "other");
  EXPECT_DOUBLE_EQ(m.accuracy, 5.0 / 9.0);
  EXPECT_DOUBLE_EQ(m.per_class[0].recall, 3.0 / 4.0);
  EXPECT_DOUBLE_EQ(m.per_class[0].precision, 3.0 / 4.0);  // column X: 3 + 1
  EXPECT_DOUBLE_EQ(m.per_class[1].recall, 2.0 / 5.0);
  EXPECT_DOUBLE_EQ(m.per_class[1].precision, 1.0);
}

TEST(Metrics, GroupAccuracyAndFold) {
  // A and B in group 0, C in group 1: only B->C (1) crosses groups: 15/16.
  std::vector<int> c2g = {0, 0, 1};
  EXPECT_DOUBLE_EQ(group_accuracy(kCm, c2g), 15.0 / 16.0);
  Confusion g = fold_confusion(kCm, c2g, 2);
  Confusion want = {{11, 1}, {0, 4}};
  EXPECT_EQ(g, want);
}

TEST(Metrics, RecallBySource) {
  std::vector<int> t = {0, 0, 1, 1, 0}, p = {0, 1, 1, 1, 0};
  std::vector<std::string> src = {"pbc", "pbc", "pbc", "lmu", "lmu"};
  auto j = recall_by(t, p, src, {"A", "B"});
  EXPECT_DOUBLE_EQ(j["pbc"]["per_class"]["A"]["recall"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["pbc"]["per_class"]["B"]["recall"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["pbc"]["accuracy"].get<double>(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(j["lmu"]["accuracy"].get<double>(), 1.0);
  EXPECT_EQ(j["lmu"]["support"].get<int>(), 2);
}

TEST(Metrics, ArgmaxRows) {
  float z[] = {0.1f, 0.7f, 0.2f, 3.0f, -1.0f, 2.0f};
  EXPECT_EQ(argmax_rows(z, 2, 3), (std::vector<int>{1, 0}));
}

TEST(Metrics, PercentAsTheReportsPrintIt) {
  EXPECT_EQ(percent(66.0 / 70), "94.29%");
  EXPECT_EQ(percent(1.0), "100.00%");
  EXPECT_EQ(percent(0.0), "0.00%");
}
