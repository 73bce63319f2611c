#include "engine/eval/tta.h"

#include <cstddef>
#include <stdexcept>
#include <vector>

namespace vit {

int tta_view_count(const std::string& mode) {
  if (mode == "none") return 1;
  if (mode == "flip") return 2;
  if (mode == "d4") return 8;
  throw std::invalid_argument("unknown test-time augmentation '" + mode + "' (known: none, flip, d4)");
}

void dihedral_view(const float* in, float* out, int B, int C, int S, int k) {
  if (k < 0 || k >= 8) throw std::invalid_argument("dihedral_view: view " + std::to_string(k) + " outside [0, 8)");
  const bool mirror = k >= 4;
  const int turns = k % 4;
  const size_t plane = size_t(S) * S;
  for (size_t p = 0; p < size_t(B) * C; ++p) {
    const float* src = in + p * plane;
    float* dst = out + p * plane;
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        // Output (x, y) of a clockwise quarter turn reads input (y, S-1-x); apply `turns` times
        // backwards to find the source in the (possibly mirrored) image.
        int sx = x, sy = y;
        for (int t = 0; t < turns; ++t) {
          const int nx = sy, ny = S - 1 - sx;
          sx = nx, sy = ny;
        }
        if (mirror) sx = S - 1 - sx;
        dst[size_t(y) * S + x] = src[size_t(sy) * S + sx];
      }
  }
}

void mean_view_logits(const std::function<const float*(const float*)>& forward, const float* images, int B, int S,
                      int classes, int views, float* out, const std::function<const float*()>& features, int dim,
                      float* features_out) {
  if (views < 1 || views > 8)
    throw std::invalid_argument("mean_view_logits: views must be in [1, 8], got " + std::to_string(views));
  const size_t n = size_t(B) * classes, nf = features ? size_t(B) * dim : 0;
  std::vector<float> sum(n, 0.0f), fsum(nf, 0.0f), view;
  if (views > 1) view.resize(size_t(B) * 3 * S * S);
  auto add_features = [&] {
    if (!nf) return;
    const float* f = features();
    for (size_t i = 0; i < nf; ++i) fsum[i] += f[i];
  };
  for (int v = 1; v < views; ++v) {
    dihedral_view(images, view.data(), B, 3, S, v);
    const float* z = forward(view.data());
    for (size_t i = 0; i < n; ++i) sum[i] += z[i];
    add_features();
  }
  const float* z = forward(images);
  for (size_t i = 0; i < n; ++i) out[i] = (sum[i] + z[i]) / float(views);
  add_features();
  for (size_t i = 0; i < nf; ++i) features_out[i] = fsum[i] / float(views);
}

}  // namespace vit
