// Benchmark of the fused attention kernels (kernels/cuda/attention.cu) at the ViT-B/16 training shape:
// B=256, H=12, N=197, Dh=64, bf16 (qkv (B, N, 3*768), out (B, N, 768)).
//
// Timing: cudaEvents around the launches only (Google Benchmark UseManualTime); before each repeat the
// L2 is flushed by writing a buffer twice its size (read from cudaDeviceProp). Before anything is timed
// the results are validated against the CPU reference (vit::cpu::attention_fwd/bwd, float) on a few
// heads; a mismatch is printed loudly, recorded in the JSON context ("validation": "FAILED") and makes
// the binary exit 1, but the timings still run (the GPU machine is lent rarely; a run must not be lost).
//
// FLOP convention (the one the flash-attention benchmarks and the PyTorch comparison in
// bench/attention_pytorch.py use): count matmul FLOPs of the algorithm, 2 per multiply-add, non-causal:
//   forward  = 4  * B*H*N^2*Dh   (S = Q K^T, O = P V)
//   backward = 10 * B*H*N^2*Dh   (S recomputed, dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q) = 2.5x fwd
//   fwd+bwd  = 14 * B*H*N^2*Dh   = 3.5x fwd
// Our deterministic backward recomputes S and dP a second time in its dQ pass (7 matmuls instead of 5);
// that extra work is NOT counted, so the figure is comparable with PyTorch's.
// Each result carries TFLOP/s, the card's dense bf16 tensor peak, and the fraction of it. Both bf16
// variants (kernels/cuda/attention_variant.cuh) are validated and timed: *_fast is what the engine runs.
//
// Run: build/bench_attention [--benchmark_format=json] [--benchmark_out=results.json]
// Without a GPU it prints "skipped: no CUDA device" and exits 0.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_cudnn.cuh"
#include "kernels/cuda/attention_variant.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cpu/ops.h"

namespace {

using bf16 = __nv_bfloat16;
constexpr int kB = 256, kH = 12, kN = 197, kDh = 64, kD = kH * kDh;

struct Bench {
  bf16 *qkv = nullptr, *out = nullptr, *dout = nullptr, *dqkv = nullptr;
  float *lse = nullptr, *scratch = nullptr;
  void* flush = nullptr;
  size_t flush_bytes = 0;
  cudaEvent_t start{}, stop{};
  double peak_tflops = 0;
  std::string card;
};
Bench g;

// Deterministic pseudo-random bf16 fill on the device: uniform on [-sqrt3, sqrt3) (unit variance).
__global__ void fill_kernel(bf16* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t z = uint32_t(i) * 0x9E3779B9u ^ seed ^ uint32_t(i >> 32) * 0x85EBCA6Bu;
    z ^= z >> 16;
    z *= 0x7FEB352Du;
    z ^= z >> 15;
    z *= 0x846CA68Bu;
    z ^= z >> 16;
    x[i] = __float2bfloat16_rn((float(z) * (1.0f / 4294967296.0f) * 2.f - 1.f) * 1.7320508f);
  }
}
void fill(bf16* x, size_t n, uint32_t seed) {
  fill_kernel<<<1024, 256>>>(x, n, seed);
  VIT_LAUNCH_CHECK();
}

// Dense bf16 tensor-core peak of the card (datasheet figures for the cards we run on; otherwise an
// estimate from SM count x clock x 4096 FLOP/clk/SM, the Hopper dense bf16 rate).
double bf16_peak_tflops(const cudaDeviceProp& p) {
  const std::string name = p.name;
  if (name.find("H200") != std::string::npos) return 989.4;
  if (name.find("H100") != std::string::npos) return p.multiProcessorCount >= 132 ? 989.4 : 756.0;  // SXM : PCIe
  int clock_khz = 0;
  VIT_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  return double(p.multiProcessorCount) * clock_khz * 1e3 * 4096 / 1e12;
}

