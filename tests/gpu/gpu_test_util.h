// Helpers shared by the GPU tests (label gpu): skip without a device, fresh random inputs
// with the seed printed, device buffers poisoned with 0xFF bytes (NaN in fp32 and bf16) so
// that an element a kernel forgot to write fails the "fully written" check, and the
// llm.c-style comparison that prints the worst element and the first mismatches.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/model/vit_cuda.h"
#include "kernels/cuda/cuda_check.cuh"

#define VIT_REQUIRE_GPU()                                                \
  do {                                                                   \
    if (!vit::cuda_device_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

namespace vit::test {

// A fresh seed per test run (VIT_TEST_SEED=... reproduces one), printed so a failure can be replayed.
inline uint64_t fresh_seed() {
  uint64_t s;
  if (const char* e = std::getenv("VIT_TEST_SEED"))
    s = std::strtoull(e, nullptr, 10);
  else
    s = (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::printf("[ seed     ] %s.%s VIT_TEST_SEED=%llu\n", info ? info->test_suite_name() : "?",
              info ? info->name() : "?", (unsigned long long)s);
  return s;
}

struct Rng {
  std::mt19937_64 r;
  explicit Rng(uint64_t s) : r(s) {}
  std::vector<float> normal(size_t n, float sd = 1.f, float mean = 0.f) {
    std::normal_distribution<float> d(mean, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(r);
    return v;
  }
  std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(r);
    return v;
  }
  std::vector<int> labels(size_t n, int C) {
    std::uniform_int_distribution<int> d(0, C - 1);
    std::vector<int> v(n);
    for (auto& x : v) x = d(r);
    return v;
  }
};

// Round every value to what type T can hold, so CPU and GPU see the same inputs.
template <typename T>
inline std::vector<float> representable(std::vector<float> v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    for (auto& x : v) x = __bfloat162float(__float2bfloat16(x));
  return v;
}

// Device buffer of n elements of T, poisoned with 0xFF bytes at creation.
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) {
    VIT_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    poison();
  }
  DevBuf(const std::vector<float>& host) : DevBuf(host.size()) { upload(host); }
  ~DevBuf() { VIT_CHECK_NOTHROW(cudaFree(p)); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void poison() { VIT_CHECK(cudaMemset(p, 0xFF, n * sizeof(T))); }
  void upload(const std::vector<float>& h) {
    std::vector<T> t(h.size());
    for (size_t i = 0; i < h.size(); ++i) {
      if constexpr (std::is_same_v<T, float>)
        t[i] = h[i];
      else
        t[i] = __float2bfloat16(h[i]);
    }
    VIT_CHECK(cudaMemcpy(p, t.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<float> download() const {
    VIT_CHECK(cudaDeviceSynchronize());
    std::vector<T> t(n);
    VIT_CHECK(cudaMemcpy(t.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> h(n);
    for (size_t i = 0; i < n; ++i) {
      if constexpr (std::is_same_v<T, float>)
        h[i] = t[i];
      else
        h[i] = __bfloat162float(t[i]);
    }
    return h;
  }
  operator T*() const { return p; }
};

// Elementwise |got - ref| <= atol + rtol * |ref|, every element finite (written: the
// poison is NaN), not all zeros. Prints the worst element and the first mismatches.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double atol, double rtol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  size_t bad = 0, nonfinite = 0, worst = 0;
  double worst_excess = -1, maxdiff = 0;
  bool all_zero = true;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      if (nonfinite++ < 5) ADD_FAILURE() << what << ": element " << i << " not written / not finite: " << got[i];
      continue;
    }
    if (got[i] != 0.f) all_zero = false;
    const double d = std::fabs(double(got[i]) - ref[i]);
    const double lim = atol + rtol * std::fabs(double(ref[i]));
    maxdiff = std::max(maxdiff, d);
    if (d - lim > worst_excess) worst_excess = d - lim, worst = i;
    if (d > lim && bad++ < 5)
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " ref " << ref[i] << " diff " << d << " > "
                    << lim;
  }
  EXPECT_EQ(nonfinite, 0u) << what << ": " << nonfinite << " elements not written (poison NaN) or not finite";
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements out of tolerance; max |diff| "
                     << maxdiff << " (worst at " << worst << ")";
  bool ref_zero = true;
  for (float r : ref) ref_zero = ref_zero && r == 0.f;
  if (!ref_zero) EXPECT_FALSE(all_zero) << what << ": output is all zeros";
}

// ||got - ref||_2 / ||ref||_2 <= tol (for whole gradient tensors, where single elements can
// sit near cancellation), plus finiteness; prints max |diff|.
inline void expect_rel_l2(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                          const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double num = 0, den = 0, maxd = 0;
  size_t nonfinite = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ++nonfinite;
      continue;
    }
    const double d = double(got[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
    maxd = std::max(maxd, std::fabs(d));
  }
  EXPECT_EQ(nonfinite, 0u) << what << ": non-finite values";
  const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  EXPECT_LE(rel, tol) << what << ": relative L2 error " << rel << ", max |diff| " << maxd << ", ||ref|| "
                      << std::sqrt(den);
}

}  // namespace vit::test
