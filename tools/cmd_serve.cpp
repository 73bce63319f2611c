// vitengine serve: the HTTP service and web page (engine/serve/server.h).
//   vitengine serve [--port 8080] [--host 127.0.0.1] [--model CKPT] [--max-upload-mb 10]
//                   [--max-batch 16] [--queue 64]
// Prints "listening on http://HOST:PORT/" once bound (--port 0 picks a free port);
// SIGINT / SIGTERM stop it cleanly.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>

#include <cstdio>
#include <fstream>
#include <thread>

#include "engine/serve/server.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {

struct ServeArgs {
  std::string model;
  std::string tta = "none", stain_norm = "none", cell_size = "auto";
  std::string map;
  ServeOptions opt;
  double max_upload_mb = 10;
  std::string api_key_file;
  bool insecure = false;
  double grace_s = 30;
};

bool loopback(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

// One key per line; blank lines and lines starting with # are skipped. The file holds secrets:
// its content is never printed.
std::vector<std::string> read_keys(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw UsageError("--api-key-file: cannot read '" + path + "'");
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(f, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    if (line.size() < 16) throw UsageError("--api-key-file: a key in '" + path + "' is shorter than 16 characters");
    keys.push_back(line);
  }
  if (keys.empty()) throw UsageError("--api-key-file: '" + path + "' holds no key");
  return keys;
}

int run_serve(ServeArgs a) {
  if (a.opt.port < 0 || a.opt.port > 65535) throw UsageError("--port must be in 0..65535");
  if (a.max_upload_mb <= 0 || a.max_upload_mb > 1024) throw UsageError("--max-upload-mb must be in (0, 1024]");
  if (a.opt.max_batch < 1 || a.opt.queue < 1 || a.opt.max_images < 1 || a.opt.threads < 1)
    throw UsageError("--max-batch, --queue, --max-images and --threads must be >= 1");
  if (a.opt.max_images > a.opt.queue) throw UsageError("--max-images must not exceed --queue");
  if (a.opt.read_timeout_s < 1 || a.opt.keep_alive_s < 1 || a.opt.max_per_client < 1)
    throw UsageError("--read-timeout, --keep-alive and --max-per-client must be >= 1");
  if (!a.api_key_file.empty()) a.opt.api_keys = read_keys(a.api_key_file);
  if (!loopback(a.opt.host) && a.opt.api_keys.empty() && !a.insecure)
    throw UsageError("refusing to listen on " + a.opt.host +
                     " without --api-key-file: anyone on the network could use the service (pass --insecure "
                     "to do it anyway, e.g. behind a proxy that authenticates)");
  if (a.opt.tls_cert.empty() != a.opt.tls_key.empty()) throw UsageError("TLS needs both --tls-cert and --tls-key");
  a.opt.max_upload_bytes = size_t(a.max_upload_mb * 1024 * 1024);

  // A write to a client that has hung up must fail with EPIPE, never end the service through
  // SIGPIPE's default action, whichever library (httplib, OpenSSL) does the writing.
  signal(SIGPIPE, SIG_IGN);
  // Every thread started from here on inherits the blocked signals; one thread waits for them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  Predictor pred(resolve_model_path(a.model), wbc::class_names());
  a.opt.app = wbc::serve_app();  // clinical notes per class, the differential of several cells
  if (!a.map.empty()) {
    a.opt.map = read_label_map(a.map, pred.class_names());  // refuses a map without targets
    restrict_map_rule(a.opt.map_rule);  // refuses an unknown rule before the port opens
  }
  pred.set_tta(a.tta);
  pred.set_stain_norm(a.stain_norm);
  pred.set_cell_size(a.cell_size);
  Server server(pred, a.opt);
  int port = server.bind();
  if (!loopback(a.opt.host))
    std::fprintf(stderr, "vitengine serve: warning: listening on %s, reachable from other machines%s\n",
                 a.opt.host.c_str(), a.opt.api_keys.empty() ? " WITHOUT an API key (--insecure)" : "");
  std::printf("vitengine serve: model %s (%s%s), listening on %s://%s:%d/\n", pred.version().c_str(),
              pred.config().to_string().c_str(), a.tta == "none" ? "" : (", test-time augmentation " + a.tta).c_str(),
              a.opt.tls_cert.empty() ? "http" : "https", a.opt.host.c_str(), port);
  std::fflush(stdout);
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (done) return;
    std::fprintf(stderr, "vitengine serve: signal %d: new requests get 503, finishing those in flight (at most %g s)\n",
                 sig, a.grace_s);
    server.drain(a.grace_s);
    // httplib's stop() does nothing until the accept loop has started, and a signal can
    // arrive between bind() and that moment: repeat until serve() has returned.
    while (!done) {
      server.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  server.serve();
  done = true;
  // serve() also returns if listening failed; wake the waiter so it can be joined.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  return 0;
}

}  // namespace

Command register_serve(CLI::App& root) {
  auto a = std::make_shared<ServeArgs>();
  Command c;
  c.app = root.add_subcommand("serve", "HTTP service with a web page: predict, explain, classes, health, metrics");
  c.app->add_option("--port", a->opt.port, "TCP port (0 = any free port)")->capture_default_str();
  c.app->add_option("--host", a->opt.host, "Address to bind (loopback unless told otherwise)")->capture_default_str();
  c.app->add_option("--model", a->model, "Model checkpoint (.vit); default: the shipped model");
  c.app->add_option("--max-upload-mb", a->max_upload_mb, "Largest request body in MiB")->capture_default_str();
  c.app->add_option("--max-batch", a->opt.max_batch, "Images per forward pass")->capture_default_str();
  add_tta_option(c.app, &a->tta);
  add_map_options(c.app, &a->map, &a->opt.map_rule,
                  "every result also names its target (\"target\": name, probability), as predict --map does");
  add_stain_norm_option(c.app, &a->stain_norm);
  add_cell_size_option(c.app, &a->cell_size);
  c.app->add_option("--queue", a->opt.queue, "Images waiting for the model before 503")->capture_default_str();
  c.app->add_option("--max-dim", a->opt.max_image_dim, "Largest image width/height in pixels")->capture_default_str();
  c.app->add_option("--max-images", a->opt.max_images, "Images per request")->capture_default_str();
  c.app->add_option("--threads", a->opt.threads, "HTTP worker threads = connections served at once")
      ->capture_default_str();
  c.app->add_option("--read-timeout", a->opt.read_timeout_s, "Seconds a request may take to arrive whole")
      ->capture_default_str();
  c.app->add_option("--keep-alive", a->opt.keep_alive_s, "Seconds an idle keep-alive connection stays open")
      ->capture_default_str();
  c.app->add_option("--max-per-client", a->opt.max_per_client, "Predictions in flight per client address; more: 503")
      ->capture_default_str();
  c.app->add_option("--api-key-file", a->api_key_file,
                    "Keys, one per line: every route but /healthz then needs 'Authorization: Bearer <key>'");
  c.app->add_flag("--insecure", a->insecure, "Allow listening beyond loopback without --api-key-file");
  c.app->add_option("--tls-cert", a->opt.tls_cert, "PEM certificate (with --tls-key): serve HTTPS");
  c.app->add_option("--tls-key", a->opt.tls_key, "PEM private key of --tls-cert");
  c.app->add_option("--cors-origin", a->opt.cors_origins, "Origin allowed by CORS, repeatable ('*': any)")->take_all();
  c.app->add_option("--access-log", a->opt.access_log, "JSON lines, one per request: a file, or - for stderr");
  c.app->add_option("--grace", a->grace_s, "On SIGTERM, seconds to let requests in flight finish")
      ->capture_default_str();
  c.app->footer(
      "Limits: a request must arrive whole within --read-timeout; an idle connection closes after --keep-alive;\n"
      "--threads connections are served at once (more wait in the listen backlog); --max-per-client predictions\n"
      "per address and --queue images in all wait for the model, past either 503 with Retry-After; a body over\n"
      "--max-upload-mb is 413, an image over --max-dim a side 413 image_too_large, more than --max-images 413.\n"
      "Routes: GET / /healthz /metrics (Prometheus) /v1/stats /v1/classes /openapi.json; POST /v1/predict /v1/explain\n"
      "(multipart field 'image', a raw image/* body, or JSON with base64). See docs/serving.md.");
  c.app->add_option("--batch-wait-us", a->opt.gather_us, "Wait this long for more images before a partial batch")
      ->capture_default_str();
  c.app->add_option("--review-below", a->opt.review_below, "Flag predictions whose top probability is below this")
      ->capture_default_str();
  c.run = [a]() { return run_serve(*a); };
  return c;
}

}  // namespace vit::cli
