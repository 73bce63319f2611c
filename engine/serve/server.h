// The HTTP service behind `vitengine serve` (cpp-httplib): a web page at /, JSON
// endpoints for prediction, attention overlays, classes, health and metrics, with
// limits on upload size, image dimensions, images per request and queued work.
//
//   POST /v1/predict   multipart/form-data, field "image" (repeatable); ?top_k=3
//   POST /v1/explain   multipart/form-data, one "image"; ?format=json|png
//   GET  /v1/classes   GET /healthz   GET /metrics (Prometheus)   GET /v1/stats (JSON)   GET /
//   OPTIONS on any route (CORS preflight when --cors-origin allows the origin)
//
// Every failure answers {"error": {"code": ..., "message": ...}} with a 4xx/5xx
// status (503s with Retry-After), every answer carries X-Request-Id. Nothing the client
// sends is used as a file path.
#pragma once
#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>
#include <memory>
#include <string>

#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"

namespace vit {

// One image's result, as an application's differential sees it.
struct ServeCell {
  std::string name;          // the upload's display name
  std::vector<float> probs;  // calibrated, in the model's class order
};

// What an application adds to the service's answers (engine/wbc provides the white-blood-cell
// one; the CLI passes it in). Both optional.
struct ServeApp {
  // Notes on a class, shown with each prediction and by /v1/classes ({} when none).
  std::function<nlohmann::json(const std::string& class_name)> notes;
  // Called for a request of two or more images: adds its summary of them to the response.
  std::function<void(const std::vector<ServeCell>& cells, const std::vector<std::string>& class_names,
                     float review_below, nlohmann::json& response)>
      add_differential;
};

struct ServeOptions {
  std::string host = "127.0.0.1";       // loopback unless told otherwise
  int port = 8080;                      // 0 = any free port (bind() returns it)
  size_t max_upload_bytes = 10u << 20;  // whole request body
  int max_image_dim = 4096;             // width and height limit, checked before decoding
  int max_images = 32;                  // images per request
  int max_batch = 16;                   // images per forward pass
  int queue = 64;                       // images waiting for the model; more -> 503
  // Connections and slow clients. Each open connection holds one worker thread while httplib reads
  // it, so there are enough workers for a crowd of idle connections to leave room for health
  // checks; a request must arrive whole within read_timeout_s and an idle keep-alive connection is
  // closed after keep_alive_s; one client address may have max_per_client predictions in flight.
  int threads = 512;        // HTTP worker threads = connections served at once (more wait in the backlog)
  int read_timeout_s = 5;   // whole request line, headers and body
  int keep_alive_s = 5;     // idle time between requests on one connection
  // /v1/predict and /v1/explain in flight per client address; more -> 503. Twice the queue by
  // default, so that the queue is what binds for one busy client: behind a proxy every client has
  // the proxy's address, and a load test from one machine must not trip it.
  int max_per_client = 128;
  // Operations.
  std::vector<std::string> api_keys;      // non-empty: every route but /healthz needs "Authorization: Bearer <key>"
  std::vector<std::string> cors_origins;  // origins allowed by CORS ("*": any); empty: no CORS headers
  std::string access_log;                 // JSON lines, one per request: a file, "-" for stderr, "" off
  std::string tls_cert, tls_key;          // both set: HTTPS (PEM files)
  int gather_us = 2000;                   // batching window after the first queued image
  float review_below = 0.5f;              // confidence under this sets "review": true
  int default_top_k = 3;
  ServeApp app;  // application notes and summaries (none: a plain classifier)
  // Optional label map (`serve --map`; none while it has no targets): every result also names its
  // target, as predict --map does.
  LabelMap map;
  std::string map_rule = "other";  // other | restrict (engine/eval/evaluate.h)
};

class Server {
 public:
  Server(Predictor& predictor, ServeOptions opt);
  ~Server();
  // Binds host:port; returns the port (useful with port 0). Throws std::runtime_error.
  int bind();
  // Serves until stop(). Call bind() first.
  void serve();
  // Safe from any thread.
  void stop();
  // Graceful stop (SIGTERM): new requests get 503 shutting_down with Retry-After; predictions
  // already in flight finish, for at most grace_s; then stop(). Safe from any thread.
  void drain(double grace_s);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The page at /: drop cell images, see each prediction, a probability bar chart, the
// attention-rollout overlay and the class notes; with several images, the differential.
// Self-contained (no external scripts, fonts or styles); server data goes into the page with
// textContent only, never as HTML. engine/serve/index.html, embedded at build time.
const std::string& index_html();
// GET /openapi.json: an OpenAPI 3 description of every route (engine/serve/openapi.json, embedded).
const std::string& openapi_json();

}  // namespace vit
