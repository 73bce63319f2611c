// TrivialAugmentWide against torchvision 0.14 (op list, bins, per-op outputs written by
// tools/make_data_refs.py), determinism of the training augmentation, and the HED stain jitter
// against a per-pixel colour deconvolution in long double.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/data/augment.h"
#include "tests/data_test_util.h"

using namespace vit;
using namespace vit::testutil;

TEST(DataAugment, TrivialAugmentOpListAndBinsMatchTorchvision) {
  std::ifstream f(test_data() / "ta_ops.json");
  ASSERT_TRUE(f) << "missing tests/data/ta_ops.json (run tools/make_data_refs.py)";
  auto j = nlohmann::json::parse(f);
  const auto& ops = trivial_augment_ops(31);
  ASSERT_EQ(ops.size(), j["ops"].size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const auto& r = j["ops"][i];
    EXPECT_EQ(ops[i].name, r["name"].get<std::string>()) << i;  // same order: the op is drawn by index
    EXPECT_EQ(ops[i].is_signed, r["signed"].get<bool>()) << ops[i].name;
    ASSERT_EQ(ops[i].magnitudes.size(), r["magnitudes"].size()) << ops[i].name;
    for (size_t k = 0; k < ops[i].magnitudes.size(); ++k) {
      const float want = r["magnitudes"][k].get<float>();
      // torch.linspace in float32 vs our double-then-float: equal up to 1 ulp-ish.
      EXPECT_NEAR(ops[i].magnitudes[k], want, 1e-5f + 1e-6f * std::abs(want)) << ops[i].name << " bin " << k;
    }
  }
}

// Each op on the same 64x64 input as torchvision's tensor path (NEAREST, fill given).
// Colour ops: torchvision computes in float32 then truncates; we do the same, so
// values may differ by 1 where float32 rounding lands on an integer boundary.
// Geometric ops: nearest sampling; a source coordinate that lands within float
// rounding of a .5 tie may pick the neighbour, so allow 1% of pixels to differ.
TEST(DataAugment, EveryOpMatchesTorchvisionOutput) {
  std::ifstream f(test_data() / "ta_cases.json");
  ASSERT_TRUE(f);
  auto j = nlohmann::json::parse(f);
  const Image input = load_image((test_data() / j["input"].get<std::string>()).string());
  const uint8_t fill[3] = {(uint8_t)j["fill"][0].get<float>(), (uint8_t)j["fill"][1].get<float>(),
                           (uint8_t)j["fill"][2].get<float>()};
  std::set<std::string> seen;
  for (const auto& c : j["cases"]) {
    const std::string name = c["op"];
    seen.insert(name);
    const auto& ops = trivial_augment_ops();
    auto it = std::find_if(ops.begin(), ops.end(), [&](const TAOpInfo& o) { return o.name == name; });
    ASSERT_NE(it, ops.end()) << name;
    Image got = input;
    apply_ta_op(got, it->op, c["magnitude"].get<float>(), fill);
    const Image ref = load_image((test_data() / c["file"].get<std::string>()).string());
    ASSERT_EQ(got.rgb.size(), ref.rgb.size());
    size_t off = 0;
    int md = 0;
    for (size_t i = 0; i < ref.rgb.size(); ++i) {
      int d = std::abs((int)got.rgb[i] - (int)ref.rgb[i]);
      md = std::max(md, d);
      off += d > 1;
    }
    const bool geometric = name.rfind("Shear", 0) == 0 || name.rfind("Translate", 0) == 0 || name == "Rotate";
    if (geometric) {
      EXPECT_LE(off, ref.rgb.size() / 100) << name << " " << c["magnitude"] << " max diff " << md;
    } else {
      EXPECT_LE(md, 1) << name << " " << c["magnitude"];
    }
    // The reference must actually differ from the input for every op but Identity,
    // or this comparison proves nothing.
    if (name != "Identity") {
      EXPECT_GT(max_abs_diff(ref, input), 1) << name;
    }
    std::printf("%-12s %6.2f: max diff %d, values off by >1: %zu\n", name.c_str(), c["magnitude"].get<float>(), md,
                off);
  }
  EXPECT_EQ(seen.size(), 14u);  // every op of the list was compared
}

