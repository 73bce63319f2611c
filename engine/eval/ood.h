// "Unlike the training data": an out-of-distribution score per image, and the threshold that
// flags it. Two scores, both higher for less familiar images:
//
// - energy: the free energy of the logits, E(x) = -log sum_c exp(z_c) (Liu et al., "Energy-based
//   out-of-distribution detection", NeurIPS 2020): low where the model is sure of some class,
//   high where no class fits. It needs nothing but the logits and one threshold.
// - mahalanobis: the squared Mahalanobis distance of the class-token features (what the head
//   reads) to the nearest class mean, under one covariance shared by the classes (Lee et al., "A
//   simple unified framework for detecting out-of-distribution samples", NeurIPS 2018), fitted
//   on the training split. It sees the whole feature vector, not only the 14 directions the head
//   projects it on: an image of another lab can land far from every class yet still give one
//   large logit (measured in docs/robustness.md: AUROC 0.854 with energy).
//
// The threshold is the (1 - fpr) quantile of the scores of in-domain validation images, so that a
// chosen share of them (the false-alarm rate, 5% by default) is flagged; `vitengine ood-ref`
// stores it, and the Mahalanobis statistics, in the model (meta.extra "ood").
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vit {

// E = -log sum exp(z) over C logits (max subtracted; finite for finite logits).
double energy_score(const float* logits, int C);

// The threshold that flags a share `fpr` of in-domain scores: their (1 - fpr) quantile (linear
// interpolation). Scores above it are flagged. Throws on no scores or fpr outside (0, 1).
double ood_threshold(std::vector<double> in_domain, double fpr);

// Area under the ROC curve of telling `out` from `in` by a score that is higher for `out`
// (ties count one half): the probability that a random out-score exceeds a random in-score.
double auroc(const std::vector<double>& in, const std::vector<double>& out);

// The Mahalanobis statistics of a training split's features: per class the mean, and a whitening
// W = L^-1 of the shared covariance S = L L^T, so that (f - m)^T S^-1 (f - m) = |W f - W m|^2.
struct MahalanobisStats {
  int dim = 0;
  std::vector<int> classes;         // the groups with training images (others are never nearest):
                                    // the model's classes, or indices into `labels`
  std::vector<std::string> labels;  // the groups' names when they are not the model's classes
  std::vector<double> means;        // (classes.size(), dim)
  std::vector<double> whiten;       // (dim, dim) lower triangular, row-major
  std::vector<double> white_means;  // W m per class (derived, not stored)
  double shrinkage = 0;             // of the covariance towards its mean variance (below)

  // min over classes of |W f - W m_c|^2, in double. Throws std::invalid_argument on a size mismatch.
  double score(const float* features, int dim) const;
  nlohmann::json to_json() const;  // numbers rounded to 7 significant digits (a float's)
  static MahalanobisStats from_json(const nlohmann::json& j);  // throws std::runtime_error on a malformed one
};

// Fits the statistics on n feature rows (n, dim) with labels in [0, num_classes): class means, the
// pooled within-class covariance (divided by n), shrunk as (1 - s) S + s (tr S / dim) I so that it
// stays invertible when the images are few against the width, and its Cholesky factor. Throws
// std::invalid_argument on a label out of range, or fewer than 2 images, and std::runtime_error
// when the covariance is singular even so (e.g. every feature equal).
MahalanobisStats fit_mahalanobis(const float* features, const int* labels, size_t n, int dim, int num_classes,
                                 double shrinkage = 1e-3);

// What a model stores (meta.extra["ood"]): {"score": "energy" | "mahalanobis", "threshold", "fpr",
// "mahalanobis": the statistics (for that score), ...}. Without one, predictions still carry the
// energy score, and nothing is flagged.
struct OodReference {
  std::string kind = "energy";  // "energy" | "mahalanobis"
  double threshold = 0;
  double fpr = 0.05;
  bool present = false;
  MahalanobisStats maha;  // kind "mahalanobis"
  static OodReference from_meta(const nlohmann::json& extra);  // absent: present = false
  bool needs_features() const { return kind == "mahalanobis"; }
  // Throws std::runtime_error naming `model` when Mahalanobis statistics are of another width
  // than the model's features (another model's, pasted in): when a model loads, not per image.
  void check_width(int dim, const std::string& model) const;
  // This reference's score of one image: its (mean) logits, and for "mahalanobis" its (mean)
  // class-token features (may be null otherwise).
  double score(const float* logits, int classes, const float* features, int dim) const;
  bool flags(double score) const { return present && score > threshold; }
};

// The folder-level rule of eval and differential: a folder "looks unlike the training data" when
// the share of its images flagged is over max(0.25, 5 * fpr): five times what in-domain images
// give, so that one odd image in twenty does not raise it.
bool folder_looks_unlike(const OodReference& ref, double flagged_share);
// The sentence eval and differential print for such a folder.
std::string folder_warning(double flagged_share, const OodReference& ref);

}  // namespace vit
