// Augmentation (see augment.h). Colour ops follow torchvision's tensor functions
// (functional_tensor.py in 0.14): compute in float, clamp, truncate to uint8.
#include "engine/data/augment.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>

#include "engine/data/stain.h"

namespace vit {

namespace {

std::vector<float> linspace(float a, float b, int n) {
  std::vector<float> v(n);
  // torch.linspace computes start + i*step for the first half and end - (n-1-i)*step
  // for the second; in float32 that matters only in the last bit, which the test allows.
  for (int i = 0; i < n; ++i) v[i] = n == 1 ? a : (float)(a + (double)(b - a) * i / (n - 1));
  return v;
}

using augpx::trunc8;

// torchvision rgb_to_grayscale of every pixel.
std::vector<uint8_t> gray(const Image& img) {
  std::vector<uint8_t> g((size_t)img.width * img.height);
  for (size_t i = 0; i < g.size(); ++i) g[i] = augpx::gray(&img.rgb[i * 3]);
  return g;
}
double gray_sum(const Image& img) {
  double s = 0;
  for (uint8_t v : gray(img)) s += v;
  return s;
}

// ratio*img + (1-ratio)*other, clamped, truncated (torchvision _blend).
void blend_gray(Image& img, const std::vector<uint8_t>& other, float ratio) {
  for (size_t i = 0; i < other.size(); ++i)
    for (int c = 0; c < 3; ++c) img.rgb[i * 3 + c] = augpx::blend(img.rgb[i * 3 + c], other[i], ratio);
}
void blend_const(Image& img, float other, float ratio) {
  for (auto& v : img.rgb) v = augpx::blend(v, other, ratio);
}

void sharpness(Image& img, float factor) {
  const int w = img.width, h = img.height;
  if (w <= 2 || h <= 2) return;
  Image blur = img;  // border pixels stay as they are (torchvision keeps them)
  for (int y = 1; y < h - 1; ++y)
    for (int x = 1; x < w - 1; ++x)
      for (int c = 0; c < 3; ++c) {
        float s = 0;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) s += img.rgb[((size_t)(y + dy) * w + x + dx) * 3 + c];
        s += 4.f * img.rgb[((size_t)y * w + x) * 3 + c];  // centre weight 5 of 13
        // conv in float then cast back to uint8 rounds (torchvision _cast_squeeze_out rounds).
        blur.rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)std::min(255.f, std::nearbyint(s / 13.f));
      }
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = trunc8(factor * img.rgb[i] + (1.f - factor) * blur.rgb[i]);
}

void autocontrast(Image& img) {
  for (int c = 0; c < 3; ++c) {
    int lo = 255, hi = 0;
    for (size_t i = c; i < img.rgb.size(); i += 3)
      lo = std::min(lo, (int)img.rgb[i]), hi = std::max(hi, (int)img.rgb[i]);
    if (hi == lo) continue;  // torchvision: infinite scale -> identity
    const float scale = 255.f / (hi - lo);
    for (size_t i = c; i < img.rgb.size(); i += 3) img.rgb[i] = trunc8((img.rgb[i] - lo) * scale);
  }
}

void equalize(Image& img) {
  for (int c = 0; c < 3; ++c) {
    int64_t hist[256] = {0};
    for (size_t i = c; i < img.rgb.size(); i += 3) ++hist[img.rgb[i]];
    // step = sum of all non-zero bins but the last one, / 255 (torchvision _scale_channel).
    int last = 255;
    while (last > 0 && hist[last] == 0) --last;
    int64_t s = 0;
    for (int v = 0; v < last; ++v) s += hist[v];
    const int64_t step = s / 255;
    if (step == 0) continue;
    uint8_t lut[256];
    int64_t cum = 0;
    for (int v = 0; v < 256; ++v) {
      // lut[v] = (cumsum up to v-1 + step/2) / step, shifted by one, clamped.
      lut[v] = (uint8_t)std::min<int64_t>(255, (cum + step / 2) / step);
      cum += hist[v];
    }
    for (size_t i = c; i < img.rgb.size(); i += 3) img.rgb[i] = lut[img.rgb[i]];
  }
}

// torchvision's _get_inverse_affine_matrix (inverted=True), center relative to the image centre.
void inverse_affine(double cx, double cy, double angle_deg, double tx, double ty, double scale, double shx_deg,
                    double shy_deg, double m[6]) {
  const double rot = angle_deg * M_PI / 180, sx = shx_deg * M_PI / 180, sy = shy_deg * M_PI / 180;
  const double a = std::cos(rot - sy) / std::cos(sy);
  const double b = -std::cos(rot - sy) * std::tan(sx) / std::cos(sy) - std::sin(rot);
  const double c = std::sin(rot - sy) / std::cos(sy);
  const double d = -std::sin(rot - sy) * std::tan(sx) / std::cos(sy) + std::cos(rot);
  m[0] = d / scale, m[1] = -b / scale, m[2] = 0, m[3] = -c / scale, m[4] = a / scale, m[5] = 0;
  m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
  m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
  m[2] += cx;
  m[5] += cy;
}

