// The inference path's fused float ops (infer.h): a linear layer with its bias, GELU or residual
// applied while the block is still in cache, LayerNorm without saved statistics, and attention
// over a tile of query rows. Serial on purpose: the model's forward hands each thread its rows.
// Test: test_kernels --gtest_filter='Infer*'.
#include "kernels/cpu/infer.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unsupported/Eigen/SpecialFunctions>  // vectorised erf (a rational approximation)

#include "kernels/cpu/eigen_util.h"
#if VIT_HAVE_AMX
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels/cpu/gemm_amx.h"
#endif

namespace vit::cpu {

using RowVec = Eigen::Map<const Eigen::Matrix<float, 1, Eigen::Dynamic>>;

// The epilogue after the product: + b, then GELU (exact-erf form) if asked.
static void add_bias(MapM<float>& Y, const float* b, Epilogue e) {
  if (b) Y.rowwise() += RowVec(b, Y.cols());
  if (e == Epilogue::gelu) {
    auto A = Y.array();
    A = 0.5f * A * (1.0f + (A * 0.70710678118654752f).erf());
  }
}

void linear_rows(const float* x, const float* w, const float* b, float* y, int M, int K, int N, Epilogue e) {
  CMapM<float> X(x, M, K), W(w, N, K);
  MapM<float> Y(y, M, N);
  if (e == Epilogue::accumulate)
    Y.noalias() += X * W.transpose();
  else
    Y.noalias() = X * W.transpose();
  add_bias(Y, b, e);
}

void layernorm_rows(const float* x, const float* w, const float* b, float* y, int R, int C, float eps) {
  // Eigen's reductions are vectorised; a plain float loop is not (no reassociation without -ffast-math).
  const Eigen::Map<const Eigen::ArrayXf> W(w, C), Bias(b, C);
  for (int r = 0; r < R; r++) {
    const Eigen::Map<const Eigen::ArrayXf> xr(x + (size_t)r * C, C);
    const float mu = xr.mean();
    const float var = (xr - mu).square().mean();   // two passes: no cancellation when |mean| >> std
    const float rs = 1.0f / std::sqrt(var + eps);  // biased variance, as torch
    Eigen::Map<Eigen::ArrayXf>(y + (size_t)r * C, C) = (xr - mu) * rs * W + Bias;
  }
}

void attention_rows(const float* qkv, float* out, const AttnShape& s, int b, int h, int q0, int q1, float* scores) {
  const int N = s.N, Dh = s.Dh, D = s.D(), ld = 3 * D, T = q1 - q0;
  const float* base = qkv + (size_t)b * N * ld;  // (N, 3D) -> per head Q, K, V (N, Dh), row stride 3D
  CSMapM<float> Q(base + (size_t)q0 * ld + h * Dh, T, Dh, Eigen::OuterStride<>(ld));
  CSMapM<float> K(base + D + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
  CSMapM<float> V(base + 2 * D + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
  MapM<float> S(scores, T, N);
  S.noalias() = (Q * K.transpose()) * (1.0f / std::sqrt((float)Dh));
  for (int i = 0; i < T; i++) {  // stable softmax per row
    auto row = S.row(i).array();
    row = (row - row.maxCoeff()).exp();
    row /= row.sum();
  }
  SMapM<float> O(out + ((size_t)b * N + q0) * D + h * Dh, T, Dh, Eigen::OuterStride<>(D));
  O.noalias() = S * V;
}

// ---- bf16 on the tile units ----

bool amx_bf16_available() {
#if VIT_HAVE_AMX
  // The CPU must list AMX-TILE and AMX-BF16, and Linux hands out the 8 KB of tile state only to a
  // process that asks for it (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA = 18).
  static const bool ok = [] {
    if (!__builtin_cpu_supports("avx512bf16")) return false;
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    const bool tiles = (d >> 24 & 1) && (d >> 22 & 1);  // AMX-TILE, AMX-BF16
    return tiles && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

static uint16_t to_bf16(float f) {  // round to nearest even (finite inputs: weights)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

PackedBF16 pack_bf16(const float* w, int N, int K) {
  if (K % 32 || N % 16)
    throw std::invalid_argument("pack_bf16: need K % 32 == 0 and N % 16 == 0, got N = " + std::to_string(N) +
                                ", K = " + std::to_string(K));
  PackedBF16 p;
  p.N = N, p.K = K;
  p.data.resize((size_t)N * K);
  // (N, K) -> N/16 panels of (K/2, 16, 2): element (n, k) at panel n/16, row k/2, column n%16, slot k%2
  for (int n = 0; n < N; n++)
    for (int k = 0; k < K; k++)
      p.data[(((size_t)(n / 16) * (K / 2) + k / 2) * 16 + n % 16) * 2 + k % 2] = to_bf16(w[(size_t)n * K + k]);
  return p;
}

void linear_rows_bf16(const float* x, const PackedBF16& w, const float* b, float* y, int M, Epilogue e, uint16_t* xs) {
#if VIT_HAVE_AMX
  amx::matmul_bf16(x, w.data.data(), y, M, w.K, w.N, e == Epilogue::accumulate, xs);
  MapM<float> Y(y, M, w.N);
  add_bias(Y, b, e);
#else
  (void)x, (void)w, (void)b, (void)y, (void)M, (void)e, (void)xs;
  throw std::logic_error("linear_rows_bf16: built without AMX support");
#endif
}

}  // namespace vit::cpu
