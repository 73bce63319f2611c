// The HTTP service; see server.h. Request threads validate and decode uploads, then
// wait on the Batcher, which runs the model on its own thread.
#include "engine/serve/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "engine/eval/overlay.h"
#include "engine/serve/batcher.h"
#include "engine/serve/metrics.h"
#include "engine/serve/upload.h"

namespace vit {
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

void send_error(httplib::Response& res, int status, const std::string& code, const std::string& msg) {
  res.status = status;
  if (status == 503) res.set_header("Retry-After", "1");  // overloaded or draining: worth retrying soon
  res.set_content(json{{"error", {{"code", code}, {"message", msg}}}}.dump(), "application/json");
}

// What the logger (run after the answer is written, on the same worker thread) needs to know
// of the request the pre-routing handler started.
thread_local Clock::time_point t_request_start;
thread_local bool t_started = false;
thread_local std::string t_request_id;
thread_local size_t t_images = 0;
thread_local std::optional<HttpError> t_deferred;  // a refusal decided before the body was read

// httplib 0.11 reads a request's body only for these methods (its expect_content), and leaves the
// body of a request it fails to read (a malformed multipart, an unknown Content-Encoding) half
// read. It also answers a request line or headers it cannot parse (a method it does not know,
// such as QUERY; a URI over 8 KiB; a bad Range) at once, before reading the rest of the request.
// Either way the rest stays in the socket, where httplib parses it as the next request on the
// keep-alive connection: the client then reads answers meant for garbage (what schemathesis
// caught with TRACE and QUERY requests carrying a body), and a request hidden in a body would be
// served (request smuggling behind a proxy). Such a connection is poisoned: its answer says
// Connection: close, and anything more that arrives on it is refused.
bool httplib_reads_body(const std::string& method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE" || method == "PRI";
}

// The Content-Length a request declares; 0 without one.
uint64_t declared_length(const httplib::Request& req) {
  return std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10);
}

bool declares_body(const httplib::Request& req) {
  return req.has_header("Transfer-Encoding") || declared_length(req) > 0;
}

void close_after_answer(httplib::Response& res) {
  if (res.get_header_value("Connection") != "close") res.set_header("Connection", "close");
}

// Whether the connection this worker thread serves is poisoned. httplib serves each connection on
// one worker thread from accept to close; ConnectionTasks clears the flag when a thread takes a
// new connection, so it needs no peer address (which httplib does not know for a request line it
// could not parse).
thread_local bool t_poisoned = false;

void poison(httplib::Response& res) {
  close_after_answer(res);
  t_poisoned = true;
}

// httplib's thread pool, with each connection's task starting from a clean per-connection state.
class ConnectionTasks : public httplib::TaskQueue {
 public:
  explicit ConnectionTasks(size_t threads) : pool_(threads) {}
  void enqueue(std::function<void()> serve_connection) override {
    pool_.enqueue([serve_connection = std::move(serve_connection)] {
      t_poisoned = false;
      t_started = false;
      serve_connection();
    });
  }
  void shutdown() override { pool_.shutdown(); }

 private:
  httplib::ThreadPool pool_;
};

// Sends the refusal gate() deferred until httplib had read the body; false when there is none.
bool send_deferred(httplib::Response& res) {
  if (!t_deferred) return false;
  send_error(res, t_deferred->status, t_deferred->code, t_deferred->what());
  return true;
}

// How far past --max-upload-mb a declared body is still read (and dropped) to answer 413 cleanly.
constexpr size_t kLingerBytes = size_t(64) << 20;

// The documented method of each route (openapi.json); HEAD comes with GET, OPTIONS with all.
const std::map<std::string, std::string> kAllow = {
    {"/", "GET"},           {"/healthz", "GET"},      {"/metrics", "GET"},     {"/v1/stats", "GET"},
    {"/v1/classes", "GET"}, {"/openapi.json", "GET"}, {"/v1/predict", "POST"}, {"/v1/explain", "POST"}};

// A client's X-Request-Id when it is a sane token, else a fresh random one.
std::string request_id(const httplib::Request& req) {
  const std::string in = req.get_header_value("X-Request-Id");
  bool ok = !in.empty() && in.size() <= 64;
  for (char c : in) ok = ok && (std::isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.');
  if (ok) return in;
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = uint64_t(Clock::now().time_since_epoch().count()) * 0x9E3779B97F4A7C15ull;
  uint64_t x = salt + 0x9E3779B97F4A7C15ull * ++counter;  // splitmix64: unique per request, not guessable order
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", (unsigned long long)x);
  return b;
}

// Same length and every byte compared whatever the first difference: the time an answer takes
// tells nothing about the key.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= (unsigned char)(a[i] ^ b[i]);
  return d == 0;
}

