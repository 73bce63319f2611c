// The training augmentation's parameters and its per-pixel arithmetic, shared by the CPU path
// (engine/data/augment.cpp, the reference) and the GPU path (kernels/cuda/augment.cu, data_on_device), so
// that both compute every pixel with the same expressions in the same order.
//
// Same expressions are not enough on their own: a compiler may fuse a*b + c into one fused
// multiply-add, which rounds once instead of twice. Both translation units are therefore built
// without contraction (CMakeLists.txt: -ffp-contract=off for engine/data/augment.cpp, --fmad=false for
// kernels/cuda/augment.cu), and the two paths give the same bytes.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

// static: every translation unit keeps its own copy, compiled with its own flags, so a copy
// built with contraction elsewhere can never be the one the linker picks for augment.cpp.
#ifdef __CUDACC__
#define VIT_AUG_HD static __host__ __device__ inline
#else
#define VIT_AUG_HD static inline
#endif

namespace vit {

// Colour and stain jitter (torchvision's tensor ops: compute in float, clamp, truncate to uint8).
struct ColorJitter {
  float brightness = 1, contrast = 1, saturation = 1;
  float hue = 0;              // in turns
  float gain[3] = {1, 1, 1};  // per-channel stain gain
};

// Everything one augment_train call draws, so that drawing (host, engine/data/augment.h draw_augment)
// and applying (CPU apply_augment, or the GPU kernel) are separate steps.
struct AugmentParams {
  bool geometry = false;             // resample (bilinear) with m
  double m[6] = {1, 0, 0, 0, 1, 0};  // output pixel centre p (from the image centre) samples the input at A*p + t
  double shift[2] = {0, 0};          // plus a translation of the source point, in fractions of the side (x, y)
  bool reflect = false;              // out-of-frame source points mirror the image (else take the fill colour)
  int ta_op = -1;                    // TrivialAugmentWide op index (trivial_augment_ops()), -1 = none
  float ta_magnitude = 0;
  bool color = false;  // apply `jitter`
  ColorJitter jitter;
  // HED stain jitter (engine/data/augment.h apply_hed_jitter): each image's haematoxylin, eosin
  // and DAB concentrations c -> alpha * c + beta. The CPU loader only (data_on_device refuses it).
  bool hed = false;
  float hed_alpha[3] = {1, 1, 1}, hed_beta[3] = {0, 0, 0};
  float blur_sigma = 0;  // Gaussian blur sigma in px, 0 = none
};

namespace augpx {

// Clamp to [0, 255], truncate (std::min(255, std::max(0, v)) spelled out for device code).
VIT_AUG_HD uint8_t trunc8(float v) {
  v = 0.f < v ? v : 0.f;
  return (uint8_t)(v < 255.f ? v : 255.f);
}
// torchvision rgb_to_grayscale on uint8: weighted sum truncated to uint8.
VIT_AUG_HD uint8_t gray(const uint8_t* p) { return (uint8_t)(0.2989f * p[0] + 0.587f * p[1] + 0.114f * p[2]); }
// torchvision _blend: ratio*v + (1-ratio)*other, clamped, truncated.
VIT_AUG_HD uint8_t blend(uint8_t v, float other, float ratio) { return trunc8(ratio * v + (1.f - ratio) * other); }

// Source position of output pixel (0, y) in pixel-index units (grid_sample, align_corners=False).
// Along the row the position then steps by (m[0], m[3]) per pixel: callers step, they do not
// recompute x * m[0], because the CPU reference steps and the rounding must match.
VIT_AUG_HD void row_start(const double* m, int w, int h, int y, double& sx, double& sy) {
  const double py = y + 0.5 - h * 0.5, px0 = 0.5 - w * 0.5;
  sx = m[0] * px0 + m[1] * py + m[2] + w * 0.5 - 0.5;
  sy = m[3] * px0 + m[4] * py + m[5] + h * 0.5 - 0.5;
}

// The sampling matrix for a w x h image: p.m with p.shift turned into pixels. The translation is
// drawn as a fraction of the side (engine/data/augment.h draw_augment) because the draw happens
// before anyone knows the image size.
VIT_AUG_HD void sampling_matrix(const AugmentParams& p, int w, int h, double* m) {
  for (int i = 0; i < 6; ++i) m[i] = p.m[i];
  m[2] += p.shift[0] * w;
  m[5] += p.shift[1] * h;
}

// grid_sample's padding_mode='reflection' with align_corners=False, for one coordinate in
// pixel-index units: mirror at the outer pixel edges (-0.5 and size - 0.5) as often as needed,
// then clamp to the outermost pixel centres (PyTorch's reflect_coordinates + clip_coordinates).
VIT_AUG_HD double reflect_coord(double v, int size) {
  const double span = size, a = fabs(v + 0.5);
  const double extra = fmod(a, span);
  const bool even = ((long long)floor(a / span)) % 2 == 0;
  v = (even ? extra : span - extra) - 0.5;
  return v < 0 ? 0 : (v > size - 1 ? size - 1 : v);
}

// Pixel (x, y) of the uint8 HWC image `src` (w x h), or `fill` outside it.
VIT_AUG_HD const uint8_t* tap(const uint8_t* src, int w, int h, int x, int y, const uint8_t* fill) {
  return (x < 0 || y < 0 || x >= w || y >= h) ? fill : &src[((size_t)y * w + x) * 3];
}
// Bilinear sample of the uint8 HWC image `src` (w x h) at (sx, sy); taps outside take `fill`.
VIT_AUG_HD void bilinear(const uint8_t* src, int w, int h, double sx, double sy, const uint8_t* fill, uint8_t* o) {
  const double fx = floor(sx), fy = floor(sy);
  const int x0 = (int)fx, y0 = (int)fy;
  if (x0 < -1 || y0 < -1 || x0 >= w || y0 >= h) {  // all four taps outside
    o[0] = fill[0], o[1] = fill[1], o[2] = fill[2];
    return;
  }
  const float ax = (float)(sx - fx), ay = (float)(sy - fy);
  const uint8_t *p00 = tap(src, w, h, x0, y0, fill), *p01 = tap(src, w, h, x0 + 1, y0, fill),
                *p10 = tap(src, w, h, x0, y0 + 1, fill), *p11 = tap(src, w, h, x0 + 1, y0 + 1, fill);
  const float w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay, w11 = ax * ay;
  for (int c = 0; c < 3; ++c) {
    const float v = w00 * p00[c] + w01 * p01[c] + w10 * p10[c] + w11 * p11[c] + 0.5f;
    o[c] = (uint8_t)(v < 255.f ? v : 255.f);
  }
}

// Bilinear sample with reflection padding: every tap with a non-zero weight lies inside the
// image after reflect_coord (a tap past the last pixel has weight 0; `src` stands in for it).
VIT_AUG_HD void bilinear_reflect(const uint8_t* src, int w, int h, double sx, double sy, uint8_t* o) {
  bilinear(src, w, h, reflect_coord(sx, w), reflect_coord(sy, h), src, o);
}

// Hue rotation by `shift` turns through HSV (in place).
VIT_AUG_HD void hue(uint8_t* px, float shift) {
  const float r = px[0] / 255.f, g = px[1] / 255.f, b = px[2] / 255.f;
  const float mx = fmaxf(fmaxf(r, g), b), mn = fminf(fminf(r, g), b), d = mx - mn;
  if (d <= 0) return;  // grey: hue undefined, nothing to rotate
  float hh;
  if (mx == r) {
    hh = (g - b) / d;
    if (hh < 0) hh += 6.f;
  } else if (mx == g) {
    hh = (b - r) / d + 2.f;
  } else {
    hh = (r - g) / d + 4.f;
  }
  hh = hh / 6.f + shift;
  hh -= floorf(hh);
  const float s = d / mx, v = mx;
  const float h6 = hh * 6.f;
  const int sector = (int)h6 < 5 ? (int)h6 : 5;
  const float f = h6 - sector, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const float rgb[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
  for (int c = 0; c < 3; ++c) {
    const float o = rgb[sector][c] * 255.f + 0.5f;
    px[c] = (uint8_t)(o < 255.f ? o : 255.f);
  }
}

// The colour jitter is brightness, then contrast against the image's mean grey level (a
// whole-image reduction), then saturation, hue and stain gain. Split at the reduction:
// brighten() every pixel, take the mean grey of the result, then jitter_rest() every pixel.
VIT_AUG_HD void brighten(uint8_t* px, const ColorJitter& j) {
  for (int c = 0; c < 3; ++c) px[c] = blend(px[c], 0.f, j.brightness);
}
VIT_AUG_HD void jitter_rest(uint8_t* px, const ColorJitter& j, float mean_gray) {
  for (int c = 0; c < 3; ++c) px[c] = blend(px[c], mean_gray, j.contrast);
  const float g = gray(px);
  for (int c = 0; c < 3; ++c) px[c] = blend(px[c], g, j.saturation);
  hue(px, j.hue);
  for (int c = 0; c < 3; ++c) px[c] = trunc8(px[c] * j.gain[c] + 0.5f);
}
// The mean grey level as the CPU computes it: an exact integer sum, divided in double.
VIT_AUG_HD float mean_of(uint64_t gray_sum, uint64_t pixels) { return (float)((double)gray_sum / (double)pixels); }

}  // namespace augpx
}  // namespace vit
