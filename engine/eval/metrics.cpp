#include "engine/eval/metrics.h"

#include <cstdio>
#include <map>
#include <stdexcept>

namespace vit {

Confusion confusion_matrix(const std::vector<int>& truth, const std::vector<int>& pred, int n_rows, int n_cols) {
  if (n_cols < 0) n_cols = n_rows;
  if (truth.size() != pred.size())
    throw std::invalid_argument("confusion_matrix: " + std::to_string(truth.size()) + " labels but " +
                                std::to_string(pred.size()) + " predictions");
  Confusion cm(n_rows, std::vector<int64_t>(n_cols, 0));
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] < 0 || truth[i] >= n_rows)
      throw std::out_of_range("confusion_matrix: true label " + std::to_string(truth[i]) + " at " + std::to_string(i) +
                              " is outside [0, " + std::to_string(n_rows) + ")");
    if (pred[i] < 0 || pred[i] >= n_cols)
      throw std::out_of_range("confusion_matrix: prediction " + std::to_string(pred[i]) + " at " + std::to_string(i) +
                              " is outside [0, " + std::to_string(n_cols) + ")");
    cm[truth[i]][pred[i]]++;
  }
  return cm;
}

Metrics compute_metrics(const Confusion& cm, const std::vector<std::string>& row_names,
                        std::vector<std::string> col_names) {
  const size_t R = cm.size();
  if (row_names.size() != R)
    throw std::invalid_argument("compute_metrics: " + std::to_string(R) + " rows but " +
                                std::to_string(row_names.size()) + " names");
  const size_t C = R ? cm[0].size() : 0;
  if (C < R) throw std::invalid_argument("compute_metrics: fewer columns than rows");
  for (const auto& row : cm)
    if (row.size() != C) throw std::invalid_argument("compute_metrics: ragged confusion matrix");
  if (col_names.empty()) col_names = row_names;
  while (col_names.size() < C) col_names.push_back("other");

  Metrics m;
  m.row_names = row_names;
  m.col_names = col_names;
  m.confusion = cm;
  int64_t correct = 0;
  std::vector<int64_t> colsum(C, 0);
  for (size_t t = 0; t < R; ++t)
    for (size_t p = 0; p < C; ++p) {
      m.total += cm[t][p];
      colsum[p] += cm[t][p];
    }
  double f1_sum = 0, rec_sum = 0;
  int present = 0;
  for (size_t c = 0; c < R; ++c) {
    ClassMetrics k;
    k.name = row_names[c];
    int64_t tp = cm[c][c];
    correct += tp;
    for (size_t p = 0; p < C; ++p) k.support += cm[c][p];
    k.predicted = colsum[c];
    k.precision = k.predicted ? double(tp) / double(k.predicted) : 0.0;
    k.recall = k.support ? double(tp) / double(k.support) : 0.0;
    k.f1 = (k.precision + k.recall) > 0 ? 2 * k.precision * k.recall / (k.precision + k.recall) : 0.0;
    if (k.support > 0) {
      ++present;
      f1_sum += k.f1;
      rec_sum += k.recall;
    }
    m.per_class.push_back(k);
  }
  m.accuracy = m.total ? double(correct) / double(m.total) : 0.0;
  m.macro_f1 = present ? f1_sum / present : 0.0;
  m.balanced_accuracy = present ? rec_sum / present : 0.0;
  return m;
}

nlohmann::json Metrics::to_json() const {
  nlohmann::json j;
  j["total"] = total;
  j["accuracy"] = accuracy;
  j["macro_f1"] = macro_f1;
  j["balanced_accuracy"] = balanced_accuracy;
  nlohmann::json pc = nlohmann::json::object();
  for (const auto& k : per_class)
    pc[k.name] = {{"precision", k.precision},
                  {"recall", k.recall},
                  {"f1", k.f1},
                  {"support", k.support},
                  {"predicted", k.predicted}};
  j["per_class"] = pc;
  j["confusion"] = confusion;
  j["confusion_rows"] = row_names;
  j["confusion_cols"] = col_names;
  return j;
}

Confusion fold_confusion(const Confusion& cm, const std::vector<int>& c2g, int n_groups) {
  if (c2g.size() != cm.size()) throw std::invalid_argument("fold_confusion: class_to_group has the wrong size");
  Confusion g(n_groups, std::vector<int64_t>(n_groups, 0));
  for (size_t t = 0; t < cm.size(); ++t)
    for (size_t p = 0; p < cm[t].size(); ++p) {
      if (p >= c2g.size()) throw std::invalid_argument("fold_confusion: matrix is not square");
      g.at(c2g[t]).at(c2g[p]) += cm[t][p];
    }
  return g;
}

double group_accuracy(const Confusion& cm, const std::vector<int>& c2g) {
  int64_t total = 0, ok = 0;
  for (size_t t = 0; t < cm.size(); ++t)
    for (size_t p = 0; p < cm[t].size(); ++p) {
      total += cm[t][p];
      if (p < c2g.size() && c2g.at(t) == c2g[p]) ok += cm[t][p];
    }
  return total ? double(ok) / double(total) : 0.0;
}

nlohmann::json recall_by(const std::vector<int>& truth, const std::vector<int>& pred,
                         const std::vector<std::string>& sample_group, const std::vector<std::string>& names) {
  if (truth.size() != pred.size() || truth.size() != sample_group.size())
    throw std::invalid_argument("recall_by: sizes differ");
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> acc;  // group -> class -> (tp, n)
  for (size_t i = 0; i < truth.size(); ++i) {
    auto& v = acc[sample_group[i]];
    v.resize(names.size());
    v.at(truth[i]).second++;
    if (pred[i] == truth[i]) v[truth[i]].first++;
  }
  nlohmann::json j = nlohmann::json::object();
  for (auto& [g, v] : acc) {
    nlohmann::json row = nlohmann::json::object();
    int64_t tp = 0, n = 0;
    for (size_t c = 0; c < v.size(); ++c)
      if (v[c].second) {
        row[names[c]] = {{"recall", double(v[c].first) / double(v[c].second)}, {"support", v[c].second}};
        tp += v[c].first;
        n += v[c].second;
      }
    j[g] = {{"accuracy", n ? double(tp) / double(n) : 0.0}, {"support", n}, {"per_class", row}};
  }
  return j;
}

std::vector<int> argmax_rows(const float* logits, size_t n, int k) {
  std::vector<int> out(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const float* r = logits + i * k;
    int best = 0;
    for (int c = 1; c < k; ++c)
      if (r[c] > r[best]) best = c;
    out[i] = best;
  }
  return out;
}

std::string percent(double fraction) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%%", 100 * fraction);
  return b;
}

}  // namespace vit