void geometric(Image& img, double cx, double cy, double angle, double tx, double ty, double shx, double shy,
               const uint8_t fill[3]) {
  double m[6];
  inverse_affine(cx, cy, angle, tx, ty, 1.0, shx, shy, m);
  Image out;
  affine_sample(img, out, m, fill, /*bilinear=*/false);  // TrivialAugmentWide default: NEAREST
  img = std::move(out);
}

}  // namespace

void affine_sample(const Image& src, Image& dst, const double m[6], const uint8_t fill[3], bool bilinear,
                   bool reflect) {
  if (reflect && !bilinear) throw std::invalid_argument("affine_sample: reflection padding is built for bilinear only");
  const int w = src.width, h = src.height;
  dst.width = w;
  dst.height = h;
  dst.rgb.resize((size_t)w * h * 3);
  for (int y = 0; y < h; ++y) {
    double sx, sy;
    augpx::row_start(m, w, h, y, sx, sy);  // stepped along the row, as the GPU kernel does
    uint8_t* o = &dst.rgb[(size_t)y * w * 3];
    for (int x = 0; x < w; ++x, sx += m[0], sy += m[3], o += 3) {
      if (bilinear && reflect) {
        augpx::bilinear_reflect(src.rgb.data(), w, h, sx, sy, o);
        continue;
      }
      if (bilinear) {
        augpx::bilinear(src.rgb.data(), w, h, sx, sy, fill, o);
        continue;
      }
      const long ix = std::lrint(sx), iy = std::lrint(sy);  // round half to even, as nearbyint in grid_sample
      const uint8_t* p = augpx::tap(src.rgb.data(), w, h, (int)ix, (int)iy, fill);
      o[0] = p[0], o[1] = p[1], o[2] = p[2];
    }
  }
}

const std::vector<TAOpInfo>& trivial_augment_ops(int num_bins) {
  if (num_bins != 31)
    throw std::invalid_argument("trivial_augment_ops: only torchvision's default of 31 bins is built");
  static const std::vector<TAOpInfo> ops = [] {
    const int n = 31;
    std::vector<float> post(n);
    // 8 - round(i / ((n-1)/6)); torch.round is round-half-to-even.
    for (int i = 0; i < n; ++i) post[i] = (float)(8 - (int)std::nearbyint(i / ((n - 1) / 6.0)));
    return std::vector<TAOpInfo>{
        {TAOp::Identity, "Identity", {}, false},
        {TAOp::ShearX, "ShearX", linspace(0.f, 0.99f, n), true},
        {TAOp::ShearY, "ShearY", linspace(0.f, 0.99f, n), true},
        {TAOp::TranslateX, "TranslateX", linspace(0.f, 32.f, n), true},
        {TAOp::TranslateY, "TranslateY", linspace(0.f, 32.f, n), true},
        {TAOp::Rotate, "Rotate", linspace(0.f, 135.f, n), true},
        {TAOp::Brightness, "Brightness", linspace(0.f, 0.99f, n), true},
        {TAOp::Color, "Color", linspace(0.f, 0.99f, n), true},
        {TAOp::Contrast, "Contrast", linspace(0.f, 0.99f, n), true},
        {TAOp::Sharpness, "Sharpness", linspace(0.f, 0.99f, n), true},
        {TAOp::Posterize, "Posterize", post, false},
        {TAOp::Solarize, "Solarize", linspace(255.f, 0.f, n), false},
        {TAOp::AutoContrast, "AutoContrast", {}, false},
        {TAOp::Equalize, "Equalize", {}, false},
    };
  }();
  return ops;
}

