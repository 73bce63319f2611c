// LayerNorm over the last dimension, CPU reference.
//   forward:  mu = mean(x), rstd = 1/sqrt(var(x) + eps), xhat = (x - mu) * rstd, y = xhat * w + b
//   backward: g = dy * w;  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
//             dw += sum_rows dy * xhat;  db += sum_rows dy
// Statistics are accumulated in double even for float inputs so that the reference
// is not the weak link. Test: test_kernels --gtest_filter='Ops*LayerNorm*'.
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace vit::cpu {

template <typename T>
void layernorm_fwd(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int R, int C, T eps) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; r++) {
    const T* xr = x + (size_t)r * C;
    double s = 0, s2 = 0;
    for (int c = 0; c < C; c++) s += xr[c];
    double mu = s / C;
    for (int c = 0; c < C; c++) {
      double d = xr[c] - mu;
      s2 += d * d;
    }
    double rs = 1.0 / std::sqrt(s2 / C + (double)eps);  // biased variance, as torch
    T* yr = y + (size_t)r * C;
    for (int c = 0; c < C; c++) yr[c] = (T)((xr[c] - mu) * rs) * w[c] + b[c];
    if (mean) mean[r] = (T)mu;
    if (rstd) rstd[r] = (T)rs;
  }
}

template <typename T>
void layernorm_bwd(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, T* dx, T* dw, T* db, int R,
                   int C) {
  // Parameter gradients: each thread accumulates into its own slot, then the slots are
  // added in thread order, so the result does not depend on scheduling (resumable runs
  // must reproduce bit for bit).
  int nt = 1;
#ifdef _OPENMP
  nt = omp_get_max_threads();
#endif
  std::vector<double> part((size_t)nt * 2 * C, 0.0);
#pragma omp parallel
  {
    int t = 0;
#ifdef _OPENMP
    t = omp_get_thread_num();
#endif
    double* pdw = part.data() + (size_t)t * 2 * C;
    double* pdb = pdw + C;
#pragma omp for schedule(static)
    for (int r = 0; r < R; r++) {
      const T* xr = x + (size_t)r * C;
      const T* dyr = dy + (size_t)r * C;
      double mu = mean[r], rs = rstd[r];
      double sg = 0, sgx = 0;
      for (int c = 0; c < C; c++) {
        double xhat = (xr[c] - mu) * rs;
        double g = (double)dyr[c] * w[c];
        sg += g;
        sgx += g * xhat;
        pdw[c] += (double)dyr[c] * xhat;
        pdb[c] += dyr[c];
      }
      sg /= C;
      sgx /= C;
      T* dxr = dx + (size_t)r * C;
      for (int c = 0; c < C; c++) {
        double xhat = (xr[c] - mu) * rs;
        dxr[c] = (T)(rs * ((double)dyr[c] * w[c] - sg - xhat * sgx));
      }
    }
  }
  for (int c = 0; c < C; c++) {
    double sw = 0, sb = 0;
    for (int t = 0; t < nt; t++) {
      sw += part[(size_t)t * 2 * C + c];
      sb += part[(size_t)t * 2 * C + C + c];
    }
    dw[c] += (T)sw;
    db[c] += (T)sb;
  }
}

template void layernorm_fwd<float>(const float*, const float*, const float*, float*, float*, float*, int, int, float);
template void layernorm_fwd<double>(const double*, const double*, const double*, double*, double*, double*, int, int,
                                    double);
template void layernorm_bwd<float>(const float*, const float*, const float*, const float*, const float*, float*, float*,
                                   float*, int, int);
template void layernorm_bwd<double>(const double*, const double*, const double*, const double*, const double*, double*,
                                    double*, double*, int, int);

}  // namespace vit::cpu
