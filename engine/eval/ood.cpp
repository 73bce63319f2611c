// Out-of-distribution scores, threshold and AUROC (engine/eval/ood.h).
#include "engine/eval/ood.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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

// ---- Mahalanobis ----

namespace {
// Packed lower triangle: row i holds columns 0..i.
size_t tri(size_t i, size_t j) { return i * (i + 1) / 2 + j; }

// The lower-triangular Cholesky factor L of a symmetric (d, d) matrix A = L L^T, then its inverse
// by forward substitution; both row-major (d, d). Throws when A is not positive definite.
std::vector<double> inverse_cholesky(const std::vector<double>& A, int d) {
  std::vector<double> L(size_t(d) * d, 0.0), W(size_t(d) * d, 0.0);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j <= i; ++j) {
      double s = A[size_t(i) * d + j];
      for (int k = 0; k < j; ++k) s -= L[size_t(i) * d + k] * L[size_t(j) * d + k];
      if (i == j) {
        if (!(s > 0)) throw std::runtime_error("the features' covariance is singular (every image alike?)");
        L[size_t(i) * d + i] = std::sqrt(s);
      } else {
        L[size_t(i) * d + j] = s / L[size_t(j) * d + j];
      }
    }
  for (int c = 0; c < d; ++c)  // column c of L^-1: solve L w = e_c
    for (int i = c; i < d; ++i) {
      double s = i == c ? 1.0 : 0.0;
      for (int k = c; k < i; ++k) s -= L[size_t(i) * d + k] * W[size_t(k) * d + c];
      W[size_t(i) * d + c] = s / L[size_t(i) * d + i];
    }
  return W;
}

// W x for lower-triangular W (d, d) row-major.
void lower_times(const std::vector<double>& W, const double* x, int d, double* out) {
  for (int i = 0; i < d; ++i) {
    double s = 0;
    for (int k = 0; k <= i; ++k) s += W[size_t(i) * d + k] * x[k];
    out[i] = s;
  }
}

// A float's worth of digits: the JSON stays a third of the size of full doubles.
double round7(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.7g", v);
  return std::strtod(b, nullptr);
}

void derive_white_means(MahalanobisStats& m) {
  const int d = m.dim;
  m.white_means.assign(m.means.size(), 0.0);
  for (size_t c = 0; c < m.classes.size(); ++c)
    lower_times(m.whiten, m.means.data() + c * d, d, m.white_means.data() + c * d);
}
}  // namespace

MahalanobisStats fit_mahalanobis(const float* f, const int* labels, size_t n, int d, int C, double shrinkage) {
  if (n < 2 || d < 1 || C < 1) throw std::invalid_argument("fit_mahalanobis: needs at least 2 images");
  if (!(shrinkage >= 0 && shrinkage < 1)) throw std::invalid_argument("fit_mahalanobis: shrinkage must lie in [0, 1)");
  std::vector<double> sum(size_t(C) * d, 0.0);
  std::vector<size_t> count(C, 0);
  for (size_t i = 0; i < n; ++i) {
    if (labels[i] < 0 || labels[i] >= C)
      throw std::invalid_argument("fit_mahalanobis: label " + std::to_string(labels[i]) + " of image " +
                                  std::to_string(i) + " is outside [0, " + std::to_string(C) + ")");
    ++count[labels[i]];
    for (int k = 0; k < d; ++k) sum[size_t(labels[i]) * d + k] += f[i * d + k];
  }
  MahalanobisStats m;
  m.dim = d;
  m.shrinkage = shrinkage;
  std::vector<int> row_of(C, -1);
  for (int c = 0; c < C; ++c) {
    if (!count[c]) continue;
    row_of[c] = int(m.classes.size());
    m.classes.push_back(c);
    for (int k = 0; k < d; ++k) m.means.push_back(sum[size_t(c) * d + k] / double(count[c]));
  }
  std::vector<double> S(size_t(d) * d, 0.0), x(d);
  for (size_t i = 0; i < n; ++i) {
    const double* mu = m.means.data() + size_t(row_of[labels[i]]) * d;
    for (int k = 0; k < d; ++k) x[k] = f[i * d + k] - mu[k];
    for (int a = 0; a < d; ++a)
      for (int b = 0; b <= a; ++b) S[size_t(a) * d + b] += x[a] * x[b];
  }
  double trace = 0;
  for (int a = 0; a < d; ++a) trace += S[size_t(a) * d + a] / double(n);
  for (int a = 0; a < d; ++a)
    for (int b = 0; b <= a; ++b) {
      double v = (1 - shrinkage) * S[size_t(a) * d + b] / double(n) + (a == b ? shrinkage * trace / d : 0.0);
      S[size_t(a) * d + b] = S[size_t(b) * d + a] = v;
    }
  m.whiten = inverse_cholesky(S, d);
  // What is stored is what is scored: round now, so a loaded model scores as the fitted one.
  for (auto& v : m.means) v = round7(v);
  for (auto& v : m.whiten) v = round7(v);
  derive_white_means(m);
  return m;
}

