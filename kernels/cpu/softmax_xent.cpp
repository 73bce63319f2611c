// Softmax cross-entropy with label smoothing, CPU reference, mean over the batch.
// With target t = (1 - s) onehot(y) + s / C and log-probabilities lp = log_softmax(z):
//   loss_b = -sum_c t_c lp_c          (torch.nn.functional.cross_entropy(label_smoothing=s))
//   dz_b   = (softmax(z) - t) / B
// The backward recomputes the softmax from the logits, so no (B, C) probability
// tensor is kept. Test: test_kernels --gtest_filter='Ops*Xent*'.
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/ops.h"

namespace vit::cpu {

static void check_label(int y, int C, int b) {
  if (y < 0 || y >= C)
    throw std::out_of_range("softmax_xent: label " + std::to_string(y) + " of sample " + std::to_string(b) +
                            " is outside [0, " + std::to_string(C) + ")");
}

// Row maximum and sum of exp(z - max), in double: the stable log-sum-exp both passes need.
template <typename T>
static void row_max_sumexp(const T* z, int C, double* mx, double* se) {
  *mx = z[0];
  for (int c = 1; c < C; c++) *mx = std::max(*mx, (double)z[c]);
  *se = 0;
  for (int c = 0; c < C; c++) *se += std::exp((double)z[c] - *mx);
}

template <typename T>
T softmax_xent_fwd(const T* logits, const int* labels, T* losses, int B, int C, T smoothing) {
  double total = 0;
  for (int b = 0; b < B; b++) {
    check_label(labels[b], C, b);
    const T* z = logits + (size_t)b * C;
    double mx, se;
    row_max_sumexp(z, C, &mx, &se);
    double lse = mx + std::log(se);
    double l = 0;
    for (int c = 0; c < C; c++) {
      double t = (c == labels[b] ? 1.0 - (double)smoothing : 0.0) + (double)smoothing / C;
      l -= t * ((double)z[c] - lse);
    }
    if (losses) losses[b] = (T)l;
    total += l;
  }
  return (T)(total / B);
}

template <typename T>
void softmax_xent_bwd(const T* logits, const int* labels, T* dlogits, int B, int C, T smoothing) {
  for (int b = 0; b < B; b++) {
    check_label(labels[b], C, b);
    const T* z = logits + (size_t)b * C;
    double mx, se;
    row_max_sumexp(z, C, &mx, &se);
    for (int c = 0; c < C; c++) {
      double p = std::exp((double)z[c] - mx) / se;
      double t = (c == labels[b] ? 1.0 - (double)smoothing : 0.0) + (double)smoothing / C;
      dlogits[(size_t)b * C + c] = (T)((p - t) / B);
    }
  }
}

template float softmax_xent_fwd<float>(const float*, const int*, float*, int, int, float);
template double softmax_xent_fwd<double>(const double*, const int*, double*, int, int, double);
template void softmax_xent_bwd<float>(const float*, const int*, float*, int, int, float);
template void softmax_xent_bwd<double>(const double*, const int*, double*, int, int, double);

}  // namespace vit::cpu
