// CPU reference path benchmarks (Google Benchmark): one forward+backward step of a
// ViT preset, and the main ops at vit_ti16 shapes.
//   build/bench_cpu --benchmark_filter=Step
// Compare with PyTorch on the same machine: /usr/bin/python3 bench/cpu_step_torch.py
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "engine/vit.h"

static void BM_Step(benchmark::State& st, const char* preset) {
  const int B = (int)st.range(0);
  vit::ViTConfig c = vit::ViTConfig::preset(preset);
  vit::ViT m(c);
  m.init(1);
  std::mt19937 rng(0);
  std::normal_distribution<float> nd;
  std::vector<float> x((size_t)B * 3 * c.image_size * c.image_size);
  for (auto& v : x) v = nd(rng);
  std::vector<int> y(B);
  for (int i = 0; i < B; i++) y[i] = i % c.num_classes;
  vit::ForwardOptions opt;
  opt.training = true;
  for (auto _ : st) {
    m.forward(x.data(), B, opt);
    benchmark::DoNotOptimize(m.loss(y.data(), 0.1f));
    m.zero_grad();
    m.backward();
  }
  st.counters["img/s"] = benchmark::Counter((double)B * st.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_Step, vit_ti16, "vit_ti16")->Arg(8)->Unit(benchmark::kMillisecond)->MinTime(5.0)->UseRealTime();

static void BM_Forward(benchmark::State& st, const char* preset) {
  const int B = (int)st.range(0);
  vit::ViTConfig c = vit::ViTConfig::preset(preset);
  vit::ViT m(c);
  m.init(1);
  std::vector<float> x((size_t)B * 3 * c.image_size * c.image_size, 0.1f);
  for (size_t i = 0; i < x.size(); i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.f - 1.f;
  for (auto _ : st) benchmark::DoNotOptimize(m.forward(x.data(), B));
  st.counters["img/s"] = benchmark::Counter((double)B * st.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_Forward, vit_ti16, "vit_ti16")->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();

BENCHMARK_MAIN();