std::string utc_now() {
  const auto t = std::chrono::system_clock::now();
  const std::time_t s = std::chrono::system_clock::to_time_t(t);
  const int ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char b[40];
  std::snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return b;
}

}  // namespace

struct Server::Impl {
  Predictor& pred;
  ServeOptions opt;
  std::unique_ptr<httplib::Server> http_;  // an httplib::SSLServer with TLS
  httplib::Server& http;
  Batcher batcher;
  ServeMetrics metrics;
  std::atomic<bool> bound{false}, draining{false};
  std::atomic<int> in_flight{0};  // predictions and explanations being answered
  std::mutex clients_mu, log_mu;
  std::map<std::string, int> per_client;  // in-flight predictions by client address
  FILE* access_log = nullptr;

  Impl(Predictor& p, ServeOptions o)
      : pred(p),
        opt(std::move(o)),
        http_(make_http(opt)),
        http(*http_),
        batcher(p, opt.max_batch, opt.queue, opt.gather_us) {
    if (opt.access_log == "-")
      access_log = stderr;
    else if (!opt.access_log.empty() && !(access_log = std::fopen(opt.access_log.c_str(), "a")))
      throw std::runtime_error("--access-log: cannot open '" + opt.access_log + "' for appending");
  }
  ~Impl() {
    if (access_log && access_log != stderr) std::fclose(access_log);
  }

  static std::unique_ptr<httplib::Server> make_http(const ServeOptions& o) {
    if (o.tls_cert.empty() && o.tls_key.empty()) return std::make_unique<httplib::Server>();
    if (o.tls_cert.empty() || o.tls_key.empty()) throw std::runtime_error("TLS needs both --tls-cert and --tls-key");
    for (const auto& f : {o.tls_cert, o.tls_key})
      if (!std::ifstream(f)) throw std::runtime_error("TLS: cannot read '" + f + "'");
    auto s = std::make_unique<httplib::SSLServer>(o.tls_cert.c_str(), o.tls_key.c_str());
    if (!s->is_valid())
      throw std::runtime_error("TLS: '" + o.tls_cert + "' and '" + o.tls_key +
                               "' are not a PEM certificate and its private key");
    return s;
  }

  json class_notes(int c) const { return opt.app.notes ? opt.app.notes(pred.class_names()[c]) : json::object(); }

  std::vector<BatchResult> run(const std::vector<std::pair<std::string, Image>>& imgs, bool rollout) {
    std::vector<std::vector<float>> inputs;
    for (const auto& im : imgs) {
      inputs.emplace_back(pred.input_floats());
      pred.prepare(im.second, inputs.back().data());
    }
    std::vector<std::future<BatchResult>> futs;
    try {
      futs = batcher.submit(std::move(inputs), rollout);
    } catch (const QueueFull& e) {
      throw HttpError(503, "overloaded", e.what());
    }
    std::vector<BatchResult> out;
    for (auto& f : futs) out.push_back(f.get());
    metrics.add_images(out.size());
    t_images += out.size();
    return out;
  }

  int top_k_param(const httplib::Request& req) const {
    if (!req.has_param("top_k")) return opt.default_top_k;
    const std::string v = req.get_param_value("top_k");
    int k = 0;
    try {
      size_t used = 0;
      k = std::stoi(v, &used);
      if (used != v.size()) throw std::invalid_argument(v);
    } catch (const std::exception&) {
      throw HttpError(400, "bad_parameter", "top_k must be an integer");
    }
    if (k < 1 || k > pred.num_classes())
      throw HttpError(400, "bad_parameter", "top_k must be in 1.." + std::to_string(pred.num_classes()));
    return k;
  }