TEST(DataAugment, TrivialAugmentDrawsEveryOpAndBothSigns) {
  Rng rng(123);
  std::vector<int> count(14, 0);
  int neg = 0;
  Image img = noise_image(16, 16, 1, 128);
  const uint8_t fill[3] = {0, 0, 0};
  for (int i = 0; i < 2800; ++i) {
    Image t = img;
    TAChoice ch = trivial_augment(t, rng, fill);
    ++count[ch.op];
    neg += ch.magnitude < 0;
  }
  // Uniform over 14 ops: 200 expected each; 5 sigma is about +-70.
  for (int k = 0; k < 14; ++k) EXPECT_NEAR(count[k], 200, 70) << trivial_augment_ops()[k].name;
  EXPECT_GT(neg, 500);  // 9 signed ops of 14, half negative: ~900
}

TEST(DataAugment, TrainAugmentIsDeterministicForASeed) {
  const Image base = load_image((test_data() / "resize_BA_100102_224.png").string());
  AugmentConfig cfg;
  cfg.enabled = true;
  cfg.trivial_augment = true;
  cfg.blur_prob = 0.5f;
  for (uint64_t seed : {1ull, 2ull, 99ull}) {
    Image a = base, b = base;
    Rng ra(seed), rb(seed);
    augment_train(a, cfg, ra);
    augment_train(b, cfg, rb);
    EXPECT_EQ(a.rgb, b.rgb) << seed;
    EXPECT_GT(max_abs_diff(a, base), 10) << seed;  // it did something
  }
  Image a = base, b = base;
  Rng ra(1), rb(2);
  augment_train(a, cfg, ra);
  augment_train(b, cfg, rb);
  EXPECT_NE(a.rgb, b.rgb);
  // Disabled means untouched.
  Image c = base;
  Rng rc(5);
  augment_train(c, AugmentConfig{}, rc);
  EXPECT_EQ(c.rgb, base.rgb);
}

TEST(DataAugment, GeometryKeepsBackgroundAndScaleJitterHasRange) {
  // A uniform image stays uniform under rotation/flip/zoom: the fill is the border colour.
  Image u;
  u.width = u.height = 32;
  u.rgb.assign(32 * 32 * 3, 0);
  for (size_t i = 0; i < u.rgb.size(); i += 3) u.rgb[i] = 230, u.rgb[i + 1] = 200, u.rgb[i + 2] = 210;
  AugmentConfig cfg;
  cfg.enabled = true;
  cfg.color = 0;
  cfg.blur_prob = 0;
  for (uint64_t s = 0; s < 10; ++s) {
    Image t = u;
    Rng r(s);
    augment_train(t, cfg, r);
    EXPECT_EQ(max_abs_diff(t, u), 0) << s;
  }
}

TEST(DataAugment, BlurAndHueHandComputed) {
  // Blur of a constant image is the same constant; hue shift of 0 and of a full turn is identity.
  Image c;
  c.width = c.height = 8;
  c.rgb.assign(8 * 8 * 3, 77);
  Image b = c;
  gaussian_blur(b, 1.2f);
  EXPECT_EQ(b.rgb, c.rgb);
  Image n = noise_image(8, 8, 3, 120, 100);
  Image h = n;
  adjust_hue(h, 0.f);
  EXPECT_LE(max_abs_diff(h, n), 1);  // float HSV round trip
  // Pure red shifted by 1/3 turn is pure green.
  Image r;
  r.width = r.height = 1;
  r.rgb = {255, 0, 0};
  adjust_hue(r, 1.f / 3.f);
  EXPECT_EQ(r.rgb, (std::vector<uint8_t>{0, 255, 0}));
}