double MahalanobisStats::score(const float* features, int d) const {
  if (d != dim || classes.empty())
    throw std::invalid_argument("Mahalanobis score: features of width " + std::to_string(d) + ", statistics of " +
                                std::to_string(dim));
  std::vector<double> x(features, features + d), wx(d);
  lower_times(whiten, x.data(), d, wx.data());
  double best = INFINITY;
  for (size_t c = 0; c < classes.size(); ++c) {
    double s = 0;
    for (int k = 0; k < d; ++k) {
      const double e = wx[k] - white_means[c * d + k];
      s += e * e;
    }
    best = std::min(best, s);
  }
  return best;
}

nlohmann::json MahalanobisStats::to_json() const {
  std::vector<double> packed;
  packed.reserve(size_t(dim) * (dim + 1) / 2);
  for (int i = 0; i < dim; ++i)
    for (int j = 0; j <= i; ++j) packed.push_back(whiten[size_t(i) * dim + j]);
  nlohmann::json j = {{"dim", dim},
          {"classes", classes},
          {"shrinkage", shrinkage},
          {"means", means},
          {"whiten_lower", packed},
          {"note", "means: (classes, dim) row-major; whiten_lower: the inverse Cholesky factor of the shared "
                   "covariance, lower triangle packed row by row"}};
  if (!labels.empty()) j["labels"] = labels;
  return j;
}

MahalanobisStats MahalanobisStats::from_json(const nlohmann::json& j) {
  auto bad = [&](const std::string& why) {
    return std::runtime_error("the model's Mahalanobis statistics (meta \"ood\".\"mahalanobis\") are malformed: " +
                              why);
  };
  MahalanobisStats m;
  try {
    if (!j.is_object()) throw bad("not an object");
    m.dim = j.at("dim").get<int>();
    m.classes = j.at("classes").get<std::vector<int>>();
    m.means = j.at("means").get<std::vector<double>>();
    m.shrinkage = j.value("shrinkage", 0.0);
    if (j.contains("labels")) m.labels = j["labels"].get<std::vector<std::string>>();
    const auto packed = j.at("whiten_lower").get<std::vector<double>>();
    if (m.dim < 1 || m.classes.empty()) throw bad("no width or no classes");
    if (m.means.size() != m.classes.size() * size_t(m.dim))
      throw bad(std::to_string(m.means.size()) + " means for " + std::to_string(m.classes.size()) +
                " classes of width " + std::to_string(m.dim));
    if (packed.size() != size_t(m.dim) * (m.dim + 1) / 2)
      throw bad(std::to_string(packed.size()) + " whitening entries for width " + std::to_string(m.dim));
    m.whiten.assign(size_t(m.dim) * m.dim, 0.0);
    for (int i = 0; i < m.dim; ++i)
      for (int k = 0; k <= i; ++k) m.whiten[size_t(i) * m.dim + k] = packed[tri(i, k)];
  } catch (const nlohmann::json::exception& e) {
    throw bad(e.what());
  }
  derive_white_means(m);
  return m;
}

// ---- the stored reference ----

double OodReference::score(const float* logits, int C, const float* features, int dim) const {
  if (kind == "mahalanobis") {
    if (!features) throw std::logic_error("the Mahalanobis score needs the class-token features");
    return maha.score(features, dim);
  }
  return energy_score(logits, C);
}

void OodReference::check_width(int dim, const std::string& model) const {
  if (needs_features() && maha.dim != dim)
    throw std::runtime_error("'" + model + "' stores Mahalanobis statistics of " + std::to_string(maha.dim) +
                             " features, but its model has " + std::to_string(dim) +
                             ": refit them with `vitengine ood-ref`");
}

OodReference OodReference::from_meta(const nlohmann::json& extra) {
  OodReference r;
  if (!extra.is_object() || !extra.contains("ood")) return r;
  const auto& j = extra["ood"];
  const std::string kind = j.is_object() ? j.value("score", "") : "";
  if ((kind != "energy" && kind != "mahalanobis") || !j.contains("threshold") || !j["threshold"].is_number() ||
      (kind == "mahalanobis" && !j.contains("mahalanobis")))
    throw std::runtime_error("the model's out-of-distribution reference (meta \"ood\") is malformed: " +
                             j.dump().substr(0, 300));
  r.kind = kind;
  r.threshold = j["threshold"].get<double>();
  r.fpr = j.value("fpr", 0.05);
  if (kind == "mahalanobis") r.maha = MahalanobisStats::from_json(j["mahalanobis"]);
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
