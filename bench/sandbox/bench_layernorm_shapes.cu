// Sandbox: every LayerNorm forward launch shape under study (layernorm_fwd_shapes.cuh), each
// validated before it is timed, on a ViT-B/16 batch-256 activation (50,432 x 768 bf16, L2 flushed
// between repeats). Validation: rows against the CPU reference (kernels/cpu), and every row's
// bits against the library's default launch shape. The fastest shape that matches is the one to
// make the default in kernels/cuda/layernorm.cuh.
//   build/bench_layernorm_shapes [--benchmark_format=json]
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/layernorm.cu"  // the kernels and their launch templates, compiled into this binary
#include "bench/sandbox/layernorm_fwd_shapes.cuh"
#include "engine/util/rng.h"
#include "kernels/cpu/ops.h"

namespace {
using bf16 = __nv_bfloat16;
constexpr int kRows = 256 * 197, kCols = 768;

template <typename T>
struct DevBuf {
  T* p = nullptr;
  explicit DevBuf(size_t n) { VIT_CHECK(cudaMalloc(&p, n * sizeof(T))); }
  ~DevBuf() { VIT_CHECK_NOTHROW(cudaFree(p)); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

std::vector<float> host_values(size_t n, uint64_t seed, float scale, float shift) {
  std::vector<float> v(n);
  vit::Rng r(seed);
  for (auto& x : v) x = shift + scale * (2.f * float(r.uniform()) - 1.f);
  return v;
}

// Times shape `shape` (-1: the library's layernorm_fwd) and reports TB/s; errors skip the row.
void run_shape(benchmark::State& st, int shape) {
  const size_t n = size_t(kRows) * kCols;
  std::vector<float> hx = host_values(n, 1, 2.f, 0.3f), hw = host_values(kCols, 2, 0.2f, 1.f),
                     hb = host_values(kCols, 3, 0.1f, 0.f);
  std::vector<bf16> hxb(n);
  for (size_t i = 0; i < n; ++i) hxb[i] = __float2bfloat16(hx[i]), hx[i] = __bfloat162float(hxb[i]);
  DevBuf<bf16> x(n), y(n), y_lib(n);
  DevBuf<float> w(kCols), b(kCols), mean(kRows), rstd(kRows);
  DevBuf<char> flush(size_t(256) << 20);  // larger than any L2
  VIT_CHECK(cudaMemcpy(x.p, hxb.data(), n * 2, cudaMemcpyHostToDevice));
  VIT_CHECK(cudaMemcpy(w.p, hw.data(), kCols * 4, cudaMemcpyHostToDevice));
  VIT_CHECK(cudaMemcpy(b.p, hb.data(), kCols * 4, cudaMemcpyHostToDevice));
  auto launch = [&](bf16* out) {
    if (shape < 0)
      vit::cuda::layernorm_fwd<bf16>(x.p, w.p, b.p, out, mean.p, rstd.p, kRows, kCols, 1e-6f, nullptr);
    else
      vit::cuda::layernorm_fwd_shape<bf16>(shape, x.p, w.p, b.p, out, mean.p, rstd.p, kRows, kCols, 1e-6f, nullptr);
  };
  // validate: every bit as the library's default, and a few rows against the CPU reference
  vit::cuda::layernorm_fwd<bf16>(x.p, w.p, b.p, y_lib.p, mean.p, rstd.p, kRows, kCols, 1e-6f, nullptr);
  VIT_CHECK(cudaMemset(y.p, 0xFF, n * 2));  // NaN: an unwritten row fails below
  launch(y.p);
  std::vector<bf16> got(n), want(n);
  VIT_CHECK(cudaMemcpy(got.data(), y.p, n * 2, cudaMemcpyDeviceToHost));
  VIT_CHECK(cudaMemcpy(want.data(), y_lib.p, n * 2, cudaMemcpyDeviceToHost));
  if (std::memcmp(got.data(), want.data(), n * 2) != 0) return st.SkipWithError("not bitwise the library's output");
  for (int r : {0, 3, kRows / 2, kRows - 1}) {
    std::vector<float> ref(kCols), m(1), rs(1);
    vit::cpu::layernorm_fwd<float>(hx.data() + size_t(r) * kCols, hw.data(), hb.data(), ref.data(), m.data(), rs.data(),
                                   1, kCols, 1e-6f);
    for (int c = 0; c < kCols; ++c) {
      const double g = __bfloat162float(got[size_t(r) * kCols + c]), e = ref[c];
      if (!(std::abs(g - e) <= 2e-2 + 1e-2 * std::abs(e))) return st.SkipWithError("differs from the CPU reference");
    }
  }
  cudaEvent_t t0, t1;
  VIT_CHECK(cudaEventCreate(&t0));
  VIT_CHECK(cudaEventCreate(&t1));
  double total = 0;
  for (auto _ : st) {
    VIT_CHECK(cudaMemset(flush.p, 0, size_t(256) << 20));
    VIT_CHECK(cudaEventRecord(t0));
    launch(y.p);
    VIT_CHECK(cudaEventRecord(t1));
    VIT_CHECK(cudaEventSynchronize(t1));
    float ms = 0;
    VIT_CHECK(cudaEventElapsedTime(&ms, t0, t1));
    st.SetIterationTime(ms / 1e3);
    total += ms / 1e3;
  }
  VIT_CHECK(cudaEventDestroy(t0));
  VIT_CHECK(cudaEventDestroy(t1));
  // read x and write y (bf16), write mean and rstd (fp32); w and b stay in cache
  const double bytes = double(n) * 2 * 2 + double(kRows) * 8;
  st.counters["TB/s"] = benchmark::Counter(bytes * double(st.iterations()) / total / 1e12);
  st.SetLabel(shape < 0 ? std::string("library default (") +
                              vit::cuda::layernorm_fwd_variant_name(vit::cuda::kLayerNormFwdDefault) + ")"
                        : vit::cuda::kLayerNormShapes[shape].name);
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("skipped: no CUDA device\n");
    return 0;
  }
  benchmark::RegisterBenchmark("BM_LayerNormShape/library", [](benchmark::State& st) { run_shape(st, -1); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond)
      ->Iterations(50);
  for (int s = 0; s < vit::cuda::kNumLayerNormShapes; ++s)
    benchmark::RegisterBenchmark((std::string("BM_LayerNormShape/") + vit::cuda::kLayerNormShapes[s].name).c_str(),
                                 [s](benchmark::State& st) { run_shape(st, s); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->Iterations(50);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