// The exact bytes augment_train produces, pinned: the CPU augmentation is the reference the GPU
// path (kernels/cuda/augment.cu, data_on_device) is checked against, and resumed runs rely on it
// being a pure function of the seed. A change here changes every augmented image: only on purpose.
TEST(DataAugment, TrainAugmentBytesArePinned) {
  auto fnv = [](uint64_t h, const std::vector<uint8_t>& b) {
    for (uint8_t v : b) h = (h ^ v) * 0x100000001b3ull;
    return h;
  };
  AugmentConfig light;  // trainer's augment=light
  light.enabled = true;
  light.scale_min = 0.87f, light.scale_max = 1.15f, light.color = 0.2f, light.blur_prob = 0;
  AugmentConfig strong;  // trainer's augment=strong
  strong.enabled = true;
  strong.scale_min = 0.7f, strong.scale_max = 1.4f, strong.color = 0.35f, strong.blur_prob = 0.3f;
  AugmentConfig ta = strong;
  ta.trivial_augment = true;
  AugmentConfig geometry_only = light;
  geometry_only.color = 0;
  const std::vector<std::pair<const char*, AugmentConfig>> cfgs = {
      {"light", light}, {"strong", strong}, {"strong+ta", ta}, {"geometry", geometry_only}};
  // Computed with the code before draw_augment / apply_augment were split out (and without fused
  // multiply-add: engine/data/augment.cpp is built with -ffp-contract=off, CMakeLists.txt).
  const uint64_t want[] = {0xd5de127ee30f01a7ull, 0xd85832b3e412273full, 0xe0aa6fb34cc8ad2dull, 0xd1044f1d73492b76ull};
  std::vector<Image> imgs;
  for (const char* f : {"resize_BA_100102_224.png", "resize_MYO_0001_224.png"})
    imgs.push_back(load_image((test_data() / f).string()));
  imgs.push_back(noise_image(37, 37, 7, 128, 100));  // odd size, busy content
  for (size_t k = 0; k < cfgs.size(); ++k) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const Image& base : imgs)
      for (uint64_t seed = 0; seed < 6; ++seed) {
        Image t = base;
        Rng r(mix_seed(seed, k));
        augment_train(t, cfgs[k].second, r);
        h = fnv(h, t.rgb);
      }
    std::printf("%-9s 0x%016llxull\n", cfgs[k].first, (unsigned long long)h);
    EXPECT_EQ(h, want[k]) << cfgs[k].first;
  }
}

// reflect_border against PyTorch: the reference recipe resamples with F.grid_sample(bilinear,
// padding_mode='reflection', align_corners=False). tests/data/grid_reflect.json holds its float64
// output for four rotation/zoom/flip/shift draws (tools/make_data_refs.py), two of them zoomed out
// far enough that source points reflect more than once. Ours rounds to uint8 (+0.5, truncate)
// with float32 tap weights: every pixel within 0.5 of the float64 value, plus 2e-3 for the
// weights' rounding and the reference's 4 stored decimals.
TEST(DataAugment, ReflectBorderMatchesTorchGridSample) {
  std::ifstream f(test_data() / "grid_reflect.json");
  ASSERT_TRUE(f) << "missing tests/data/grid_reflect.json (run /usr/bin/python3 tools/make_data_refs.py reflect)";
  const auto j = nlohmann::json::parse(f);
  const int S = j["size"].get<int>();
  Image src;
  src.width = src.height = S;
  for (const auto& v : j["input_hwc"]) src.rgb.push_back(v.get<uint8_t>());
  ASSERT_EQ(src.rgb.size(), size_t(S) * S * 3);
  int k = 0;
  for (const auto& c : j["cases"]) {
    AugmentParams p;
    p.geometry = true;
    p.reflect = true;
    for (int i = 0; i < 6; ++i) p.m[i] = c["m"][i].get<double>();
    p.shift[0] = c["shift"][0].get<double>(), p.shift[1] = c["shift"][1].get<double>();
    Image img = src;
    apply_augment(img, p);
    const auto& want = c["out_hwc"];
    ASSERT_EQ(want.size(), img.rgb.size());
    double worst = 0;
    for (size_t i = 0; i < img.rgb.size(); ++i) worst = std::max(worst, std::abs(img.rgb[i] - want[i].get<double>()));
    EXPECT_LE(worst, 0.5 + 2e-3) << "case " << k;
    ++k;
  }
}