void apply_ta_op(Image& img, TAOp op, float mag, const uint8_t fill[3]) {
  const double w = img.width, h = img.height;
  switch (op) {
    case TAOp::Identity:
      break;
    // Shears pivot on the top-left corner (torchvision passes center=[0, 0]).
    case TAOp::ShearX:
      geometric(img, -w * 0.5, -h * 0.5, 0, 0, 0, std::atan(mag) * 180 / M_PI, 0, fill);
      break;
    case TAOp::ShearY:
      geometric(img, -w * 0.5, -h * 0.5, 0, 0, 0, 0, std::atan(mag) * 180 / M_PI, fill);
      break;
    case TAOp::TranslateX:
      geometric(img, 0, 0, 0, (int)mag, 0, 0, 0, fill);
      break;
    case TAOp::TranslateY:
      geometric(img, 0, 0, 0, 0, (int)mag, 0, 0, fill);
      break;
    case TAOp::Rotate:
      geometric(img, 0, 0, -mag, 0, 0, 0, 0, fill);
      break;  // F.rotate negates for tensors
    case TAOp::Brightness:
      blend_const(img, 0.f, 1.f + mag);
      break;
    case TAOp::Color:
      blend_gray(img, gray(img), 1.f + mag);
      break;
    case TAOp::Contrast:
      blend_const(img, (float)(gray_sum(img) / ((size_t)img.width * img.height)), 1.f + mag);
      break;
    case TAOp::Sharpness:
      sharpness(img, 1.f + mag);
      break;
    case TAOp::Posterize: {
      const uint8_t mask = (uint8_t)(0xFF << (8 - (int)mag));
      for (auto& v : img.rgb) v &= mask;
      break;
    }
    case TAOp::Solarize:
      for (auto& v : img.rgb)
        if (v >= mag) v = 255 - v;
      break;
    case TAOp::AutoContrast:
      autocontrast(img);
      break;
    case TAOp::Equalize:
      equalize(img);
      break;
  }
}

TAChoice draw_trivial_augment(Rng& rng) {
  const auto& ops = trivial_augment_ops();
  TAChoice ch;
  ch.op = rng.below((int)ops.size());
  const auto& o = ops[ch.op];
  if (!o.magnitudes.empty()) ch.magnitude = o.magnitudes[rng.below((int)o.magnitudes.size())];
  if (o.is_signed && rng.below(2)) ch.magnitude = -ch.magnitude;
  return ch;
}
TAChoice trivial_augment(Image& img, Rng& rng, const uint8_t fill[3]) {
  const TAChoice ch = draw_trivial_augment(rng);
  apply_ta_op(img, trivial_augment_ops()[ch.op].op, ch.magnitude, fill);
  return ch;
}

void gaussian_blur(Image& img, float sigma) {
  if (sigma <= 0) return;
  const int r = std::max(1, (int)std::ceil(2.5f * sigma)), w = img.width, h = img.height;
  std::vector<float> k(2 * r + 1);
  float s = 0;
  for (int i = -r; i <= r; ++i) s += k[i + r] = std::exp(-0.5f * i * i / (sigma * sigma));
  for (auto& v : k) v /= s;
  std::vector<float> tmp((size_t)w * h * 3);
  // Borders replicate the edge pixel: the background continues past the frame.
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        float a = 0;
        for (int i = -r; i <= r; ++i) a += k[i + r] * img.rgb[((size_t)y * w + std::clamp(x + i, 0, w - 1)) * 3 + c];
        tmp[((size_t)y * w + x) * 3 + c] = a;
      }
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        float a = 0;
        for (int i = -r; i <= r; ++i) a += k[i + r] * tmp[((size_t)std::clamp(y + i, 0, h - 1) * w + x) * 3 + c];
        img.rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)std::min(255.f, std::max(0.f, a + 0.5f));
      }
}

void adjust_hue(Image& img, float shift) {
  for (size_t i = 0; i < img.rgb.size(); i += 3) augpx::hue(&img.rgb[i], shift);
}

AugmentParams draw_augment(const AugmentConfig& cfg, Rng& rng) {
  AugmentParams p;
  if (!cfg.enabled) return p;
  // 1. Geometry in one resampling: rotation, flip, zoom.
  const double angle = cfg.rotate_flip ? rng.uniform(0.f, 360.f) : 0.0;
  const bool flip = cfg.rotate_flip && rng.below(2);
  const double smin = std::max(1e-3f, cfg.scale_min), smax = std::max((float)smin, cfg.scale_max);
  const double scale = std::exp(std::log(smin) + (std::log(smax) - std::log(smin)) * rng.uniform());
  if (angle != 0 || flip || scale != 1) {
    p.geometry = true;
    inverse_affine(0, 0, angle, 0, 0, scale, 0, 0, p.m);
    if (flip) p.m[0] = -p.m[0], p.m[3] = -p.m[3];  // mirror the output x axis
  }
  // Translation of the source point (the reference recipe's +-0.06 in grid_sample units is
  // translate = 0.03 of the side). Drawn only when asked for, so that configs without it keep
  // their exact random sequence.
  if (cfg.translate > 0) {
    p.shift[0] = rng.uniform(-cfg.translate, cfg.translate);
    p.shift[1] = rng.uniform(-cfg.translate, cfg.translate);
    p.geometry = true;
  }
  p.reflect = cfg.reflect_border;
  // 2. TrivialAugmentWide.
  if (cfg.trivial_augment) {
    const TAChoice ch = draw_trivial_augment(rng);
    p.ta_op = ch.op;
    p.ta_magnitude = ch.magnitude;
  }
  // 3. Colour and stain jitter; the stain is an independent gain per channel (a shift of the
  // stain's colour balance).
  if (cfg.color > 0) {
    const float c = cfg.color;
    p.color = true;
    p.jitter.brightness = rng.uniform(1 - c, 1 + c);
    p.jitter.contrast = rng.uniform(1 - c, 1 + c);
    p.jitter.saturation = rng.uniform(1 - c, 1 + c);
    p.jitter.hue = rng.uniform(-c / 4, c / 4);
    for (auto& g : p.jitter.gain) g = rng.uniform(1 - c / 4, 1 + c / 4);
  }
  // 3b. HED stain jitter, drawn only when asked for (configs without it keep their random sequence).
  if (cfg.hed > 0) {
    p.hed = true;
    for (auto& a : p.hed_alpha) a = rng.uniform(1 - cfg.hed, 1 + cfg.hed);
    for (auto& b : p.hed_beta) b = rng.uniform(-cfg.hed, cfg.hed);
  }
  // 4. Blur (focus differences between scanners).
  if (cfg.blur_prob > 0 && rng.uniform() < cfg.blur_prob) p.blur_sigma = rng.uniform(0.1f, 1.5f);
  return p;
}

