// Eigen maps over raw row-major buffers, shared by the CPU ops.
#pragma once
#include <Eigen/Dense>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace vit::cpu {
template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MapM = Eigen::Map<RowMat<T>>;
template <typename T>
using CMapM = Eigen::Map<const RowMat<T>>;
// A row-major view whose rows are `stride` elements apart (a column slice of a wider matrix).
template <typename T>
using SMapM = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using CSMapM = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;

// Split [0, n) into nearly equal contiguous chunks, one per OpenMP thread: each thread
// runs one GEMM on its chunk, which keeps Eigen's single-threaded kernels fully busy.
template <typename F>
inline void parallel_chunks(int n, F&& f) {
#pragma omp parallel
  {
#ifdef _OPENMP
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
    int nt = 1, t = 0;
#endif
    int lo = (int)((long long)n * t / nt), hi = (int)((long long)n * (t + 1) / nt);
    if (hi > lo) f(lo, hi);
  }
}
}  // namespace vit::cpu
