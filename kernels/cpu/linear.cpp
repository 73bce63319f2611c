// Linear layer, CPU reference: y = x w^T + b with torch's (out, in) weight layout.
// The GEMMs go to Eigen; rows are split across OpenMP threads (see parallel_chunks).
// Test: test_kernels --gtest_filter='Ops*Linear*'.
#include "kernels/cpu/eigen_util.h"
#include "kernels/cpu/ops.h"

namespace vit::cpu {

template <typename T>
void linear_fwd(const T* x, const T* w, const T* b, T* y, int M, int K, int N) {
  CMapM<T> W(w, N, K);
  parallel_chunks(M, [&](int lo, int hi) {
    CMapM<T> X(x + (size_t)lo * K, hi - lo, K);
    MapM<T> Y(y + (size_t)lo * N, hi - lo, N);
    Y.noalias() = X * W.transpose();
    if (b) Y.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b, N);
  });
}

template <typename T>
void linear_bwd(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int M, int K, int N) {
  CMapM<T> W(w, N, K), X(x, M, K), DY(dy, M, N);
  if (dx) {
    // dx (M, K) = dy (M, N) @ w (N, K)
    parallel_chunks(M, [&](int lo, int hi) {
      MapM<T> DX(dx + (size_t)lo * K, hi - lo, K);
      DX.noalias() = DY.middleRows(lo, hi - lo) * W;
    });
  }
  // dw (N, K) += dy^T (N, M) @ x (M, K); each thread owns a band of output rows.
  parallel_chunks(N, [&](int lo, int hi) {
    MapM<T> DW(dw + (size_t)lo * K, hi - lo, K);
    DW.noalias() += DY.middleCols(lo, hi - lo).transpose() * X;
    if (db) {
      for (int n = lo; n < hi; n++) {
        T s = 0;
        for (int m = 0; m < M; m++) s += dy[(size_t)m * N + n];
        db[n] += s;
      }
    }
  });
}

template void linear_fwd<float>(const float*, const float*, const float*, float*, int, int, int);
template void linear_fwd<double>(const double*, const double*, const double*, double*, int, int, int);
template void linear_bwd<float>(const float*, const float*, const float*, float*, float*, float*, int, int, int);
template void linear_bwd<double>(const double*, const double*, const double*, double*, double*, double*, int, int, int);

}  // namespace vit::cpu
