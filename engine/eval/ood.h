// "Unlike the training data": an out-of-distribution score per image, and the threshold that
// flags it.
//
// The score is the free energy of the logits, E(x) = -log sum_c exp(z_c) (Liu et al., "Energy-
// based out-of-distribution detection", NeurIPS 2020): low where the model is sure of some class,
// high where no class fits. It needs nothing but the logits, so every backend and every caller
// of the model gets it, and it needs no statistics beyond one threshold. The threshold is the
// (1 - fpr) quantile of the scores of in-domain validation images, so that a chosen share of
// them (the false-alarm rate, 5% by default) is flagged; `vitengine ood-ref` stores it in the
// model (meta.extra "ood").
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

// What a model stores (meta.extra["ood"]): {"score": "energy", "threshold", "fpr", ...}.
struct OodReference {
  double threshold = 0;
  double fpr = 0.05;
  bool present = false;
  static OodReference from_meta(const nlohmann::json& extra);  // absent: present = false
  bool flags(double score) const { return present && score > threshold; }
};

// The folder-level rule of eval and differential: a folder "looks unlike the training data" when
// the share of its images flagged is over max(0.25, 5 * fpr): five times what in-domain images
// give, so that one odd image in twenty does not raise it.
bool folder_looks_unlike(const OodReference& ref, double flagged_share);
// The sentence eval and differential print for such a folder.
std::string folder_warning(double flagged_share, const OodReference& ref);

}  // namespace vit
