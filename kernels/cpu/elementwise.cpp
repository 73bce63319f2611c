// Elementwise ops, CPU reference: exact-erf GELU (float: vectorised erf, below), residual add, counter-hash dropout.
//   gelu(x)  = 0.5 x (1 + erf(x / sqrt 2))
//   gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x * exp(-x^2 / 2) / sqrt(2 pi)
// Dropout scales kept elements by 1/(1-p) (inverted dropout, as torch).
// Test: test_kernels --gtest_filter='Ops*'.
#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/ops.h"

namespace vit::cpu {

// float runs through Eigen's vectorised erf and exp (rational and polynomial approximations
// within a few ulp, the same erf as the inference path): libm's scalar erff was a tenth of the
// CPU training step. double keeps std::erf, so the float64 reference the tests use stays exact.
constexpr long long kChunk = 4096;  // elements per task: whole SIMD vectors, few tasks

template <typename T>
void gelu_fwd(const T* x, T* y, size_t n) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  if constexpr (std::is_same_v<T, float>) {
    const long long chunks = ((long long)n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (long long c = 0; c < chunks; c++) {
      const long long b = c * kChunk, m = std::min<long long>(kChunk, (long long)n - b);
      Eigen::Map<const Eigen::ArrayXf> X(x + b, m);
      Eigen::Map<Eigen::ArrayXf>(y + b, m) = 0.5f * X * (1.0f + (X * inv_sqrt2).erf());
    }
  } else {
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < (long long)n; i++) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * inv_sqrt2));
  }
}

template <typename T>
void gelu_bwd(const T* x, const T* dy, T* dx, size_t n) {
  const T inv_sqrt2 = T(0.70710678118654752440), inv_sqrt2pi = T(0.39894228040143267794);
  if constexpr (std::is_same_v<T, float>) {
    const long long chunks = ((long long)n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
    for (long long c = 0; c < chunks; c++) {
      const long long b = c * kChunk, m = std::min<long long>(kChunk, (long long)n - b);
      Eigen::Map<const Eigen::ArrayXf> X(x + b, m), DY(dy + b, m);
      // One expression: no temporaries allocated per chunk.
      Eigen::Map<Eigen::ArrayXf>(dx + b, m) =
          DY * (0.5f * (1.0f + (X * inv_sqrt2).erf()) + X * (inv_sqrt2pi * (-0.5f * X * X).exp()));
    }
  } else {
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < (long long)n; i++) {
      T cdf = T(0.5) * (T(1) + std::erf(x[i] * inv_sqrt2));
      T pdf = inv_sqrt2pi * std::exp(T(-0.5) * x[i] * x[i]);
      dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
  }
}

template <typename T>
void add_fwd(const T* a, const T* b, T* out, size_t n) {
#pragma omp parallel for schedule(static)
  for (long long i = 0; i < (long long)n; i++) out[i] = a[i] + b[i];
}

template <typename T>
void dropout_fwd(const T* x, T* y, size_t n, float p, uint64_t seed) {
  if (p <= 0.f) {
    if (y != x)
      for (size_t i = 0; i < n; i++) y[i] = x[i];
    return;
  }
  const T scale = T(1) / (T(1) - T(p));
#pragma omp parallel for schedule(static)
  for (long long i = 0; i < (long long)n; i++) y[i] = dropout_keep(seed, (uint64_t)i, p) ? x[i] * scale : T(0);
}

template <typename T>
void dropout_bwd(const T* dy, T* dx, size_t n, float p, uint64_t seed) {
  dropout_fwd(dy, dx, n, p, seed);  // the same mask and scale: d(mask * x * s)/dx = mask * s
}

template <typename T>
void drop_path(const T* x, T* y, int B, size_t per_sample, float p, uint64_t seed) {
  for (int b = 0; b < B; b++) {
    const T s = p <= 0.f ? T(1) : (dropout_keep(seed, (uint64_t)b, p) ? T(1) / (T(1) - T(p)) : T(0));
    const size_t o = (size_t)b * per_sample;
    for (size_t i = 0; i < per_sample; i++) y[o + i] = x[o + i] * s;
  }
}

#define VIT_INST(T)                                                    \
  template void gelu_fwd<T>(const T*, T*, size_t);                     \
  template void gelu_bwd<T>(const T*, const T*, T*, size_t);           \
  template void add_fwd<T>(const T*, const T*, T*, size_t);            \
  template void dropout_fwd<T>(const T*, T*, size_t, float, uint64_t); \
  template void dropout_bwd<T>(const T*, T*, size_t, float, uint64_t); \
  template void drop_path<T>(const T*, T*, int, size_t, float, uint64_t);
VIT_INST(float)
VIT_INST(double)
#undef VIT_INST

}  // namespace vit::cpu
