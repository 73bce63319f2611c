// Inputs and the CPU oracle shared by the augmentation kernel's tests: the GPU test
// (tests/gpu/test_augment_cuda.cu) and its CPU emulation (tests/test_augment_emu.cpp).
// The oracle is the CPU training path itself: apply_augment (engine/data/augment.cpp), then
// to_chw_normalized, on the same images with the same drawn parameters.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "engine/data/augment.h"
#include "engine/data/image.h"
#include "kernels/cuda/augment.cuh"

namespace augtest {

struct Case {
  int S = 0, N = 0;
  std::vector<uint8_t> images;  // (N, S, S, 3)
  std::vector<vit::cuda::AugmentItem> items;
  float mean[3] = {0.7f, 0.6f, 0.65f}, std[3] = {0.2f, 0.25f, 0.15f};
};

// N random images of side S: smooth blobs plus noise (so that bilinear weights matter) on a
// border of one colour (so that the fill is a real colour); B items drawing images with
// repeats, with the augmentation each preset would draw (none, light, and strong without its
// blur), plus some with colour only and geometry only.
inline Case make_case(int S, int N, int B, uint64_t seed) {
  Case c;
  c.S = S, c.N = N;
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> byte(0, 255), noise(-40, 40);
  const size_t per = size_t(S) * S * 3;
  c.images.resize(per * N);
  for (int n = 0; n < N; ++n) {
    const int r0 = byte(g), g0 = byte(g), b0 = byte(g), cx = byte(g) % S, cy = byte(g) % S;
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        const double d = std::hypot(x - cx, y - cy) / S;
        uint8_t* p = &c.images[n * per + (size_t(y) * S + x) * 3];
        const uint8_t base[3] = {uint8_t(r0), uint8_t(g0), uint8_t(b0)};
        for (int k = 0; k < 3; ++k)
          p[k] = (uint8_t)std::min(255.0, std::max(0.0, base[k] * (1 - d) + 200 * d + noise(g)));
      }
  }
  vit::AugmentConfig light;  // the trainer's presets (engine/train/trainer.cpp augment_preset)
  light.enabled = true, light.scale_min = 0.87f, light.scale_max = 1.15f, light.color = 0.2f, light.blur_prob = 0;
  vit::AugmentConfig strong_noblur = light;
  strong_noblur.scale_min = 0.7f, strong_noblur.scale_max = 1.4f, strong_noblur.color = 0.35f;
  vit::AugmentConfig colour_only = light, geometry_only = light;
  colour_only.rotate_flip = false, colour_only.scale_min = colour_only.scale_max = 1;
  geometry_only.color = 0;
  vit::AugmentConfig shift_reflect = light;  // the reference recipe's shift and reflection padding
  shift_reflect.translate = 0.03f, shift_reflect.reflect_border = true;
  vit::AugmentConfig shift_fill = geometry_only;  // a large shift that fills from the border colour
  shift_fill.translate = 0.2f;
  const vit::AugmentConfig cfgs[] = {vit::AugmentConfig{}, light,         strong_noblur, colour_only,
                                     geometry_only,        shift_reflect, shift_fill};
  constexpr int kConfigs = sizeof(cfgs) / sizeof(cfgs[0]);
  for (int b = 0; b < B; ++b) {
    vit::cuda::AugmentItem it;
    it.image = g() % N;
    vit::Image img;
    img.width = img.height = S;
    img.rgb.assign(c.images.begin() + it.image * per, c.images.begin() + (it.image + 1) * per);
    vit::border_color(img, it.fill);
    vit::Rng r(g());
    it.p = vit::draw_augment(cfgs[b % kConfigs], r);
    c.items.push_back(it);
  }
  return c;
}

inline std::vector<float> reference(const Case& c) {
  const size_t per = size_t(c.S) * c.S * 3;
  std::vector<float> out(per * c.items.size());
  for (size_t b = 0; b < c.items.size(); ++b) {
    vit::Image img;
    img.width = img.height = c.S;
    img.rgb.assign(c.images.begin() + c.items[b].image * per, c.images.begin() + (c.items[b].image + 1) * per);
    vit::apply_augment(img, c.items[b].p);
    vit::to_chw_normalized(img, c.mean, c.std, out.data() + b * per);
  }
  return out;
}

// One uint8 level is 1 / (255 std) >= 0.015 after normalisation; 1e-5 admits only the float
// rounding of the normalisation itself (a -march=native CPU build may fuse v * scale - shift
// in to_chw_normalized), not a single pixel value that differs. NaN (the poison) fails.
inline void expect_same_batch(const std::vector<float>& got, const std::vector<float>& want, const Case& c) {
  ASSERT_EQ(got.size(), want.size());
  size_t bad = 0, first = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(want[i]));
    if (!(d <= 1e-5)) {
      if (!bad) first = i;
      ++bad;
      worst = std::isfinite(d) ? std::max(worst, d) : INFINITY;
    }
  }
  const size_t per = size_t(c.S) * c.S * 3, S2 = size_t(c.S) * c.S;
  EXPECT_EQ(bad, 0u) << bad << " of " << got.size() << " elements differ (worst " << worst << "); first: image "
                     << first / per << " channel " << (first % per) / S2 << " y " << (first % S2) / c.S << " x "
                     << first % c.S << ": got " << got[first] << " want " << want[first];
}

}  // namespace augtest