  void predict(const httplib::Request& req, httplib::Response& res) {
    int k = top_k_param(req);
    auto imgs = read_images(req, size_t(opt.max_images), opt.max_image_dim);
    auto results = run(imgs, false);
    const auto& names = pred.class_names();
    json out = {{"model", pred.version()}, {"results", json::array()}};
    std::vector<ServeCell> cells;
    for (size_t i = 0; i < results.size(); ++i) {
      const Prediction& p = results[i].pred;
      json top = json::array(), probs = json::object();
      for (int c : top_k(p.probs, k)) top.push_back({{"class", names[c]}, {"prob", p.probs[c]}});
      for (int c = 0; c < int(names.size()); ++c) probs[names[c]] = p.probs[c];
      out["results"].push_back({{"name", imgs[i].first},
                                {"prediction", names[p.top]},
                                {"confidence", p.confidence},
                                {"review", p.confidence < opt.review_below},
                                {"ood_score", p.ood_score},
                                {"unlike_training_data",
                                 pred.ood().present ? json(p.unlike_training) : json()},  // null: no threshold
                                {"top", top},
                                {"probabilities", probs},
                                {"notes", class_notes(p.top)},
                                {"batch_size", results[i].batch_size}});
      if (!opt.map.targets.empty()) {
        const MappedCall m = map_call(opt.map, restrict_map_rule(opt.map_rule), p.probs);
        out["results"].back()["target"] = {
            {"name", m.name}, {"probability", m.prob}, {"map", opt.map.name}, {"rule", opt.map_rule}};
      }
      cells.push_back({imgs[i].first, p.probs});
    }
    if (cells.size() >= 2 && opt.app.add_differential) opt.app.add_differential(cells, names, opt.review_below, out);
    out["review_threshold"] = opt.review_below;
    const OodReference& ood = pred.ood();  // how each ood_score reads
    out["ood"] = {{"score", ood.kind},
                  {"threshold", ood.present ? json(ood.threshold) : json()},
                  {"fpr", ood.present ? json(ood.fpr) : json()}};
    res.set_content(out.dump(), "application/json");
  }

  void explain(const httplib::Request& req, httplib::Response& res) {
    std::string format = req.has_param("format") ? req.get_param_value("format") : "json";
    if (format != "json" && format != "png") throw HttpError(400, "bad_parameter", "format must be json or png");
    auto imgs = read_images(req, 1, opt.max_image_dim);
    auto results = run(imgs, true);
    const BatchResult& r = results[0];
    Image view = pred.model_view(imgs[0].second);
    std::vector<uint8_t> png = encode_png(heat_overlay(view, r.rollout, pred.config().grid()));
    if (format == "png") {
      res.set_content(std::string(png.begin(), png.end()), "image/png");
      return;
    }
    const auto& names = pred.class_names();
    res.set_content(json{{"model", pred.version()},
                         {"name", imgs[0].first},
                         {"prediction", names[r.pred.top]},
                         {"confidence", r.pred.confidence},
                         {"ood_score", r.pred.ood_score},  // as /v1/predict says it, and `vitengine explain`
                         {"unlike_training_data", pred.ood().present ? json(r.pred.unlike_training) : json()},
                         {"method", "attention rollout (Abnar & Zuidema 2020), class token over patches"},
                         {"grid", pred.config().grid()},
                         {"rollout", r.rollout},
                         {"overlay_png_base64", base64(png)}}
                        .dump(),
                    "application/json");
  }

