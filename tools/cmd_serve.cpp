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
#include <thread>

#include "engine/serve/server.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {

struct ServeArgs {
  std::string model;
  std::string tta = "none";
  ServeOptions opt;
  double max_upload_mb = 10;
};

int run_serve(ServeArgs a) {
  if (a.opt.port < 0 || a.opt.port > 65535) throw UsageError("--port must be in 0..65535");
  if (a.max_upload_mb <= 0 || a.max_upload_mb > 1024) throw UsageError("--max-upload-mb must be in (0, 1024]");
  if (a.opt.max_batch < 1 || a.opt.queue < 1 || a.opt.max_images < 1 || a.opt.threads < 1)
    throw UsageError("--max-batch, --queue, --max-images and --threads must be >= 1");
  if (a.opt.max_images > a.opt.queue) throw UsageError("--max-images must not exceed --queue");
  a.opt.max_upload_bytes = size_t(a.max_upload_mb * 1024 * 1024);

  // Every thread started from here on inherits the blocked signals; one thread waits for them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  Predictor pred(resolve_model_path(a.model), wbc::class_names());
  a.opt.app = wbc::serve_app();  // clinical notes per class, the differential of several cells
  pred.set_tta(a.tta);
  Server server(pred, a.opt);
  int port = server.bind();
  if (a.opt.host != "127.0.0.1" && a.opt.host != "localhost" && a.opt.host != "::1")
    std::fprintf(stderr, "vitengine serve: warning: listening on %s, reachable from other machines\n",
                 a.opt.host.c_str());
  std::printf("vitengine serve: model %s (%s%s), listening on http://%s:%d/\n", pred.version().c_str(),
              pred.config().to_string().c_str(), a.tta == "none" ? "" : (", test-time augmentation " + a.tta).c_str(),
              a.opt.host.c_str(), port);
  std::fflush(stdout);
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (done) return;
    std::fprintf(stderr, "vitengine serve: signal %d, stopping\n", sig);
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
  c.app->add_option("--queue", a->opt.queue, "Images waiting for the model before 503")->capture_default_str();
  c.app->add_option("--max-dim", a->opt.max_image_dim, "Largest image width/height in pixels")->capture_default_str();
  c.app->add_option("--max-images", a->opt.max_images, "Images per request")->capture_default_str();
  c.app->add_option("--threads", a->opt.threads, "HTTP worker threads")->capture_default_str();
  c.app->add_option("--batch-wait-us", a->opt.gather_us, "Wait this long for more images before a partial batch")
      ->capture_default_str();
  c.app->add_option("--review-below", a->opt.review_below, "Flag predictions whose top probability is below this")
      ->capture_default_str();
  c.run = [a]() { return run_serve(*a); };
  return c;
}

}  // namespace vit::cli
