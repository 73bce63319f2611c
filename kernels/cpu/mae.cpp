// The masked autoencoder's token ops on the CPU reference path (He et al. 2022, "Masked
// Autoencoders Are Scalable Vision Learners"): the encoder sees only the visible tokens (gather),
// the decoder sees every position again, hidden ones as a learned mask token (scatter), and the
// loss scores the reconstruction of the hidden patches only (masked_mse). Signatures and shapes:
// kernels/cpu/ops.h. Test: test_kernels --gtest_filter='Ops*Mae*'.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"

namespace vit::cpu {

template <typename T>
void gather_tokens_fwd(const T* x, const int* idx, T* y, int B, int N, int K, int D) {
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++)
    for (int k = 0; k < K; k++) {
      const T* src = x + ((size_t)b * N + idx[(size_t)b * K + k]) * D;
      T* dst = y + ((size_t)b * K + k) * D;
      for (int d = 0; d < D; d++) dst[d] = src[d];
    }
}

template <typename T>
void gather_tokens_bwd(const T* dy, const int* idx, T* dx, int B, int N, int K, int D) {
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++) {
    T* row = dx + (size_t)b * N * D;
    for (size_t i = 0; i < (size_t)N * D; i++) row[i] = T(0);  // rows nobody saw get no gradient
    for (int k = 0; k < K; k++) {
      const T* src = dy + ((size_t)b * K + k) * D;
      T* dst = row + (size_t)idx[(size_t)b * K + k] * D;
      for (int d = 0; d < D; d++) dst[d] += src[d];
    }
  }
}

template <typename T>
void scatter_tokens_fwd(const T* x, const int* idx, const T* fill, T* y, int B, int N, int K, int D) {
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++) {
    T* out = y + (size_t)b * N * D;
    for (int n = 0; n < N; n++)
      for (int d = 0; d < D; d++) out[(size_t)n * D + d] = fill[d];
    for (int k = 0; k < K; k++) {
      const T* src = x + ((size_t)b * K + k) * D;
      T* dst = out + (size_t)idx[(size_t)b * K + k] * D;
      for (int d = 0; d < D; d++) dst[d] = src[d];
    }
  }
}

template <typename T>
void scatter_tokens_bwd(const T* dy, const int* idx, T* dx, T* dfill, int B, int N, int K, int D) {
  std::vector<char> placed(N);
  for (int b = 0; b < B; b++) {  // serial over b: dfill accumulates in a fixed order
    const T* g = dy + (size_t)b * N * D;
    std::fill(placed.begin(), placed.end(), 0);
    for (int k = 0; k < K; k++) {
      const int n = idx[(size_t)b * K + k];
      placed[n] = 1;
      T* dst = dx + ((size_t)b * K + k) * D;
      for (int d = 0; d < D; d++) dst[d] = g[(size_t)n * D + d];
    }
    for (int n = 0; n < N; n++)
      if (!placed[n])
        for (int d = 0; d < D; d++) dfill[d] += g[(size_t)n * D + d];
  }
}

template <typename T>
void add_position_fwd(const T* x, const T* pos, T* y, int B, int N, int D) {
  const size_t per = (size_t)N * D;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++)
    for (size_t i = 0; i < per; i++) y[b * per + i] = x[b * per + i] + pos[i];
}

template <typename T>
void add_position_bwd(const T* dy, T* dpos, int B, int N, int D) {
  const size_t per = (size_t)N * D;
  for (int b = 0; b < B; b++)
    for (size_t i = 0; i < per; i++) dpos[i] += dy[b * per + i];
}

template <typename T>
void normalize_rows(T* x, T* mean, T* std, int R, int K, T eps) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; r++) {
    T* row = x + (size_t)r * K;
    double s = 0, ss = 0;  // double sums: a 768-value patch in float would lose the variance
    for (int k = 0; k < K; k++) s += row[k];
    const double m = s / K;
    for (int k = 0; k < K; k++) ss += (row[k] - m) * (row[k] - m);
    const double sd = std::sqrt(ss / (K > 1 ? K - 1 : 1) + double(eps));  // torch's var(): unbiased
    for (int k = 0; k < K; k++) row[k] = T((row[k] - m) / sd);
    if (mean) mean[r] = T(m);
    if (std) std[r] = T(sd);
  }
}

template <typename T>
T masked_mse_fwd(const T* pred, const T* target, const T* mask, int R, int K) {
  double num = 0, den = 0;
  for (int r = 0; r < R; r++) {
    den += mask[r];
    if (mask[r] == T(0)) continue;
    double e = 0;
    for (int k = 0; k < K; k++) {
      const double d = double(pred[(size_t)r * K + k]) - double(target[(size_t)r * K + k]);
      e += d * d;
    }
    num += mask[r] * e / K;
  }
  return den > 0 ? T(num / den) : T(0);
}

template <typename T>
void masked_mse_bwd(const T* pred, const T* target, const T* mask, T* dpred, int R, int K) {
  double den = 0;
  for (int r = 0; r < R; r++) den += mask[r];
  const double scale = den > 0 ? 2.0 / (double(K) * den) : 0.0;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; r++) {
    const double s = scale * double(mask[r]);
    for (int k = 0; k < K; k++) {
      const size_t i = (size_t)r * K + k;
      dpred[i] = T(s * (double(pred[i]) - double(target[i])));
    }
  }
}

#define VIT_INST(T)                                                                   \
  template void gather_tokens_fwd<T>(const T*, const int*, T*, int, int, int, int);   \
  template void gather_tokens_bwd<T>(const T*, const int*, T*, int, int, int, int);   \
  template void scatter_tokens_fwd<T>(const T*, const int*, const T*, T*, int, int, int, int); \
  template void scatter_tokens_bwd<T>(const T*, const int*, T*, T*, int, int, int, int);       \
  template void add_position_fwd<T>(const T*, const T*, T*, int, int, int);           \
  template void add_position_bwd<T>(const T*, T*, int, int, int);                     \
  template void normalize_rows<T>(T*, T*, T*, int, int, T);                           \
  template T masked_mse_fwd<T>(const T*, const T*, const T*, int, int);               \
  template void masked_mse_bwd<T>(const T*, const T*, const T*, T*, int, int);
VIT_INST(float)
VIT_INST(double)
#undef VIT_INST

}  // namespace vit::cpu
