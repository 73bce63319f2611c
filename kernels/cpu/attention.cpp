// Multi-head scaled dot-product attention, CPU reference (non-causal).
// For each batch b and head h, with Q, K, V the (N, Dh) slices of qkv:
//   S = Q K^T / sqrt(Dh)            (N, N) scores
//   P = softmax_rows(S)             (N, N) probabilities   -> saved in `probs`
//   O = P V                         (N, Dh)                -> out[b, :, h*Dh : (h+1)*Dh]
// Backward, given dO:
//   dV = P^T dO
//   dP = dO V^T
//   dS = P * (dP - rowsum(dP * P))  (softmax Jacobian, row by row)
//   dQ = dS K / sqrt(Dh),  dK = dS^T Q / sqrt(Dh)
// docs/attention.md walks through these steps with shapes.
// Test: test_kernels --gtest_filter='Ops*Attention*'.
#include <cmath>

#include "kernels/cpu/eigen_util.h"
#include "kernels/cpu/ops.h"

namespace vit::cpu {

template <typename T>
void attention_fwd(const T* qkv, T* out, T* probs, const AttnShape& shape) {
  const int B = shape.B, N = shape.N, H = shape.H, Dh = shape.Dh;
  const int D = H * Dh, ld = 3 * D;  // (B, N, 3*D) -> per head: Q, K, V (N, Dh) with row stride 3*D
  const T scale = T(1) / std::sqrt(T(Dh));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      const T* base = qkv + (size_t)b * N * ld;
      CSMapM<T> Q(base + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      CSMapM<T> K(base + D + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      CSMapM<T> V(base + 2 * D + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      MapM<T> P(probs + ((size_t)b * H + h) * N * N, N, N);
      P.noalias() = (Q * K.transpose()) * scale;
      for (int i = 0; i < N; i++) {  // numerically stable softmax per row
        T mx = P.row(i).maxCoeff();
        P.row(i) = (P.row(i).array() - mx).exp();
        P.row(i) /= P.row(i).sum();
      }
      SMapM<T> O(out + (size_t)b * N * D + h * Dh, N, Dh, Eigen::OuterStride<>(D));
      O.noalias() = P * V;
    }
  }
}

template <typename T>
void attention_bwd(const T* qkv, const T* probs, const T* dout, T* dqkv, const AttnShape& shape) {
  const int B = shape.B, N = shape.N, H = shape.H, Dh = shape.Dh;
  const int D = H * Dh, ld = 3 * D;
  const T scale = T(1) / std::sqrt(T(Dh));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      const T* base = qkv + (size_t)b * N * ld;
      T* dbase = dqkv + (size_t)b * N * ld;
      CSMapM<T> Q(base + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      CSMapM<T> K(base + D + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      CSMapM<T> V(base + 2 * D + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      CMapM<T> P(probs + ((size_t)b * H + h) * N * N, N, N);
      CSMapM<T> dO(dout + (size_t)b * N * D + h * Dh, N, Dh, Eigen::OuterStride<>(D));
      SMapM<T> dQ(dbase + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      SMapM<T> dK(dbase + D + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      SMapM<T> dV(dbase + 2 * D + h * Dh, N, Dh, Eigen::OuterStride<>(ld));
      dV.noalias() = P.transpose() * dO;
      RowMat<T> dS = dO * V.transpose();  // dP
      for (int i = 0; i < N; i++) {
        T dot = P.row(i).dot(dS.row(i));
        dS.row(i) = P.row(i).cwiseProduct((dS.row(i).array() - dot).matrix());
      }
      dQ.noalias() = (dS * K) * scale;
      dK.noalias() = (dS.transpose() * Q) * scale;
    }
  }
}

template void attention_fwd<float>(const float*, float*, float*, const AttnShape&);
template void attention_fwd<double>(const double*, double*, double*, const AttnShape&);
template void attention_bwd<float>(const float*, const float*, const float*, float*, const AttnShape&);
template void attention_bwd<double>(const double*, const double*, const double*, double*, const AttnShape&);

}  // namespace vit::cpu
