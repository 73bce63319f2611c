// Shared by the CUDA benchmarks: device check, cudaEvent timing with manual time, an L2
// flush before every timed repeat, the card's ceilings, and a main() that prints
// "skipped: no CUDA device" and exits 0 on a machine without a GPU.
//
// Counters (plain values, computed here from the summed event time, so they do not depend
// on Google Benchmark's rate handling): GB/s or TFLOP/s, and next to them the card's
// ceiling (peak_*) and the fraction reached (of_peak). The bf16 "practical" ceiling is the
// measured 8192^3 GEMM of ../shared/ANCHORS.md: 788 TFLOP/s on an H200.
#pragma once
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>
#include <functional>
#include <string>

#include "engine/util/rng.h"
#include "engine/model/vit_cuda.h"
#include "kernels/cuda/cuda_check.cuh"

namespace vit::bench {

struct Card {
  std::string name;
  double peak_tbs = 0;          // HBM bandwidth, TB/s (datasheet)
  double peak_bf16_tflops = 0;  // dense bf16 tensor-core peak (datasheet)
  size_t l2_bytes = 0;
};

inline const Card& card() {
  static Card c = [] {
    Card k;
    cudaDeviceProp p{};
    VIT_CHECK(cudaGetDeviceProperties(&p, 0));
    k.name = p.name;
    k.l2_bytes = size_t(p.l2CacheSize);
    const std::string n = p.name;
    if (n.find("H200") != std::string::npos)
      k.peak_tbs = 4.8, k.peak_bf16_tflops = 989;
    else if (n.find("H100") != std::string::npos && n.find("PCIe") != std::string::npos)
      k.peak_tbs = 2.0, k.peak_bf16_tflops = 756;
    else if (n.find("H100") != std::string::npos)
      k.peak_tbs = 3.35, k.peak_bf16_tflops = 989;
    else if (n.find("A100") != std::string::npos)
      k.peak_tbs = 2.0, k.peak_bf16_tflops = 312;
    return k;
  }();
  return c;
}

// Writes 2x the L2 size so nothing of the previous repeat stays cached.
class L2Flush {
 public:
  L2Flush() {
    bytes_ = std::max<size_t>(card().l2_bytes * 2, size_t(64) << 20);
    VIT_CHECK(cudaMalloc(&buf_, bytes_));
  }
  ~L2Flush() { VIT_CHECK_NOTHROW(cudaFree(buf_)); }
  void flush(cudaStream_t s) { VIT_CHECK(cudaMemsetAsync(buf_, 0, bytes_, s)); }

 private:
  void* buf_ = nullptr;
  size_t bytes_ = 0;
};

// Times fn() with cudaEvents once per benchmark iteration (after an L2 flush unless
// flush == false) and reports the manual time. Returns the summed seconds.
inline double time_loop(benchmark::State& state, cudaStream_t s, const std::function<void()>& fn, bool flush = true) {
  static L2Flush* l2 = new L2Flush();  // lives for the process
  cudaEvent_t a, b;
  VIT_CHECK(cudaEventCreate(&a));
  VIT_CHECK(cudaEventCreate(&b));
  fn();  // warm-up (plans, caches of the library)
  VIT_CHECK(cudaStreamSynchronize(s));
  double total = 0;
  for (auto _ : state) {
    if (flush) l2->flush(s);
    VIT_CHECK(cudaEventRecord(a, s));
    fn();
    VIT_CHECK(cudaEventRecord(b, s));
    VIT_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    VIT_CHECK(cudaEventElapsedTime(&ms, a, b));
    state.SetIterationTime(ms * 1e-3);
    total += ms * 1e-3;
  }
  VIT_CHECK(cudaEventDestroy(a));
  VIT_CHECK(cudaEventDestroy(b));
  return total;
}

inline void report_bandwidth(benchmark::State& st, double bytes_per_iter, double total_s) {
  const double tbs = bytes_per_iter * double(st.iterations()) / total_s / 1e12;
  st.counters["TB/s"] = tbs;
  st.counters["peak_TB/s"] = card().peak_tbs;
  if (card().peak_tbs > 0) st.counters["of_peak"] = tbs / card().peak_tbs;
  st.counters["us"] = total_s / double(st.iterations()) * 1e6;
}
inline void report_flops(benchmark::State& st, double flops_per_iter, double total_s) {
  const double tf = flops_per_iter * double(st.iterations()) / total_s / 1e12;
  st.counters["TFLOP/s"] = tf;
  st.counters["peak_TFLOP/s"] = card().peak_bf16_tflops;
  if (card().peak_bf16_tflops > 0) st.counters["of_peak"] = tf / card().peak_bf16_tflops;
  st.counters["us"] = total_s / double(st.iterations()) * 1e6;
}

// Runs a benchmark body; a thrown error (a CUDA/cuBLAS failure, a model that does not fit)
// marks this benchmark as failed instead of terminating the binary and losing the others.
template <typename F>
inline void guard(benchmark::State& st, F body) {
  try {
    body(st);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    cudaGetLastError();
  }
}

inline int run_main(int argc, char** argv) {
  if (!vit::cuda_device_available()) {
    std::printf("skipped: no CUDA device\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("card", card().name);
  benchmark::AddCustomContext("peak_TB/s", std::to_string(card().peak_tbs));
  benchmark::AddCustomContext("peak_bf16_TFLOP/s", std::to_string(card().peak_bf16_tflops));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace vit::bench

namespace vit::bench {

// Deterministic pseudo-random fill on the device (same splitmix hash as the dropout mask):
// x[i] = shift + scale * u, u uniform in [-1, 1). Avoids generating 100M values on the host.
template <typename T>
__global__ void fill_uniform_kernel(T* x, size_t n, uint64_t seed, float scale, float shift) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint64_t z = vit::splitmix64_at(seed, i);
    const float u = float(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
    x[i] = T(shift + scale * u);
  }
}
template <typename T>
inline void fill_uniform(T* x, size_t n, uint64_t seed, float scale = 1.f, float shift = 0.f) {
  fill_uniform_kernel<T><<<1024, 256>>>(x, n, seed, scale, shift);
  VIT_LAUNCH_CHECK();
}

// Copy count elements starting at offset back to the host as floats.
template <typename T>
inline std::vector<float> fetch(const T* d, size_t offset, size_t count) {
  std::vector<T> t(count);
  VIT_CHECK(cudaDeviceSynchronize());
  VIT_CHECK(cudaMemcpy(t.data(), d + offset, count * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> f(count);
  for (size_t i = 0; i < count; ++i) f[i] = float(t[i]);
  return f;
}

// Device buffer for the benchmarks (RAII).
template <typename T>
struct Buf {
  T* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t count) : n(count) { VIT_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T))); }
  ~Buf() { VIT_CHECK_NOTHROW(cudaFree(p)); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  operator T*() const { return p; }
};

inline bool close(double got, double ref, double atol, double rtol) {
  return std::isfinite(got) && std::fabs(got - ref) <= atol + rtol * std::fabs(ref);
}

}  // namespace vit::bench
