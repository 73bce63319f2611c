// The service's own counters (GET /v1/stats as JSON, GET /metrics as Prometheus text): requests
// by route and status, a latency histogram and recent percentiles per route (a flood of health
// probes does not hide a slow predict), and the images predicted.
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
  static constexpr size_t kWindow = 10000;  // latencies kept per route for the percentiles
  // The histogram's upper bounds in seconds (Prometheus' "le"), +Inf implied.
  static const std::vector<double>& latency_buckets_s();

  // One finished request on `route` (a known path, or "other"); ms < 0: its start was not seen
  // (counted, no latency).
  void record(const std::string& method, const std::string& route, int status, double ms);
  // Images a prediction answered (images per second over the last minute).
  void add_images(size_t n);

  nlohmann::json to_json();
  // The counters as Prometheus text exposition lines (format 0.0.4), names prefixed vitengine_.
  std::string to_prometheus();

 private:
  struct Route {
    std::map<int, uint64_t> by_status;
    std::vector<uint64_t> buckets;  // cumulative counts come out at exposition; here one per bucket
    double sum_s = 0;
    uint64_t timed = 0;
    std::vector<double> recent_ms;  // a ring of the last kWindow latencies
    size_t next = 0;
  };
  double images_per_second_locked();

  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Route> routes_;  // (method, route)
  uint64_t requests_ = 0, err4xx_ = 0, err5xx_ = 0, images_ = 0;
  std::vector<std::pair<std::chrono::steady_clock::time_point, size_t>> recent_images_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// A Prometheus label value with \, " and newline escaped.
std::string prometheus_label(const std::string& v);

}  // namespace vit
