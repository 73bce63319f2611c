// End-to-end throughput of vit::ViTCuda, bf16, synthetic input resident on the device:
//   Train/<model>/<graph>:  one full training step at batch 256 (zero_grad, forward with
//                           dropout as configured, loss, backward, grad norm + clip, AdamW)
//   Infer/<model>/<graph>:  forward at batch 256, img/s
//   Latency/<model>/<graph>: forward at batch 1, ms
// graph = 0 runs the step eagerly (kernel launches from the host), 1 replays a CUDA graph.
// Validated before timing: the first loss must be finite and close to ln(14) (zero head at
// init), logits finite. Timed with cudaEvents (UseManualTime); the L2 is not flushed (a step
// streams gigabytes; the cache state between steps is the real one).
// PyTorch on the same card: bench/pytorch_bench.py. Targets: training >= 1.3x compiled
// PyTorch, inference >= 1.2x, batch-1 latency < 2 ms.
// Run: bench_e2e_cuda --benchmark_out=e2e.json --benchmark_out_format=json
#include <cmath>
#include <memory>
#include <vector>

#include "bench/bench_cuda_util.cuh"
#include "engine/model/vit.h"
#include "engine/model/vit_cuda.h"
#include "kernels/cuda/attention_cudnn.cuh"

using namespace vit::bench;

