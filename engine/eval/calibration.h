// Calibration: softmax with temperature, expected calibration error (ECE), the
// reliability diagram's bins, and temperature scaling (Guo et al. 2017, "On
// Calibration of Modern Neural Networks"): one scalar T > 0 that divides the
// logits, fitted by minimising the negative log-likelihood on the validation
// split. T does not change the argmax, so accuracy is unchanged.
#pragma once
#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

namespace vit {

// Row-wise softmax of (n, k) logits / T, computed stably in double.
std::vector<double> softmax_rows(const float* logits, size_t n, int k, double temperature = 1.0);
// Mean negative log-likelihood of labels under softmax(logits / T).
double mean_nll(const float* logits, const int* labels, size_t n, int k, double temperature = 1.0);

struct ReliabilityBin {
  double lo = 0, hi = 0;  // confidence range (lo, hi]; the first bin also holds 0
  int64_t count = 0;
  double mean_confidence = 0;  // of the samples in the bin (0 when empty)
  double accuracy = 0;         // fraction of them predicted correctly (0 when empty)
};

struct CalibrationReport {
  double ece = 0;  // sum over bins of (count / n) * |accuracy - mean_confidence|
  double mce = 0;  // max over non-empty bins of |accuracy - mean_confidence|
  std::vector<ReliabilityBin> bins;
  nlohmann::json to_json() const;
};

// Equal-width bins over the top-class confidence. confidence[i] = max probability,
// correct[i] = argmax == label. Confidence c goes to bin min(ceil(c*B)-1, B-1), clamped at 0.
CalibrationReport calibration(const std::vector<double>& confidence, const std::vector<bool>& correct, int bins = 15);
// The same from logits (n, k), labels and a temperature.
CalibrationReport calibration(const float* logits, const int* labels, size_t n, int k, double temperature = 1.0,
                              int bins = 15);

// The T in [kMinTemperature, kMaxTemperature] that minimises mean_nll (golden-section search on
// log T, the NLL is unimodal in T for fixed logits). Throws std::invalid_argument if n == 0.
constexpr double kMinTemperature = 1.0 / 20, kMaxTemperature = 20;
double fit_temperature(const float* logits, const int* labels, size_t n, int k);
// The same search for any NLL of T (adapt's: the probability of each cell's group of classes).
double fit_temperature(const std::function<double(double T)>& nll);

}  // namespace vit