// The own kernels, or cuDNN's fused attention (kernels/cuda/attention_cudnn.cpp) when g_cudnn is set.
bool g_cudnn = false;
void fwd() {
  const vit::AttnShape s{kB, kN, kH, kDh};
  if (g_cudnn)
    vit::cuda::attention_fwd_cudnn(g.qkv, g.out, g.lse, s, 0);
  else
    vit::cuda::attention_fwd<bf16>(g.qkv, g.out, g.lse, s, 0);
}
void bwd() {
  const vit::AttnShape s{kB, kN, kH, kDh};
  if (g_cudnn)
    vit::cuda::attention_bwd_cudnn(g.qkv, g.out, g.dout, g.lse, g.dqkv, s, 0);
  else
    vit::cuda::attention_bwd<bf16>(g.qkv, g.out, g.dout, g.lse, g.dqkv, g.scratch, s, 0);
}

std::vector<float> to_host(const bf16* d, size_t n) {
  std::vector<bf16> h(n);
  VIT_CHECK(cudaMemcpy(h.data(), d, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = __bfloat162float(h[i]);
  return f;
}

double rel_err(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += double(x[i] - ref[i]) * (x[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// Runs fwd + bwd of variant v once on the full shape (outputs poisoned first) and checks three heads
// against vit::cpu (float). bf16 outputs:
// relative error < 2e-2 (8-bit mantissa, a few roundings; a wrong index gives errors of order 1).
bool validate(vit::cuda::AttentionVariant v) {
  vit::cuda::set_attention_variant(v);
  VIT_CHECK(cudaMemset(g.out, 0xFF, (size_t)kB * kN * kD * sizeof(bf16)));  // poison: unwritten rows fail
  VIT_CHECK(cudaMemset(g.dqkv, 0xFF, (size_t)kB * kN * 3 * kD * sizeof(bf16)));
  fwd();
  bwd();
  VIT_CHECK(cudaDeviceSynchronize());
  vit::cuda::set_attention_variant(vit::cuda::AttentionVariant::kFast);
  const size_t n_qkv = (size_t)kB * kN * 3 * kD, n_out = (size_t)kB * kN * kD;
  const std::vector<float> qkv = to_host(g.qkv, n_qkv), out = to_host(g.out, n_out), dout = to_host(g.dout, n_out),
                           dqkv = to_host(g.dqkv, n_qkv);
  std::vector<float> lse((size_t)kB * kH * kN);
  VIT_CHECK(cudaMemcpy(lse.data(), g.lse, lse.size() * sizeof(float), cudaMemcpyDeviceToHost));

  bool ok = true;
  const int heads[3][2] = {{0, 0}, {kB / 2, 5}, {kB - 1, kH - 1}};
  for (const auto& bh : heads) {
    const int b = bh[0], h = bh[1];
    // (B, N, 3*D) -> this head as a (1, N, 3*Dh) problem with H = 1
    std::vector<float> q1((size_t)kN * 3 * kDh), o1((size_t)kN * kDh), do1((size_t)kN * kDh), probs((size_t)kN * kN),
        dq1((size_t)kN * 3 * kDh), got_o((size_t)kN * kDh), got_dq((size_t)kN * 3 * kDh), ref_lse(kN), got_lse(kN);
    for (int i = 0; i < kN; ++i) {
      for (int part = 0; part < 3; ++part)
        for (int d = 0; d < kDh; ++d) {
          const size_t src = ((size_t)b * kN + i) * 3 * kD + part * kD + h * kDh + d;
          q1[(size_t)i * 3 * kDh + part * kDh + d] = qkv[src];
          got_dq[(size_t)i * 3 * kDh + part * kDh + d] = dqkv[src];
        }
      for (int d = 0; d < kDh; ++d) {
        do1[(size_t)i * kDh + d] = dout[((size_t)b * kN + i) * kD + h * kDh + d];
        got_o[(size_t)i * kDh + d] = out[((size_t)b * kN + i) * kD + h * kDh + d];
      }
      got_lse[i] = lse[((size_t)b * kH + h) * kN + i];
    }
    vit::cpu::attention_fwd<float>(q1.data(), o1.data(), probs.data(), vit::AttnShape{1, kN, 1, kDh});
    vit::cpu::attention_bwd<float>(q1.data(), probs.data(), do1.data(), dq1.data(), vit::AttnShape{1, kN, 1, kDh});
    // lse from the saved probabilities and the scores: lse_i = s_ij - log p_ij for any j; use the row max.
    const float scale = 1.0f / std::sqrt(float(kDh));
    for (int i = 0; i < kN; ++i) {
      int jmax = 0;
      for (int j = 1; j < kN; ++j)
        if (probs[(size_t)i * kN + j] > probs[(size_t)i * kN + jmax]) jmax = j;
      float s = 0;
      for (int d = 0; d < kDh; ++d) s += q1[(size_t)i * 3 * kDh + d] * q1[(size_t)jmax * 3 * kDh + kDh + d];
      ref_lse[i] = s * scale - std::log(probs[(size_t)i * kN + jmax]);
    }
    const double e_o = rel_err(got_o, o1), e_l = rel_err(got_lse, ref_lse), e_d = rel_err(got_dq, dq1);
    const bool head_ok = e_o < 2e-2 && e_l < 1e-3 && e_d < 2e-2;  // lse is fp32 from bf16 inputs: ~1e-6
    std::printf("validate %-6s b=%3d h=%2d: rel err out %.3g lse %.3g dqkv %.3g %s\n",
                vit::cuda::attention_variant_name(v), b, h, e_o, e_l, e_d, head_ok ? "ok" : "FAILED");
    ok = ok && head_ok;
  }
  return ok;
}

void flush_l2() { VIT_CHECK(cudaMemsetAsync(g.flush, 0, g.flush_bytes, 0)); }

template <typename Launch>
void time_it(benchmark::State& st, double flops, Launch launch) {
  double total_s = 0;
  try {
    for (auto _ : st) {
      flush_l2();
      VIT_CHECK(cudaEventRecord(g.start, 0));
      launch();
      VIT_CHECK(cudaEventRecord(g.stop, 0));
      VIT_CHECK(cudaEventSynchronize(g.stop));
      float ms = 0;
      VIT_CHECK(cudaEventElapsedTime(&ms, g.start, g.stop));
      st.SetIterationTime(ms * 1e-3);
      total_s += ms * 1e-3;
    }
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
  const double tflops = flops * double(st.iterations()) / total_s / 1e12;
  st.counters["TFLOP/s"] = tflops;
  st.counters["peak_TFLOP/s"] = g.peak_tflops;
  st.counters["frac_of_peak"] = tflops / g.peak_tflops;
}

const double kFwdFlops = 4.0 * kB * kH * double(kN) * kN * kDh;

// One benchmark per (pass, variant); the variant is set before timing and restored to the default.
void register_all() {
  using vit::cuda::AttentionVariant;
  for (auto v : {AttentionVariant::kFast, AttentionVariant::kSimple}) {
    const std::string suffix = std::string("_bf16_") + vit::cuda::attention_variant_name(v);
    auto reg = [&](const std::string& name, double flops, void (*launch)()) {
      benchmark::RegisterBenchmark(name.c_str(),
                                   [v, flops, launch](benchmark::State& st) {
                                     vit::cuda::set_attention_variant(v);
                                     fwd();  // lse/out of this variant for the backward
                                     time_it(st, flops, launch);
                                     vit::cuda::set_attention_variant(AttentionVariant::kFast);
                                   })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    };
    reg("attention_fwd" + suffix, kFwdFlops, fwd);
    reg("attention_bwd" + suffix, 2.5 * kFwdFlops, bwd);
    reg("attention_fwdbwd" + suffix, 3.5 * kFwdFlops, [] {
      fwd();
      bwd();
    });
  }
  if (!vit::cuda::cudnn_attention_built()) return;
  auto reg_cudnn = [](const std::string& name, double flops, void (*launch)()) {
    benchmark::RegisterBenchmark(name.c_str(),
                                 [flops, launch](benchmark::State& st) {
                                   g_cudnn = true;
                                   fwd();  // builds the cached graphs before timing; lse for the backward
                                   bwd();
                                   time_it(st, flops, launch);
                                   g_cudnn = false;
                                 })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  };
  reg_cudnn("attention_fwd_bf16_cudnn", kFwdFlops, fwd);
  reg_cudnn("attention_bwd_bf16_cudnn", 2.5 * kFwdFlops, bwd);
  reg_cudnn("attention_fwdbwd_bf16_cudnn", 3.5 * kFwdFlops, [] {
    fwd();
    bwd();
  });
}

void setup() {
  cudaDeviceProp p{};
  VIT_CHECK(cudaGetDeviceProperties(&p, 0));
  if (p.major < 8)
    throw std::runtime_error(std::string(p.name) + " has compute capability < 8.0: no bf16 tensor cores");
  g.card = p.name;
  g.peak_tflops = bf16_peak_tflops(p);
  const size_t n_qkv = (size_t)kB * kN * 3 * kD, n_out = (size_t)kB * kN * kD, n_lse = (size_t)kB * kH * kN;
  VIT_CHECK(cudaMalloc(&g.qkv, n_qkv * sizeof(bf16)));
  VIT_CHECK(cudaMalloc(&g.dqkv, n_qkv * sizeof(bf16)));
  VIT_CHECK(cudaMalloc(&g.out, n_out * sizeof(bf16)));
  VIT_CHECK(cudaMalloc(&g.dout, n_out * sizeof(bf16)));
  VIT_CHECK(cudaMalloc(&g.lse, n_lse * sizeof(float)));
  VIT_CHECK(cudaMalloc(&g.scratch, n_lse * sizeof(float)));
  g.flush_bytes = 2 * (size_t)std::max(p.l2CacheSize, 1 << 20);
  VIT_CHECK(cudaMalloc(&g.flush, g.flush_bytes));
  VIT_CHECK(cudaEventCreate(&g.start));
  VIT_CHECK(cudaEventCreate(&g.stop));
  fill(g.qkv, n_qkv, 1234u);
  fill(g.dout, n_out, 5678u);
  VIT_CHECK(cudaDeviceSynchronize());
  std::printf("card: %s (%d SMs, L2 %d MB), dense bf16 peak %.1f TFLOP/s\n", p.name, p.multiProcessorCount,
              p.l2CacheSize >> 20, g.peak_tflops);
}

}  // namespace

int main(int argc, char** argv) {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("bench_attention: skipped: no CUDA device\n");
    return 0;
  }
  bool valid = false;
  try {
    setup();
    valid = validate(vit::cuda::AttentionVariant::kSimple);
    valid = validate(vit::cuda::AttentionVariant::kFast) && valid;
    if (vit::cuda::cudnn_attention_built()) {  // cuDNN's through the same check
      g_cudnn = true;
      valid = validate(vit::cuda::AttentionVariant::kFast) && valid;
      g_cudnn = false;
    }
    if (!valid) std::fprintf(stderr, "bench_attention: VALIDATION AGAINST THE CPU REFERENCE FAILED (timings follow)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("card", g.card);
  benchmark::AddCustomContext("validation", valid ? "ok" : "FAILED");
  benchmark::AddCustomContext("shape", "B=256 H=12 N=197 Dh=64 bf16");
  benchmark::AddCustomContext("flop_convention", "fwd 4*B*H*N^2*Dh, bwd 2.5x fwd, fwd+bwd 3.5x fwd");
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  VIT_CHECK_NOTHROW(cudaFree(g.qkv));
  VIT_CHECK_NOTHROW(cudaFree(g.dqkv));
  VIT_CHECK_NOTHROW(cudaFree(g.out));
  VIT_CHECK_NOTHROW(cudaFree(g.dout));
  VIT_CHECK_NOTHROW(cudaFree(g.lse));
  VIT_CHECK_NOTHROW(cudaFree(g.scratch));
  VIT_CHECK_NOTHROW(cudaFree(g.flush));
  return valid ? 0 : 1;
}