  // Answers before routing when it must (a CORS preflight; a method the route does not take, a
  // declared body over the limit, draining, a missing or wrong key) and adds the CORS headers an
  // allowed origin gets. Returns true when it answered. httplib reads a request's body only after
  // this, and only for the methods that carry one; an answer given here to such a request would
  // leave its body unread on a keep-alive connection, to be parsed as the next request. So for
  // those the refusal waits in t_deferred until the body is read, and the route's handler (or the
  // catch-all one) sends it.
  bool gate(const httplib::Request& req, httplib::Response& res) {
    t_deferred.reset();
    if (t_poisoned) {  // bytes after a request httplib left partly unread
      close_after_answer(res);
      send_error(res, 400, "bad_request",
                 "an earlier request on this connection carried a body the server did not read; "
                 "send this request on a new connection");
      return true;
    }
    if (!httplib_reads_body(req.method) && declares_body(req)) poison(res);
    const std::string origin = req.get_header_value("Origin");
    const bool cors = !origin.empty() && std::any_of(opt.cors_origins.begin(), opt.cors_origins.end(),
                                                     [&](const std::string& o) { return o == "*" || o == origin; });
    if (cors) {
      res.set_header("Access-Control-Allow-Origin", origin);
      res.set_header("Vary", "Origin");
      res.set_header("Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
    }
    const auto route = kAllow.find(req.path);
    const std::string methods = route == kAllow.end() ? "" : route->second + ", OPTIONS";
    if (req.method == "OPTIONS" && route != kAllow.end()) {  // preflight: browsers send it without credentials
      res.status = 204;
      res.set_header("Allow", methods);
      if (cors) {
        res.set_header("Access-Control-Allow-Methods", methods);
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id");
        res.set_header("Access-Control-Max-Age", "600");
      }
      return true;
    }
    std::optional<HttpError> refusal = refuse(req, res, route, methods);
    if (!refusal) return false;
    if (httplib_reads_body(req.method) && refusal->code != "payload_too_large") {  // far too large: never read it
      t_deferred = std::move(refusal);
      return false;
    }
    send_error(res, refusal->status, refusal->code, refusal->what());
    return true;
  }

  // Why a request is refused before its handler runs, if it is; sets the headers that go with it.
  std::optional<HttpError> refuse(const httplib::Request& req, httplib::Response& res,
                                  std::map<std::string, std::string>::const_iterator route,
                                  const std::string& methods) {
    if (route != kAllow.end() && req.method != route->second && !(req.method == "HEAD" && route->second == "GET")) {
      res.set_header("Allow", methods);
      return HttpError(405, "method_not_allowed",
                       req.method + " is not a method of " + req.path + " (" + methods + ")");
    }
    // A body over the limit by up to kLingerBytes is read and dropped by httplib, so that a client
    // that writes its whole request before reading (most do) gets the 413 instead of a reset
    // connection; past that it is refused at once and the connection closed (nginx's lingering
    // close makes the same trade).
    if (declared_length(req) > opt.max_upload_bytes + kLingerBytes) {
      poison(res);
      return HttpError(413, "payload_too_large",
                       "the body is " + req.get_header_value("Content-Length") + " bytes; the limit is " +
                           std::to_string(opt.max_upload_bytes));
    }
    if (draining) {
      close_after_answer(res);
      return HttpError(503, "shutting_down", "the service is stopping; retry on another instance or shortly");
    }
    if (!opt.api_keys.empty() && req.path != "/healthz") {
      const std::string auth = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      const std::string key = auth.rfind(prefix, 0) == 0 ? auth.substr(prefix.size()) : "";
      bool ok = false;
      for (const auto& k : opt.api_keys) ok = same_secret(key, k) || ok;
      if (!ok) {
        res.set_header("WWW-Authenticate", "Bearer");
        return HttpError(401, "unauthorized",
                         auth.empty() ? "send Authorization: Bearer <key>" : "the key in Authorization is not valid");
      }
    }
    return std::nullopt;
  }

  // One JSON line per request (time, request id, route, status, milliseconds, images, client).
  void log_access(const httplib::Request& req, const httplib::Response& res, double ms) {
    if (!access_log) return;
    const std::string line =
        json{{"time", utc_now()},    {"request_id", t_request_id},
             {"method", req.method}, {"route", req.path.size() <= 200 ? req.path : req.path.substr(0, 200)},
             {"status", res.status}, {"ms", std::round(ms * 100) / 100},
             {"images", t_images},   {"client", req.remote_addr}}
            .dump(-1, ' ', false, json::error_handler_t::replace) +
        "\n";
    std::lock_guard<std::mutex> lk(log_mu);
    std::fwrite(line.data(), 1, line.size(), access_log);
    std::fflush(access_log);
  }

  // The batcher's and the model's part of /metrics: batch sizes, queue depth, the model's id.
  std::string batcher_prometheus() const {
    const BatcherStats s = batcher.stats();
    std::string o = "# HELP vitengine_batch_size Images per forward pass.\n# TYPE vitengine_batch_size histogram\n";
    uint64_t cum = 0, sum = 0;
    for (int b = 1; b <= batcher.max_batch(); ++b) {
      const uint64_t n = size_t(b) < s.batch_sizes.size() ? s.batch_sizes[size_t(b)] : 0;
      cum += n;
      sum += n * uint64_t(b);
      o += "vitengine_batch_size_bucket{le=\"" + std::to_string(b) + "\"} " + std::to_string(cum) + "\n";
    }
    o += "vitengine_batch_size_bucket{le=\"+Inf\"} " + std::to_string(cum) + "\n";
    o += "vitengine_batch_size_sum " + std::to_string(sum) + "\nvitengine_batch_size_count " + std::to_string(cum) +
         "\n";
    o += "# HELP vitengine_queue_depth Images waiting for the model.\n# TYPE vitengine_queue_depth gauge\n"
         "vitengine_queue_depth " +
         std::to_string(s.queue_depth) + "\n";
    o += "# HELP vitengine_queue_capacity Images the queue holds before answering 503.\n"
         "# TYPE vitengine_queue_capacity gauge\nvitengine_queue_capacity " +
         std::to_string(batcher.queue_capacity()) + "\n";
    o += "# HELP vitengine_model_info The model this service runs (always 1).\n# TYPE vitengine_model_info gauge\n"
         "vitengine_model_info{model=\"" +
         prometheus_label(pred.version()) + "\",architecture=\"" + prometheus_label(pred.config().to_string()) +
         "\",classes=\"" + std::to_string(pred.num_classes()) + "\"} 1\n";
    return o;
  }

  json classes_json() const {
    json out = json::array();
    for (int c = 0; c < pred.num_classes(); ++c) {
      json j = class_notes(c);
      j["index"] = c;
      j["name"] = pred.class_names()[c];
      out.push_back(j);
    }
    return out;
  }

  // Wraps a handler: HttpError -> its status; anything else -> 500; records metrics.
  // A prediction in flight for one client address; past max_per_client, 503.
  struct ClientSlot {
    Impl& I;
    std::string addr;
    ClientSlot(Impl& i, const std::string& a) : I(i), addr(a) {
      std::lock_guard<std::mutex> lk(I.clients_mu);
      if (I.per_client[addr] >= I.opt.max_per_client)
        throw HttpError(503, "too_many_requests",
                        "this client has " + std::to_string(I.opt.max_per_client) + " requests in flight (the limit)");
      ++I.per_client[addr];
      ++I.in_flight;
    }
    ~ClientSlot() {
      std::lock_guard<std::mutex> lk(I.clients_mu);
      if (--I.per_client[addr] == 0) I.per_client.erase(addr);
      --I.in_flight;
    }
  };

  template <typename F>
  httplib::Server::Handler wrap(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      if (send_deferred(res)) return;
      try {
        ClientSlot slot(*this, req.remote_addr);
        f(req, res);
      } catch (const HttpError& e) {
        send_error(res, e.status, e.code, e.what());
      } catch (const std::exception& e) {
        send_error(res, 500, "internal", e.what());
      }
    };
  }

