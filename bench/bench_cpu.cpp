// CPU reference path benchmarks (Google Benchmark): one forward+backward step of a
// ViT preset, and the main ops at vit_ti16 shapes.
//   build/bench_cpu --benchmark_filter=Step
//   build/bench_cpu --benchmark_filter=SaveCheckpoint   (about 0.1 s for vit_ti16 with its moments, 66 MB)
// Compare with PyTorch on the same machine: /usr/bin/python3 bench/cpu_step_torch.py
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/model/vit.h"
#include "weights/checkpoint.h"

// Multiply-add FLOPs (x2) of one image's forward: patch embedding, per block in_proj, the two
// attention products, out_proj and the MLP, and the head. The elementwise ops are not counted.
static double forward_flops(const vit::ViTConfig& c) {
  const double N = c.seq_len(), D = c.dim, M = c.mlp_dim, K = c.channels * c.patch * c.patch;
  const double block = N * D * 3 * D + 2 * N * N * D + N * D * D + 2 * N * D * M;
  return 2 * (c.num_patches() * K * D + c.depth * block + D * c.num_classes);
}

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

// Forward of a preset at batch range(0). range(1): 0 = the training-capable forward (saves every
// activation), 1 = the inference path in fp32, 2 = the inference path in bf16 (AMX; skipped where
// the CPU has none). GFLOP/s counts 2 x multiply-adds of the GEMMs and attention products.
static void BM_Forward(benchmark::State& st, const char* preset) {
  const int B = (int)st.range(0), mode = (int)st.range(1);
  vit::ViTConfig c = vit::ViTConfig::preset(preset);
  vit::ViT m(c);
  m.init(1);
  std::vector<float> x((size_t)B * 3 * c.image_size * c.image_size, 0.1f);
  for (size_t i = 0; i < x.size(); i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.f - 1.f;
  vit::ForwardOptions opt;
  opt.inference = mode > 0;
  m.set_inference_precision(mode == 2 ? vit::InferencePrecision::bf16 : vit::InferencePrecision::fp32);
  if (mode == 2 && m.inference_precision() != vit::InferencePrecision::bf16) {
    st.SkipWithError("no AMX-BF16 on this CPU");
    return;
  }
  for (auto _ : st) benchmark::DoNotOptimize(m.forward(x.data(), B, opt));
  st.counters["img/s"] = benchmark::Counter((double)B * st.iterations(), benchmark::Counter::kIsRate);
  st.counters["GFLOP/s"] =
      benchmark::Counter(forward_flops(c) * B * st.iterations() * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_Forward, vit_ti16, "vit_ti16")
    ->ArgsProduct({{1, 8}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0)
    ->UseRealTime();

// Writing a training checkpoint (last.vit: parameters + AdamW moments, SHA-256 per tensor,
// fsync, rename) for a preset: the cost the trainer's background writer takes off the epoch end
// (engine/util/async_writer.h). Writes to the system temp folder.
static void BM_SaveCheckpoint(benchmark::State& st, const char* preset) {
  vit::ViT m(vit::ViTConfig::preset(preset));
  m.init(1);
  vit::ModelMeta meta;
  for (int i = 0; i < m.config().num_classes; ++i) meta.class_names.push_back("class" + std::to_string(i));
  const std::string path = (std::filesystem::temp_directory_path() / "bench_save_checkpoint.vit").string();
  for (auto _ : st) vit::save_model(path, m, meta, /*with_optimizer=*/true, nlohmann::json{{"step", 1}});
  st.counters["MB"] = double(std::filesystem::file_size(path)) / 1e6;
  std::filesystem::remove(path);
}
BENCHMARK_CAPTURE(BM_SaveCheckpoint, vit_ti16, "vit_ti16")->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

BENCHMARK_MAIN();