// The same shift without reflection fills with the border colour, and the reflection of a whole-
// pixel shift is the mirror image: out(x) = in(x + s) inside, in(2w - 1 - (x + s)) past the right
// edge, in(-1 - (x + s)) past the left one (reflection about the outer pixel edges -0.5, w - 0.5).
TEST(DataAugment, WholePixelShiftMirrorsAtTheEdges) {
  const Image src = noise_image(20, 20, 3, 120, 100);
  for (int s : {5, -7, 13}) {
    AugmentParams p;
    p.geometry = true;
    p.shift[0] = s / 20.0;
    for (bool reflect : {false, true}) {
      p.reflect = reflect;
      Image img = src;
      apply_augment(img, p);
      uint8_t fill[3];
      border_color(src, fill);
      for (int y = 0; y < 20; ++y)
        for (int x = 0; x < 20; ++x) {
          int sx = x + s;
          const bool outside = sx < 0 || sx >= 20;
          if (sx >= 20) sx = 2 * 20 - 1 - sx;
          if (sx < 0) sx = -1 - sx;
          for (int ch = 0; ch < 3; ++ch) {
            const int want = outside && !reflect ? fill[ch] : src.rgb[(size_t(y) * 20 + sx) * 3 + ch];
            ASSERT_EQ(img.rgb[(size_t(y) * 20 + x) * 3 + ch], want)
                << "shift " << s << (reflect ? " reflect" : " fill") << " at (" << x << ", " << y << ")";
          }
        }
    }
  }
}

// translate draws both shifts uniformly in [-t, t] and turns on the resample; without it nothing
// is drawn (the pinned byte hashes above cover that the random sequence stays the same).
TEST(DataAugment, TranslateDrawsWithinRange) {
  AugmentConfig cfg;
  cfg.enabled = true, cfg.rotate_flip = false, cfg.scale_min = cfg.scale_max = 1, cfg.color = 0, cfg.blur_prob = 0;
  Rng r0(1);
  EXPECT_FALSE(draw_augment(cfg, r0).geometry);
  cfg.translate = 0.03f;
  cfg.reflect_border = true;
  double lo = 1, hi = -1;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    Rng r(seed);
    const AugmentParams p = draw_augment(cfg, r);
    EXPECT_TRUE(p.geometry && p.reflect);
    for (double v : p.shift) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  EXPECT_GE(lo, -0.03);
  EXPECT_LE(hi, 0.03);
  EXPECT_LT(lo, -0.027);  // 800 uniform draws reach within 10% of both ends
  EXPECT_GT(hi, 0.027);
}

namespace {

// The HED jitter of one pixel, the way the method is stated: optical density, solve c M = od for
// the three concentrations (Cramer's rule, long double), c -> alpha c + beta ln 10^6, od' = c' M,
// back to 8 bits. Independent of the library's folded per-image matrix.
void ref_hed_pixel(const uint8_t in[3], const float alpha[3], const float beta[3], long double out[3]) {
  const auto& M = kRgbFromHed;
  long double od[3];
  for (int j = 0; j < 3; ++j) od[j] = -std::log((in[j] + 1.0L) / 256.0L);
  // c M = od  <=>  M^T c = od: Cramer on A = M^T.
  const auto det3 = [](long double a[3][3]) {
    return a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
           a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
  };
  long double A[3][3];
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) A[r][k] = M[k][r];
  const long double d = det3(A);
  long double c[3];
  for (int k = 0; k < 3; ++k) {
    long double Ak[3][3];
    for (int r = 0; r < 3; ++r)
      for (int q = 0; q < 3; ++q) Ak[r][q] = q == k ? od[r] : A[r][q];
    c[k] = det3(Ak) / d * alpha[k] + beta[k] * std::log(1e6L);
  }
  for (int j = 0; j < 3; ++j) {
    long double o = 0;
    for (int k = 0; k < 3; ++k) o += c[k] * M[k][j];
    out[j] = std::min(255.0L, std::max(0.0L, 256.0L * std::exp(-o) - 1.0L));
  }
}

