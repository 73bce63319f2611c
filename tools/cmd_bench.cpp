// vitengine bench: time training steps and inference of a ViT preset on the CPU
// reference path, with synthetic input. The per-kernel GPU benchmarks are the
// Google Benchmark binaries in bench/ (build/bench_*).
#include <algorithm>
#include <chrono>
#include <memory>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/model/vit.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {
struct BenchArgs {
  std::string model = "vit_ti16";
  int batch = 8;
  int steps = 5;
  int warmup = 1;
  bool inference = false;
};
}  // namespace

Command register_bench(CLI::App& root) {
  auto a = std::make_shared<BenchArgs>();
  Command c;
  c.app = root.add_subcommand("bench", "Time forward+backward steps (or inference) of a ViT preset on the CPU");
  // Checked here, so that a wrong name is an argument error (exit 2) as for every other command.
  c.app->add_option("--model", a->model, "preset")
      ->capture_default_str()
      ->check(CLI::IsMember({"vit_ti16", "vit_s16", "vit_b16"}));
  c.app->add_option("--batch", a->batch, "images per step")->capture_default_str()->check(CLI::Range(1, 4096));
  c.app->add_option("--steps", a->steps, "timed steps")->capture_default_str()->check(CLI::Range(1, 100000));
  c.app->add_option("--warmup", a->warmup, "untimed steps first")->capture_default_str()->check(CLI::Range(0, 1000));
  c.app->add_flag("--inference", a->inference, "time forward only (eval mode)");
  c.run = [a]() -> int {
    ViTConfig cfg = ViTConfig::preset(a->model);
    ViT m(cfg);
    m.init(1);
    std::mt19937 rng(0);
    std::normal_distribution<float> nd;
    std::vector<float> x((size_t)a->batch * 3 * cfg.image_size * cfg.image_size);
    for (auto& v : x) v = nd(rng);
    std::vector<int> y(a->batch);
    for (int i = 0; i < a->batch; i++) y[i] = i % cfg.num_classes;
    ForwardOptions opt;
    opt.training = !a->inference;
    auto step = [&] {
      m.forward(x.data(), a->batch, opt);
      if (a->inference) return;
      m.loss(y.data(), 0.1f);
      m.zero_grad();
      m.backward();
    };
    for (int i = 0; i < a->warmup; i++) step();
    std::vector<double> ms;
    for (int i = 0; i < a->steps; i++) {
      auto t0 = std::chrono::steady_clock::now();
      step();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      std::fprintf(stderr, "\rstep %d/%d: %.1f ms", i + 1, a->steps, ms.back());
    }
    std::fprintf(stderr, "\n");
    std::sort(ms.begin(), ms.end());
    double med = ms[ms.size() / 2];
    std::printf(
        "{\"model\": \"%s\", \"batch\": %d, \"mode\": \"%s\", \"device\": \"cpu\", \"median_ms\": %.2f, "
        "\"min_ms\": %.2f, \"img_per_s\": %.2f}\n",
        a->model.c_str(), a->batch, a->inference ? "inference" : "train_step", med, ms.front(),
        a->batch * 1000.0 / med);
    return 0;
  };
  return c;
}

}  // namespace vit::cli