void apply_augment(Image& img, const AugmentParams& p) {
  uint8_t fill[3];
  border_color(img, fill);  // background colour: out-of-frame pixels look like more smear
  if (p.geometry) {
    Image out;
    double m[6];
    augpx::sampling_matrix(p, img.width, img.height, m);
    affine_sample(img, out, m, fill, /*bilinear=*/true, p.reflect);
    img = std::move(out);
  }
  if (p.ta_op >= 0) apply_ta_op(img, trivial_augment_ops()[p.ta_op].op, p.ta_magnitude, fill);
  if (p.color) {
    for (size_t i = 0; i < img.rgb.size(); i += 3) augpx::brighten(&img.rgb[i], p.jitter);
    const float mean = augpx::mean_of((uint64_t)gray_sum(img), (uint64_t)img.width * img.height);
    for (size_t i = 0; i < img.rgb.size(); i += 3) augpx::jitter_rest(&img.rgb[i], p.jitter, mean);
  }
  if (p.hed) apply_hed_jitter(img, p.hed_alpha, p.hed_beta);
  if (p.blur_sigma > 0) gaussian_blur(img, p.blur_sigma);
}

const double kRgbFromHed[3][3] = {{0.65, 0.70, 0.29}, {0.07, 0.99, 0.11}, {0.27, 0.57, 0.78}};

void apply_hed_jitter(Image& img, const float alpha[3], const float beta[3]) {
  // In row vectors, od = c M with M = kRgbFromHed, so c = od M^-1 and the jittered density is
  // od' = (od M^-1 diag(alpha)) M + beta' M = od T + b: one 3x3 map and offset per image, with
  // beta' = beta ln 10^6 (Tellez's units to natural-log optical density).
  const auto& M = kRgbFromHed;
  static const std::array<std::array<double, 3>, 3> inv = [&M] {
    std::array<std::array<double, 3>, 3> r{};
    const double det = M[0][0] * (M[1][1] * M[2][2] - M[1][2] * M[2][1]) -
                       M[0][1] * (M[1][0] * M[2][2] - M[1][2] * M[2][0]) +
                       M[0][2] * (M[1][0] * M[2][1] - M[1][1] * M[2][0]);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {  // adjugate: cofactor of (j, i)
        const int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
        r[size_t(i)][size_t(j)] = (M[r0][c0] * M[r1][c1] - M[r0][c1] * M[r1][c0]) / det;
      }
    return r;
  }();
  static const std::array<double, 256> od = [] {  // a table: three logs per pixel would dominate
    std::array<double, 256> t{};
    for (int v = 0; v < 256; ++v) t[size_t(v)] = optical_density(uint8_t(v));
    return t;
  }();
  const double scale = std::log(1e6);
  double T[3][3], b[3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      T[i][j] = 0;
      for (int k = 0; k < 3; ++k) T[i][j] += inv[size_t(i)][size_t(k)] * alpha[k] * M[k][j];
    }
  for (int j = 0; j < 3; ++j) {
    b[j] = 0;
    for (int k = 0; k < 3; ++k) b[j] += beta[k] * scale * M[k][j];
  }
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3) {
    const double o[3] = {od[img.rgb[i]], od[img.rgb[i + 1]], od[img.rgb[i + 2]]};
    for (int j = 0; j < 3; ++j)
      img.rgb[i + size_t(j)] = from_optical_density(o[0] * T[0][j] + o[1] * T[1][j] + o[2] * T[2][j] + b[j]);
  }
}

void augment_train(Image& img, const AugmentConfig& cfg, Rng& rng) {
  if (!cfg.enabled) return;
  apply_augment(img, draw_augment(cfg, rng));
}

}  // namespace vit
