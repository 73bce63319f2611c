// The service's own counters: requests by route, errors, and latency percentiles over the last
// kWindow requests (GET /metrics).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vit {

class ServeMetrics {
 public:
  static constexpr size_t kWindow = 10000;
  // ms < 0: the request's start was not seen (counted, no latency).
  void record(const std::string& route, int status, double ms);
  nlohmann::json to_json();

 private:
  std::mutex mu_;
  uint64_t requests_ = 0, err4xx_ = 0, err5xx_ = 0;
  std::map<std::string, uint64_t> by_route_;
  std::vector<double> lat_ms_;  // a ring of the last kWindow latencies
  size_t next_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace vit