namespace {

const char* kModels[] = {"vit_b16", "vit_s16"};

// Forward FLOPs per image (multiply-add = 2): patch GEMM, per block the four GEMMs and the
// two attention matmuls, the head. Training = 3x (ANCHORS.md: 35.1 GFLOP fwd for ViT-B/16).
double forward_flops(const vit::ViTConfig& c) {
  const double N = c.seq_len(), D = c.dim, M = c.mlp_dim, Np = c.num_patches();
  const double K = double(c.channels) * c.patch * c.patch;
  double f = 2 * Np * K * D;
  f += c.depth * (2 * N * D * (3 * D + D + 2 * M) + 4 * N * N * D);
  f += 2 * D * c.num_classes;
  return f;
}

std::unique_ptr<vit::ViTCuda> make_model(const std::string& name, int B) {
  vit::ViTConfig cfg = vit::ViTConfig::preset(name);
  // torchvision's vit_b_16 and timm's vit_small_patch16_224 default to dropout 0, and that
  // is what bench/pytorch_bench.py times: match it.
  cfg.dropout = 0.f;
  auto m = std::make_unique<vit::ViTCuda>(cfg, vit::Precision::BF16, B);
  m->init_device(42);
  const size_t S = cfg.image_size;
  fill_uniform(m->device_images(), size_t(B) * 3 * S * S, 17, 2.f);
  std::vector<int> labels(B);
  for (int i = 0; i < B; ++i) labels[i] = i % cfg.num_classes;
  VIT_CHECK(cudaMemcpy(m->device_labels(), labels.data(), B * 4, cudaMemcpyHostToDevice));
  VIT_CHECK(cudaDeviceSynchronize());
  return m;
}

// Selects the attention kernels for one benchmark (arg "attn": 0 own, 1 cuDNN's) and restores the
// engine's own when it ends. false: cuDNN's asked for but not built.
struct AttentionChoice {
  explicit AttentionChoice(bool cudnn) : ok(!cudnn || vit::cuda::cudnn_attention_built()) {
    if (ok && cudnn) vit::cuda::set_attention_backend(vit::cuda::AttentionBackend::kCudnn);
  }
  ~AttentionChoice() { vit::cuda::set_attention_backend(vit::cuda::AttentionBackend::kOwn); }
  bool ok;
};

void BM_Train_impl(benchmark::State& st) {
  const std::string name = kModels[st.range(0)];
  const bool graph = st.range(1) != 0;
  const bool cudnn = st.range(2) != 0;
  AttentionChoice attn(cudnn);
  if (!attn.ok) return st.SkipWithError("attention=cudnn: built without cudnn-frontend");
  const int B = 256;
  auto m = make_model(name, B);
  vit::cpu::AdamWParams hp;
  hp.lr = 1e-4f, hp.weight_decay = 0.05f;
  int step = 0;
  vit::ForwardOptions opt;
  opt.training = true;
  float first_loss = NAN;
  std::function<void()> run;
  if (graph) {
    if (cudnn) {  // cuDNN builds its plans (and allocates) on first use: never inside a capture
      m->zero_grad();
      m->forward_device(m->device_images(), B, opt);
      m->loss_device(m->device_labels(), 0.1f);
      m->backward();
      VIT_CHECK(cudaStreamSynchronize(m->stream()));
    }
    m->capture_step(B, 0.1f, 1.0f, true);
    run = [&] {
      hp.step = ++step;
      first_loss = m->replay_step(hp, uint64_t(step));
    };
  } else {
    run = [&] {
      hp.step = ++step;
      opt.dropout_seed = uint64_t(step);
      m->zero_grad();
      m->forward_device(m->device_images(), B, opt);
      m->loss_device(m->device_labels(), 0.1f);
      m->backward();
      m->adamw_step(hp, 1.0f);  // one sync: reads the grad norm
    };
    // validation step
    m->zero_grad();
    m->forward_device(m->device_images(), B, opt);
    const float* dl = m->loss_device(m->device_labels(), 0.1f);
    VIT_CHECK(cudaStreamSynchronize(m->stream()));
    VIT_CHECK(cudaMemcpy(&first_loss, dl, 4, cudaMemcpyDeviceToHost));
  }
  if (graph) run();
  // The head is zero at init, so the first loss is ln(14) = 2.639 exactly; later ones stay near it.
  if (!std::isfinite(first_loss) || std::fabs(first_loss - std::log(14.f)) > 0.5f)
    return st.SkipWithError("training step validation failed (loss not ~ln 14)");
  double t = time_loop(st, m->stream(), run, /*flush=*/false);
  const double per = t / double(st.iterations());
  st.counters["img/s"] = B / per;
  st.counters["ms/step"] = per * 1e3;
  const double tf = 3 * forward_flops(m->config()) * B / per / 1e12;
  st.counters["TFLOP/s"] = tf;
  st.counters["MFU"] = card().peak_bf16_tflops > 0 ? tf / card().peak_bf16_tflops : 0;
  st.SetLabel(name + (graph ? " train b256 bf16 graph" : " train b256 bf16 eager") + (cudnn ? " cudnn-attn" : ""));
}

void BM_Forward(benchmark::State& st, int B) {
  const std::string name = kModels[st.range(0)];
  const bool graph = st.range(1) != 0;
  const bool cudnn = st.range(2) != 0;
  AttentionChoice attn(cudnn);
  if (!attn.ok) return st.SkipWithError("attention=cudnn: built without cudnn-frontend");
  auto m = make_model(name, B);
  if (cudnn) {  // plans built outside any capture
    m->forward_device(m->device_images(), B);
    VIT_CHECK(cudaStreamSynchronize(m->stream()));
  }
  const int C = m->config().num_classes;
  std::function<void()> run;
  if (graph) {
    m->capture_forward(B);
    run = [&] { m->replay_forward(); };
  } else {
    run = [&] { m->forward_device(m->device_images(), B); };
  }
  run();
  std::vector<float> logits(size_t(B) * C);
  VIT_CHECK(cudaStreamSynchronize(m->stream()));
  VIT_CHECK(cudaMemcpy(logits.data(), m->device_logits(), logits.size() * 4, cudaMemcpyDeviceToHost));
  for (float x : logits)
    if (!std::isfinite(x)) return st.SkipWithError("forward validation failed (non-finite logits)");
  double t = time_loop(st, m->stream(), run, /*flush=*/false);
  const double per = t / double(st.iterations());
  st.counters["img/s"] = B / per;
  st.counters["ms"] = per * 1e3;
  st.counters["TFLOP/s"] = forward_flops(m->config()) * B / per / 1e12;
  st.SetLabel(name + (B == 1 ? " latency b1" : " inference b256") + (graph ? " graph" : " eager") +
              (cudnn ? " cudnn-attn" : ""));
}
void BM_Infer_impl(benchmark::State& st) { BM_Forward(st, 256); }
void BM_Latency_impl(benchmark::State& st) { BM_Forward(st, 1); }

}  // namespace

// args: (model index: 0 vit_b16, 1 vit_s16; graph 0/1; attn 0 own / 1 cuDNN's)
void BM_Train(benchmark::State& st) { guard(st, BM_Train_impl); }
BENCHMARK(BM_Train)
    ->ArgNames({"model", "graph", "attn"})
    ->Args({0, 0, 0})
    ->Args({0, 1, 0})
    ->Args({0, 1, 1})
    ->Args({1, 0, 0})
    ->Args({1, 1, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(12);
void BM_Infer(benchmark::State& st) { guard(st, BM_Infer_impl); }
BENCHMARK(BM_Infer)
    ->ArgNames({"model", "graph", "attn"})
    ->Args({0, 0, 0})
    ->Args({0, 1, 0})
    ->Args({0, 1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(20);
void BM_Latency(benchmark::State& st) { guard(st, BM_Latency_impl); }
BENCHMARK(BM_Latency)
    ->ArgNames({"model", "graph", "attn"})
    ->Args({0, 0, 0})
    ->Args({0, 1, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(100);

int main(int argc, char** argv) { return vit::bench::run_main(argc, argv); }