  void routes() {
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      t_request_start = Clock::now();
      t_started = true;
      t_images = 0;
      t_request_id = request_id(req);
      res.set_header("X-Request-Id", t_request_id);
      return gate(req, res) ? httplib::Server::HandlerResponse::Handled : httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      double ms = t_started ? std::chrono::duration<double, std::milli>(Clock::now() - t_request_start).count() : -1;
      t_started = false;
      log_access(req, res, ms);
      // Labels from a fixed set: a client cannot grow the metrics with made-up paths.
      static const char* known[] = {"/",           "/healthz",    "/metrics",    "/v1/stats",
                                    "/v1/classes", "/v1/predict", "/v1/explain", "/openapi.json"};
      const bool is_known = std::find(std::begin(known), std::end(known), req.path) != std::end(known);
      static const char* methods[] = {"GET", "POST", "OPTIONS", "HEAD", "PUT", "DELETE", "PATCH"};
      const bool std_method = std::find(std::begin(methods), std::end(methods), req.method) != std::end(methods);
      metrics.record(std_method ? req.method : "other", is_known ? req.path : "other", res.status, ms);
    });
    // Statuses that httplib sets itself (404, 413 payload too large, 400 bad request) get a JSON body too.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      // Before the pre-routing handler ran (!t_started), httplib could not parse the request line
      // or headers and answered without reading the rest of the request. After it, every error
      // gate() or a handler answers has a body (send_error), so an empty one means httplib
      // answered by itself: for a method with a body, that it failed to read it (a malformed
      // multipart, an unknown Content-Encoding). (Its 404 comes after the body was read: no route
      // matched.) Either way part of the request may still be in the socket.
      if (!t_started || (httplib_reads_body(req.method) && res.body.empty() && res.status != 404)) poison(res);
      if (!res.body.empty()) return;
      std::string code = res.status == 404   ? "not_found"
                         : res.status == 413 ? "payload_too_large"
                         : res.status == 405 ? "method_not_allowed"
                         : res.status == 414 ? "uri_too_long"
                                             : "bad_request";
      std::string msg = res.status == 404 ? "no such endpoint"
                        : res.status == 413
                            ? "the body is " + req.get_header_value("Content-Length") + " bytes; the limit is " +
                                  std::to_string(opt.max_upload_bytes)
                        : !t_started ? "the request line or headers could not be parsed (a method other than GET, "
                                       "HEAD, POST, PUT, PATCH, DELETE, OPTIONS or TRACE; a URI over 8 KiB; a "
                                       "malformed header or Range)"
                                     : "bad request";
      send_error(res, res.status, code, msg);
    });
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(index_html(), "text/html; charset=utf-8");
    });
    http.Get("/openapi.json", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(openapi_json(), "application/json");
    });
    http.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(json{{"status", "ok"}, {"model", pred.version()}}.dump(), "application/json");
    });
    http.Get("/v1/classes", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(json{{"model", pred.version()}, {"classes", classes_json()}}.dump(), "application/json");
    });
    http.Get("/v1/stats", [this](const httplib::Request&, httplib::Response& res) {
      json m = metrics.to_json();
      BatcherStats s = batcher.stats();
      m["model"] = pred.version();
      m["batches"] = s.batches;
      m["images"] = s.images;
      m["mean_batch"] = s.batches ? double(s.images) / double(s.batches) : 0.0;
      m["max_batch_seen"] = s.max_batch_seen;
      m["queue_depth"] = s.queue_depth;
      m["queue_capacity"] = batcher.queue_capacity();
      res.set_content(m.dump(), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.to_prometheus() + batcher_prometheus(), "text/plain; version=0.0.4; charset=utf-8");
    });
    // Every other method that carries a body, on any path: httplib reads the body first, then the
    // refusal gate() deferred (405, 401, 503) or a 404 is sent.
    const auto deferred_or_404 = [](const httplib::Request&, httplib::Response& res) {
      if (!send_deferred(res)) send_error(res, 404, "not_found", "no such endpoint");
    };
    http.Put(R"(/.*)", deferred_or_404);
    http.Patch(R"(/.*)", deferred_or_404);
    http.Delete(R"(/.*)", deferred_or_404);
    for (const auto& [path, method] : kAllow)
      if (method == "GET") http.Post(path, deferred_or_404);
    http.Post("/v1/predict", wrap([this](const httplib::Request& q, httplib::Response& r) { predict(q, r); }));
    http.Post("/v1/explain", wrap([this](const httplib::Request& q, httplib::Response& r) { explain(q, r); }));
    http.set_payload_max_length(opt.max_upload_bytes);
    http.set_keep_alive_max_count(100);  // httplib's default, 5, makes busy clients reconnect often
    http.set_keep_alive_timeout(std::max(1, opt.keep_alive_s));
    http.set_read_timeout(std::max(1, opt.read_timeout_s), 0);
    http.set_write_timeout(10, 0);
    size_t threads = size_t(std::max(2, opt.threads));
    http.new_task_queue = [threads] { return new ConnectionTasks(threads); };
  }
};

