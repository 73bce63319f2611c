// Classification metrics from a confusion matrix: accuracy, per-class precision /
// recall / F1 / support, macro-F1, balanced accuracy, and the same after mapping
// classes onto coarser groups or another data set's labels.
//
// Conventions (the same as ../shared/reference/pytorch_reference.py `metrics`):
//   confusion[t][p] counts samples of true class t predicted as p;
//   precision = tp / column sum (0 when nothing was predicted as the class);
//   recall = tp / row sum; F1 = 2PR / (P + R) (0 when P + R = 0);
//   macro-F1 and balanced accuracy average over the classes PRESENT in the truth
//   (support > 0), so a class missing from a small split does not count as F1 = 0.
// A matrix may have more columns than rows: the extra columns are predictions that
// map to no true class ("other" under a --map) and always count as errors.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vit {

using Confusion = std::vector<std::vector<int64_t>>;

struct ClassMetrics {
  std::string name;
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;    // true samples of the class (row sum)
  int64_t predicted = 0;  // samples predicted as the class (column sum)
};

struct Metrics {
  std::vector<std::string> row_names;  // true classes
  std::vector<std::string> col_names;  // predicted classes (row_names, then any extra columns)
  Confusion confusion;
  int64_t total = 0;
  double accuracy = 0, macro_f1 = 0, balanced_accuracy = 0;
  std::vector<ClassMetrics> per_class;  // one per row

  nlohmann::json to_json() const;  // accuracy, macro_f1, balanced_accuracy, per_class, confusion, ...
};

// Rows = true classes (n_rows), columns = n_cols >= n_rows predicted classes.
Confusion confusion_matrix(const std::vector<int>& truth, const std::vector<int>& pred, int n_rows, int n_cols = -1);
// col_names may be empty (then = row_names) or longer than row_names.
Metrics compute_metrics(const Confusion& cm, const std::vector<std::string>& row_names,
                        std::vector<std::string> col_names = {});
// Accuracy after mapping both truth and prediction through class_to_group.
double group_accuracy(const Confusion& cm, const std::vector<int>& class_to_group);
// Fold a square confusion over classes into one over groups.
Confusion fold_confusion(const Confusion& cm, const std::vector<int>& class_to_group, int n_groups);
// Recall of each class restricted to the samples whose `group_of_sample` == g,
// e.g. per-source recall (pbc vs aml-lmu). Returns {group: {class name: recall, ...}}.
nlohmann::json recall_by(const std::vector<int>& truth, const std::vector<int>& pred,
                         const std::vector<std::string>& sample_group, const std::vector<std::string>& class_names);

// argmax of each row of (n, k) logits.
std::vector<int> argmax_rows(const float* logits, size_t n, int k);

// A fraction as the reports print it: 0.9429 -> "94.29%".
std::string percent(double fraction);

}  // namespace vit
