// Attention rollout; see rollout.h. Accumulates in double: L matrix products of
// row-stochastic matrices stay well conditioned, but N can be 197+ and the maps are
// compared against hand-computed values in tests/test_rollout.cpp.
#include "engine/eval/rollout.h"

#include <stdexcept>

namespace vit {

// A = 0.5 * mean_h(P) + 0.5 * I, rows renormalised. (H, N, N) -> (N, N).
static std::vector<double> residual_attention(const float* P, int H, int N) {
  std::vector<double> A(size_t(N) * N, 0.0);
  for (int h = 0; h < H; ++h)
    for (size_t i = 0; i < size_t(N) * N; ++i) A[i] += P[size_t(h) * N * N + i];
  for (int i = 0; i < N; ++i) {
    double s = 0;
    for (int j = 0; j < N; ++j) {
      double& a = A[size_t(i) * N + j];
      a = 0.5 * a / H + (i == j ? 0.5 : 0.0);
      s += a;
    }
    if (s > 0)
      for (int j = 0; j < N; ++j) A[size_t(i) * N + j] /= s;
  }
  return A;
}

static void check(const std::vector<const float*>& layers, int H, int N) {
  if (layers.empty() || H <= 0 || N <= 1) throw std::invalid_argument("rollout: need >= 1 layer, H >= 1, N >= 2");
  for (auto* p : layers)
    if (!p) throw std::invalid_argument("rollout: null attention layer");
}

std::vector<float> attention_rollout(const std::vector<const float*>& layers, int H, int N) {
  check(layers, H, N);
  std::vector<double> R = residual_attention(layers[0], H, N), T(size_t(N) * N);
  for (size_t l = 1; l < layers.size(); ++l) {
    std::vector<double> A = residual_attention(layers[l], H, N);
    // R <- A_l * R  (the newer layer multiplies from the left)
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < N; ++j) {
        double s = 0;
        for (int k = 0; k < N; ++k) s += A[size_t(i) * N + k] * R[size_t(k) * N + j];
        T[size_t(i) * N + j] = s;
      }
    R.swap(T);
  }
  return std::vector<float>(R.begin(), R.end());
}

std::vector<float> cls_rollout(const std::vector<const float*>& layers, int H, int N) {
  check(layers, H, N);
  std::vector<double> r(N, 0.0), t(N);
  r[0] = 1.0;
  for (size_t l = layers.size(); l-- > 0;) {
    std::vector<double> A = residual_attention(layers[l], H, N);
    // r <- r^T A_l
    std::fill(t.begin(), t.end(), 0.0);
    for (int k = 0; k < N; ++k) {
      if (r[k] == 0) continue;
      for (int j = 0; j < N; ++j) t[j] += r[k] * A[size_t(k) * N + j];
    }
    r.swap(t);
  }
  return std::vector<float>(r.begin() + 1, r.end());
}

std::vector<float> cls_attention(const float* layer, int H, int N, int head) {
  if (!layer || H <= 0 || N <= 1 || head >= H) throw std::invalid_argument("cls_attention: bad layer/head");
  std::vector<float> out(N - 1, 0.0f);
  int h0 = head < 0 ? 0 : head, h1 = head < 0 ? H : head + 1;
  for (int h = h0; h < h1; ++h)
    for (int j = 1; j < N; ++j) out[j - 1] += layer[size_t(h) * N * N + j];  // row 0 of head h
  if (head < 0)
    for (auto& v : out) v /= H;
  return out;
}

}  // namespace vit
