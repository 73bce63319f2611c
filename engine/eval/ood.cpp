// Energy-based out-of-distribution score (engine/eval/ood.h).
#include "engine/eval/ood.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace vit {

double energy_score(const float* logits, int C) {
  double m = logits[0];
  for (int c = 1; c < C; ++c) m = std::max(m, double(logits[c]));
  double s = 0;
  for (int c = 0; c < C; ++c) s += std::exp(double(logits[c]) - m);
  return -(m + std::log(s));
}

double ood_threshold(std::vector<double> in, double fpr) {
  if (in.empty()) throw std::runtime_error("ood_threshold: no in-domain scores");
  if (!(fpr > 0 && fpr < 1)) throw std::runtime_error("the false-alarm rate must lie in (0, 1)");
  std::sort(in.begin(), in.end());
  const double pos = (1 - fpr) * double(in.size() - 1);
  const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, in.size() - 1);
  return in[lo] + (pos - double(lo)) * (in[hi] - in[lo]);
}

double auroc(const std::vector<double>& in, const std::vector<double>& out) {
  if (in.empty() || out.empty()) throw std::runtime_error("auroc: both sets need scores");
  // Rank-sum (Mann-Whitney U) with mid-ranks for ties: O(n log n).
  std::vector<std::pair<double, int>> all;
  for (double v : in) all.push_back({v, 0});
  for (double v : out) all.push_back({v, 1});
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  double rank_sum_out = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double mid = 0.5 * double(i + 1 + j);  // mean of ranks i+1 .. j
    for (size_t k = i; k < j; ++k)
      if (all[k].second == 1) rank_sum_out += mid;
    i = j;
  }
  const double no = double(out.size()), ni = double(in.size());
  return (rank_sum_out - no * (no + 1) / 2) / (no * ni);
}

OodReference OodReference::from_meta(const nlohmann::json& extra) {
  OodReference r;
  if (!extra.is_object() || !extra.contains("ood")) return r;
  const auto& j = extra["ood"];
  if (!j.is_object() || j.value("score", "") != "energy" || !j.contains("threshold") || !j["threshold"].is_number())
    throw std::runtime_error("the model's out-of-distribution reference (meta \"ood\") is malformed: " + j.dump());
  r.threshold = j["threshold"].get<double>();
  r.fpr = j.value("fpr", 0.05);
  r.present = true;
  return r;
}

bool folder_looks_unlike(const OodReference& ref, double flagged_share) {
  return ref.present && flagged_share > std::max(0.25, 5 * ref.fpr);
}

std::string folder_warning(double flagged_share, const OodReference& ref) {
  char b[320];
  std::snprintf(b, sizeof b,
                "this folder looks unlike the training data (%.0f%% of its images are flagged; %.0f%% of in-domain "
                "images are); expect lower accuracy; see `vitengine adapt`",
                100 * flagged_share, 100 * ref.fpr);
  return b;
}

}  // namespace vit
