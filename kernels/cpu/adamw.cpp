// AdamW (Loshchilov & Hutter 2019) over a whole parameter arena, CPU reference.
// Same update as torch.optim.AdamW:
//   g  = grad * grad_scale
//   p *= 1 - lr * wd                       (decoupled decay; first n_decay values only)
//   m  = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Test: test_kernels --gtest_filter='Ops*AdamW*'.
#include <cmath>

#include "kernels/cpu/ops.h"

namespace vit::cpu {

template <typename T>
void adamw_step(T* p, const T* g, T* m, T* v, size_t n, size_t n_decay, const AdamWParams& hp) {
  const double bc1 = 1.0 - std::pow((double)hp.beta1, hp.step);
  const double bc2 = 1.0 - std::pow((double)hp.beta2, hp.step);
  const T step_size = (T)(hp.lr / bc1), bc2_sqrt = (T)std::sqrt(bc2);
  const T b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps, gs = hp.grad_scale;
  const T decay = (T)(1.0 - (double)hp.lr * hp.weight_decay);
#pragma omp parallel for schedule(static)
  for (long long i = 0; i < (long long)n; i++) {
    T gi = g[i] * gs;
    if ((size_t)i < n_decay) p[i] *= decay;
    m[i] = b1 * m[i] + (T(1) - b1) * gi;
    v[i] = b2 * v[i] + (T(1) - b2) * gi * gi;
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

template <typename T>
double sum_squares(const T* x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];  // serial: deterministic order
  return s;
}

template void adamw_step<float>(float*, const float*, float*, float*, size_t, size_t, const AdamWParams&);
template void adamw_step<double>(double*, const double*, double*, double*, size_t, size_t, const AdamWParams&);
template double sum_squares<float>(const float*, size_t);
template double sum_squares<double>(const double*, size_t);

}  // namespace vit::cpu
