#include "engine/serve/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace vit {
using Clock = std::chrono::steady_clock;

const std::vector<double>& ServeMetrics::latency_buckets_s() {
  // From a health probe (well under 5 ms) to a batch of 32 cells on a busy CPU (seconds).
  static const std::vector<double> b = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return b;
}

void ServeMetrics::record(const std::string& method, const std::string& route, int status, double ms) {
  std::lock_guard<std::mutex> lk(mu_);
  ++requests_;
  if (status >= 400 && status < 500) ++err4xx_;
  if (status >= 500) ++err5xx_;
  Route& r = routes_[{method, route}];
  ++r.by_status[status];
  if (ms < 0) return;
  const auto& le = latency_buckets_s();
  if (r.buckets.empty()) r.buckets.assign(le.size() + 1, 0);
  const double s = ms / 1000;
  ++r.buckets[size_t(std::lower_bound(le.begin(), le.end(), s) - le.begin())];
  r.sum_s += s;
  ++r.timed;
  if (r.recent_ms.size() < kWindow)
    r.recent_ms.push_back(ms);
  else
    r.recent_ms[r.next] = ms;
  r.next = (r.next + 1) % kWindow;
}

void ServeMetrics::add_images(size_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  images_ += n;
  recent_images_.emplace_back(Clock::now(), n);
}

double ServeMetrics::images_per_second_locked() {
  const auto now = Clock::now();
  const auto cut = now - std::chrono::seconds(60);
  recent_images_.erase(recent_images_.begin(), std::find_if(recent_images_.begin(), recent_images_.end(),
                                                            [&](const auto& e) { return e.first >= cut; }));
  size_t n = 0;
  for (const auto& e : recent_images_) n += e.second;
  const double span = std::min(60.0, std::chrono::duration<double>(now - start_).count());
  return span > 0 ? double(n) / span : 0.0;
}

namespace {
nlohmann::json percentiles(std::vector<double> s) {
  std::sort(s.begin(), s.end());
  auto q = [&](double p) -> nlohmann::json {
    if (s.empty()) return nullptr;
    const size_t i = size_t(std::ceil(p * s.size())) - 1;  // nearest-rank percentile
    return std::round(s[std::min(i, s.size() - 1)] * 100) / 100;
  };
  return {{"window", s.size()}, {"p50", q(0.50)}, {"p90", q(0.90)}, {"p99", q(0.99)}};
}
}  // namespace

nlohmann::json ServeMetrics::to_json() {
  std::lock_guard<std::mutex> lk(mu_);
  nlohmann::json by_route = nlohmann::json::object(), latency = nlohmann::json::object();
  for (const auto& [key, r] : routes_) {
    const std::string name = key.first + " " + key.second;
    uint64_t n = 0;
    for (const auto& [st, c] : r.by_status) n += c;
    by_route[name] = n;
    if (r.timed) latency[name] = percentiles(r.recent_ms);
  }
  return {{"requests_total", requests_},
          {"requests_by_route", by_route},
          {"errors_4xx", err4xx_},
          {"errors_5xx", err5xx_},
          {"latency_ms_by_route", latency},
          {"images_total", images_},
          {"images_per_second_1m", images_per_second_locked()},
          {"uptime_s", std::chrono::duration<double>(Clock::now() - start_).count()}};
}

std::string prometheus_label(const std::string& v) {
  std::string o;
  for (char c : v) o += c == '\\' ? "\\\\" : c == '"' ? "\\\"" : c == '\n' ? "\\n" : std::string(1, c);
  return o;
}

std::string ServeMetrics::to_prometheus() {
  std::lock_guard<std::mutex> lk(mu_);
  std::ostringstream o;
  auto labels = [](const std::pair<std::string, std::string>& k) {
    return "method=\"" + prometheus_label(k.first) + "\",route=\"" + prometheus_label(k.second) + "\"";
  };
  o << "# HELP vitengine_http_requests_total HTTP requests answered, by method, route and status.\n"
       "# TYPE vitengine_http_requests_total counter\n";
  for (const auto& [key, r] : routes_)
    for (const auto& [st, c] : r.by_status)
      o << "vitengine_http_requests_total{" << labels(key) << ",status=\"" << st << "\"} " << c << "\n";
  o << "# HELP vitengine_http_request_duration_seconds Time from the request's arrival to its answer.\n"
       "# TYPE vitengine_http_request_duration_seconds histogram\n";
  const auto& le = latency_buckets_s();
  for (const auto& [key, r] : routes_) {
    if (!r.timed) continue;
    uint64_t cum = 0;
    for (size_t i = 0; i <= le.size(); ++i) {
      cum += r.buckets[i];
      char b[32];
      std::snprintf(b, sizeof b, "%g", i < le.size() ? le[i] : 0.0);
      o << "vitengine_http_request_duration_seconds_bucket{" << labels(key) << ",le=\""
        << (i < le.size() ? std::string(b) : "+Inf") << "\"} " << cum << "\n";
    }
    o << "vitengine_http_request_duration_seconds_sum{" << labels(key) << "} " << r.sum_s << "\n";
    o << "vitengine_http_request_duration_seconds_count{" << labels(key) << "} " << r.timed << "\n";
  }
  o << "# HELP vitengine_images_predicted_total Images the model classified for /v1/predict and /v1/explain.\n"
       "# TYPE vitengine_images_predicted_total counter\n"
       "vitengine_images_predicted_total "
    << images_ << "\n";
  o << "# HELP vitengine_images_per_second Images classified per second over the last minute.\n"
       "# TYPE vitengine_images_per_second gauge\n"
       "vitengine_images_per_second "
    << images_per_second_locked() << "\n";
  o << "# HELP vitengine_uptime_seconds Seconds since the service started.\n"
       "# TYPE vitengine_uptime_seconds gauge\n"
       "vitengine_uptime_seconds "
    << std::chrono::duration<double>(Clock::now() - start_).count() << "\n";
  return o.str();
}

}  // namespace vit