// cpp-httplib 0.11 listens with a backlog of 5. A burst of new connections (32 clients
// at once while the forward pass holds every core) overflows it and clients see
// resets. On Linux, listen() on the bound socket again raises the backlog; the socket
// is found among this process's descriptors by its port.
static void raise_listen_backlog(int port) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return;
  while (dirent* e = readdir(d)) {
    int fd = std::atoi(e->d_name);
    if (fd <= 2) continue;
    int listening = 0;
    socklen_t ol = sizeof listening;
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ol) != 0 || !listening) continue;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0) continue;
    int p = ss.ss_family == AF_INET    ? ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port)
            : ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                       : -1;
    if (p == port) ::listen(fd, SOMAXCONN);
  }
  closedir(d);
}

Server::Server(Predictor& predictor, ServeOptions opt) : impl_(std::make_unique<Impl>(predictor, std::move(opt))) {
  impl_->routes();
}

Server::~Server() { stop(); }

int Server::bind() {
  int port = impl_->opt.port == 0 ? impl_->http.bind_to_any_port(impl_->opt.host)
                                  : (impl_->http.bind_to_port(impl_->opt.host, impl_->opt.port) ? impl_->opt.port : -1);
  if (port <= 0)
    throw std::runtime_error("cannot listen on " + impl_->opt.host + ":" + std::to_string(impl_->opt.port));
  raise_listen_backlog(port);
  impl_->bound = true;
  return port;
}

void Server::serve() {
  if (!impl_->bound) throw std::runtime_error("Server::serve: bind() first");
  impl_->http.listen_after_bind();
}

void Server::stop() {
  if (impl_) impl_->http.stop();
}

void Server::drain(double grace_s) {
  if (!impl_) return;
  impl_->draining = true;
  const auto until = Clock::now() + std::chrono::duration<double>(grace_s);
  while (impl_->in_flight > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->http.stop();
}

}  // namespace vit
