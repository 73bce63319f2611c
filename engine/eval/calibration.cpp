#include "engine/eval/calibration.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace vit {

std::vector<double> softmax_rows(const float* logits, size_t n, int k, double T) {
  if (!(T > 0)) throw std::invalid_argument("softmax_rows: temperature must be > 0");
  std::vector<double> p(n * size_t(k));
  for (size_t i = 0; i < n; ++i) {
    const float* z = logits + i * k;
    double mx = z[0];
    for (int c = 1; c < k; ++c) mx = std::max(mx, double(z[c]));
    double s = 0;
    for (int c = 0; c < k; ++c) s += (p[i * k + c] = std::exp((double(z[c]) - mx) / T));
    for (int c = 0; c < k; ++c) p[i * k + c] /= s;
  }
  return p;
}

double mean_nll(const float* logits, const int* labels, size_t n, int k, double T) {
  if (n == 0) return 0;
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    const float* z = logits + i * k;
    double mx = z[0];
    for (int c = 1; c < k; ++c) mx = std::max(mx, double(z[c]));
    double s = 0;
    for (int c = 0; c < k; ++c) s += std::exp((double(z[c]) - mx) / T);
    // -log softmax = log sum exp - z_y / T (both shifted by max / T)
    total += std::log(s) - (double(z[labels[i]]) - mx) / T;
  }
  return total / double(n);
}

CalibrationReport calibration(const std::vector<double>& conf, const std::vector<bool>& correct, int B) {
  if (conf.size() != correct.size()) throw std::invalid_argument("calibration: sizes differ");
  if (B < 1) throw std::invalid_argument("calibration: bins must be >= 1");
  CalibrationReport r;
  r.bins.resize(B);
  std::vector<double> csum(B, 0), asum(B, 0);
  for (int b = 0; b < B; ++b) {
    r.bins[b].lo = double(b) / B;
    r.bins[b].hi = double(b + 1) / B;
  }
  for (size_t i = 0; i < conf.size(); ++i) {
    int b = int(std::ceil(conf[i] * B)) - 1;
    b = std::clamp(b, 0, B - 1);
    r.bins[b].count++;
    csum[b] += conf[i];
    asum[b] += correct[i] ? 1.0 : 0.0;
  }
  const double n = double(conf.size());
  for (int b = 0; b < B; ++b) {
    auto& bin = r.bins[b];
    if (!bin.count) continue;
    bin.mean_confidence = csum[b] / bin.count;
    bin.accuracy = asum[b] / bin.count;
    double gap = std::fabs(bin.accuracy - bin.mean_confidence);
    r.ece += bin.count / n * gap;
    r.mce = std::max(r.mce, gap);
  }
  return r;
}

CalibrationReport calibration(const float* logits, const int* labels, size_t n, int k, double T, int bins) {
  auto p = softmax_rows(logits, n, k, T);
  std::vector<double> conf(n);
  std::vector<bool> ok(n);
  for (size_t i = 0; i < n; ++i) {
    int best = 0;
    for (int c = 1; c < k; ++c)
      if (logits[i * k + c] > logits[i * k + best]) best = c;
    conf[i] = p[i * k + best];
    ok[i] = best == labels[i];
  }
  return calibration(conf, ok, bins);
}

nlohmann::json CalibrationReport::to_json() const {
  nlohmann::json b = nlohmann::json::array();
  for (const auto& x : bins)
    b.push_back(
        {{"lo", x.lo}, {"hi", x.hi}, {"count", x.count}, {"confidence", x.mean_confidence}, {"accuracy", x.accuracy}});
  return {{"ece", ece}, {"mce", mce}, {"bins", b}};
}

double fit_temperature(const std::function<double(double)>& nll) {
  auto f = [&](double logT) { return nll(std::exp(logT)); };
  // Golden-section search on log T in [log 1/20, log 20]; 80 iterations shrink the
  // bracket by 0.618^80 ~ 2e-17, far below float resolution.
  const double g = (std::sqrt(5.0) - 1) / 2;
  double a = std::log(kMinTemperature), b = std::log(kMaxTemperature);
  double c = b - g * (b - a), d = a + g * (b - a);
  double fc = f(c), fd = f(d);
  for (int it = 0; it < 80; ++it) {
    if (fc < fd) {
      b = d;
      d = c;
      fd = fc;
      c = b - g * (b - a);
      fc = f(c);
    } else {
      a = c;
      c = d;
      fc = fd;
      d = a + g * (b - a);
      fd = f(d);
    }
  }
  return std::exp((a + b) / 2);
}

double fit_temperature(const float* logits, const int* labels, size_t n, int k) {
  if (n == 0) throw std::invalid_argument("fit_temperature: no samples");
  return fit_temperature([&](double T) { return mean_nll(logits, labels, n, k, T); });
}

}  // namespace vit