Image noise_image(int w, int h, unsigned seed) {
  Image img;
  img.width = w, img.height = h;
  img.rgb.resize(size_t(w) * h * 3);
  std::mt19937 rng(seed);
  for (auto& v : img.rgb) v = uint8_t(rng() % 256);
  return img;
}

}  // namespace

TEST(DataAugmentHed, MatchesAPerPixelDeconvolutionInLongDouble) {
  const float alpha[3] = {1.15f, 0.9f, 1.04f}, beta[3] = {0.03f, -0.05f, 0.01f};
  const Image in = noise_image(32, 32, 11);
  Image out = in;
  apply_hed_jitter(out, alpha, beta);
  int changed = 0;
  for (size_t i = 0; i < in.rgb.size(); i += 3) {
    long double want[3];
    ref_hed_pixel(&in.rgb[i], alpha, beta, want);
    for (int j = 0; j < 3; ++j) {
      // Rounded to the nearest level; a reference exactly at a .5 tie may round either way.
      EXPECT_LE(std::fabs(double(out.rgb[i + size_t(j)]) - double(want[j])), 0.5 + 1e-6) << "pixel " << i / 3;
      changed += out.rgb[i + size_t(j)] != in.rgb[i + size_t(j)];
    }
  }
  EXPECT_GT(changed, int(in.rgb.size()) / 2);  // the jitter does something
}

TEST(DataAugmentHed, IdentityLeavesTheImageAndAnUnjitteredStainAlone) {
  const float one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
  const Image in = noise_image(24, 24, 3);
  Image same = in;
  apply_hed_jitter(same, one, zero);
  EXPECT_EQ(same.rgb, in.rgb);
  // An eosin-only image (every pixel eosin at some concentration) is left alone by a jitter of
  // haematoxylin and DAB: only its own concentration would move it.
  Image eosin;
  eosin.width = 16, eosin.height = 1;
  for (int x = 0; x < 16; ++x)
    for (int j = 0; j < 3; ++j)
      eosin.rgb.push_back(uint8_t(std::lround(256.0 * std::exp(-0.1 * x * kRgbFromHed[1][j]) - 1)));
  Image e2 = eosin;
  const float a_h[3] = {1.3f, 1, 0.7f};
  apply_hed_jitter(e2, a_h, zero);
  for (size_t i = 0; i < eosin.rgb.size(); ++i) EXPECT_NEAR(e2.rgb[i], eosin.rgb[i], 1) << i;
  // ... and scaling eosin by 1.5 gives the image drawn at 1.5 times the concentration.
  const float a_e[3] = {1, 1.5f, 1};
  Image e3 = eosin;
  apply_hed_jitter(e3, a_e, zero);
  for (int x = 0; x < 16; ++x)
    for (int j = 0; j < 3; ++j)
      EXPECT_NEAR(e3.rgb[size_t(x) * 3 + size_t(j)], 256.0 * std::exp(-0.15 * x * kRgbFromHed[1][j]) - 1, 1.5)
          << x << " " << j;
}

TEST(DataAugmentHed, DrawnWithinRangeOnlyWhenAskedFor) {
  AugmentConfig cfg;
  cfg.enabled = true;
  Rng a(5), b(5);
  cfg.hed = 0;
  EXPECT_FALSE(draw_augment(cfg, a).hed);
  cfg.hed = 0.1f;
  for (int i = 0; i < 200; ++i) {
    const AugmentParams p = draw_augment(cfg, b);
    ASSERT_TRUE(p.hed);
    for (int k = 0; k < 3; ++k) {
      EXPECT_GE(p.hed_alpha[k], 0.9f);
      EXPECT_LE(p.hed_alpha[k], 1.1f);
      EXPECT_GE(p.hed_beta[k], -0.1f);
      EXPECT_LE(p.hed_beta[k], 0.1f);
    }
  }
}
