#include "engine/serve/metrics.h"

#include <algorithm>
#include <cmath>

namespace vit {

void ServeMetrics::record(const std::string& route, int status, double ms) {
  std::lock_guard<std::mutex> lk(mu_);
  ++requests_;
  ++by_route_[route];
  if (status >= 400 && status < 500) ++err4xx_;
  if (status >= 500) ++err5xx_;
  if (ms < 0) return;
  if (lat_ms_.size() < kWindow)
    lat_ms_.push_back(ms);
  else
    lat_ms_[next_] = ms;
  next_ = (next_ + 1) % kWindow;
}

nlohmann::json ServeMetrics::to_json() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<double> s = lat_ms_;
  std::sort(s.begin(), s.end());
  auto q = [&](double p) -> nlohmann::json {
    if (s.empty()) return nullptr;
    const size_t i = size_t(std::ceil(p * s.size())) - 1;  // nearest-rank percentile
    return std::round(s[std::min(i, s.size() - 1)] * 100) / 100;
  };
  return {{"requests_total", requests_},
          {"requests_by_route", by_route_},
          {"errors_4xx", err4xx_},
          {"errors_5xx", err5xx_},
          {"latency_ms", {{"window", s.size()}, {"p50", q(0.50)}, {"p90", q(0.90)}, {"p99", q(0.99)}}},
          {"uptime_s", std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count()}};
}

}  // namespace vit
