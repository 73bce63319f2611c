// The HTTP service; see server.h. Request threads validate and decode uploads, then
// wait on the Batcher, which runs the model on its own thread.
#include "engine/serve/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

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
  res.set_content(json{{"error", {{"code", code}, {"message", msg}}}}.dump(), "application/json");
}

thread_local Clock::time_point t_request_start;
thread_local bool t_started = false;

}  // namespace

struct Server::Impl {
  Predictor& pred;
  ServeOptions opt;
  httplib::Server http;
  Batcher batcher;
  ServeMetrics metrics;
  std::atomic<bool> bound{false};

  Impl(Predictor& p, ServeOptions o)
      : pred(p), opt(std::move(o)), batcher(p, opt.max_batch, opt.queue, opt.gather_us) {}

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
                                {"top", top},
                                {"probabilities", probs},
                                {"notes", class_notes(p.top)},
                                {"batch_size", results[i].batch_size}});
      cells.push_back({imgs[i].first, p.probs});
    }
    if (cells.size() >= 2 && opt.app.add_differential) opt.app.add_differential(cells, names, opt.review_below, out);
    out["review_threshold"] = opt.review_below;
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
                         {"method", "attention rollout (Abnar & Zuidema 2020), class token over patches"},
                         {"grid", pred.config().grid()},
                         {"rollout", r.rollout},
                         {"overlay_png_base64", base64(png)}}
                        .dump(),
                    "application/json");
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
  template <typename F>
  httplib::Server::Handler wrap(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const HttpError& e) {
        send_error(res, e.status, e.code, e.what());
      } catch (const std::exception& e) {
        send_error(res, 500, "internal", e.what());
      }
    };
  }

  void routes() {
    http.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      t_request_start = Clock::now();
      t_started = true;
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      double ms = t_started ? std::chrono::duration<double, std::milli>(Clock::now() - t_request_start).count() : -1;
      t_started = false;
      // Labels from a fixed set: a client cannot grow the metrics with made-up paths.
      static const char* known[] = {"/",           "/healthz",    "/metrics",   "/v1/stats",
                                    "/v1/classes", "/v1/predict", "/v1/explain"};
      const bool is_known = std::find(std::begin(known), std::end(known), req.path) != std::end(known);
      static const char* methods[] = {"GET", "POST", "OPTIONS", "HEAD", "PUT", "DELETE", "PATCH"};
      const bool std_method = std::find(std::begin(methods), std::end(methods), req.method) != std::end(methods);
      metrics.record(std_method ? req.method : "other", is_known ? req.path : "other", res.status, ms);
    });
    // Statuses that httplib sets itself (404, 413 payload too large, 400 bad request) get a JSON body too.
    http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string code = res.status == 404   ? "not_found"
                         : res.status == 413 ? "payload_too_large"
                         : res.status == 405 ? "method_not_allowed"
                                             : "bad_request";
      std::string msg = res.status == 404   ? "no such endpoint"
                        : res.status == 413 ? "request body too large"
                                            : "bad request";
      send_error(res, res.status, code, msg);
    });
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(index_html(), "text/html; charset=utf-8");
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
    http.Post("/v1/predict", wrap([this](const httplib::Request& q, httplib::Response& r) { predict(q, r); }));
    http.Post("/v1/explain", wrap([this](const httplib::Request& q, httplib::Response& r) { explain(q, r); }));
    for (const char* p : {"/v1/predict", "/v1/explain"})
      http.Get(p, [](const httplib::Request&, httplib::Response& res) {
        send_error(res, 405, "method_not_allowed", "use POST with multipart/form-data");
      });
    http.set_payload_max_length(opt.max_upload_bytes);
    http.set_keep_alive_max_count(100);  // httplib's default, 5, makes busy clients reconnect often
    http.set_read_timeout(10, 0);
    http.set_write_timeout(10, 0);
    size_t threads = size_t(std::max(2, opt.threads));
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
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

}  // namespace vit
