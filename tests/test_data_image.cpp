// Decoding errors, pad-to-square, antialiased resize against Pillow, normalisation.
#include <gtest/gtest.h>

#include "engine/data/image.h"
#include "tests/data_test_util.h"

using namespace vit;
using namespace vit::testutil;

namespace {
std::string error_of(const std::vector<uint8_t>& b, const std::string& name) {
  try {
    decode_image(b.data(), b.size(), name);
  } catch (const ImageError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(DataImage, BadFilesGiveClearErrorsNamingTheFile) {
  const auto jpg = read_bytes(fixtures() / "wbc/pbc/basophil/BA_100102.jpg");
  ASSERT_GT(jpg.size(), 1000u);
  EXPECT_NE(error_of({}, "a.jpg").find("a.jpg: empty file"), std::string::npos);
  std::vector<uint8_t> half(jpg.begin(), jpg.begin() + jpg.size() / 2);
  EXPECT_NE(error_of(half, "half.jpg").find("half.jpg: truncated JPEG"), std::string::npos);
  std::string text = "hello, this is a text file\n";
  EXPECT_NE(error_of({text.begin(), text.end()}, "t.jpg").find("not an image"), std::string::npos);
  const auto ds = read_bytes(fixtures() / "wbc/pbc/neutrophil/.DS_169665.jpg");  // a real macOS .DS_Store
  ASSERT_FALSE(ds.empty());
  EXPECT_NE(error_of(ds, ".DS_169665.jpg").find(".DS_169665.jpg: not an image"), std::string::npos);
  // A PNG signature followed by garbage: stb must fail, and we must say so.
  std::vector<uint8_t> badpng = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_NE(error_of(badpng, "b.png").find("b.png:"), std::string::npos);
  EXPECT_THROW(load_image("/nonexistent/x.jpg"), ImageError);
}

TEST(DataImage, AFolderGivenAsAnImageIsNamed) {
  // `explain DIR` said only "basic_filebuf::underflow error reading the file: Is a directory".
  TempDir d("image_folder");
  const fs::path folder = d.path / "cells.png";
  fs::create_directories(folder);
  try {
    load_image(folder.string());
    FAIL() << "expected ImageError";
  } catch (const ImageError& e) {
    EXPECT_EQ(std::string(e.what()), folder.string() + ": a folder, not an image file");
  }
}

TEST(DataImage, DecodesJpegPngBmp) {
  Image a = load_image((fixtures() / "wbc/pbc/basophil/BA_100102.jpg").string());
  EXPECT_EQ(a.width, 360);
  EXPECT_EQ(a.height, 363);
  Image b = load_image((fixtures() / "small_120.bmp").string());
  EXPECT_EQ(b.width, 120);
  Image c = load_image((test_data() / "ta_input.png").string());
  EXPECT_EQ(c.width, 64);
}

TEST(DataImage, PadUsesBorderMeanAndCentres) {
  // 4 wide x 2 high; border = all 8 pixels, values 0..7 in red -> mean 3.5 -> 4.
  Image im;
  im.width = 4;
  im.height = 2;
  for (int i = 0; i < 8; ++i) im.rgb.insert(im.rgb.end(), {(uint8_t)i, 10, 200});
  uint8_t fill[3];
  border_color(im, fill);
  EXPECT_EQ(fill[0], 4);
  EXPECT_EQ(fill[1], 10);
  EXPECT_EQ(fill[2], 200);
  Image sq = pad_to_square(im, fill);
  ASSERT_EQ(sq.width, 4);
  ASSERT_EQ(sq.height, 4);
  // Rows 0 and 3 are fill; rows 1-2 are the image (offset (4-2)/2 = 1).
  EXPECT_EQ(sq.rgb[0], 4);
  EXPECT_EQ(sq.rgb[(1 * 4 + 2) * 3], 2);
  EXPECT_EQ(sq.rgb[(2 * 4 + 3) * 3], 7);
  EXPECT_EQ(sq.rgb[(3 * 4 + 3) * 3 + 2], 200);
}

// Pillow resamples with fixed-point coefficients (22 fractional bits) and rounds the
// horizontal pass to uint8; we do the same pass order in float, so on identical input
// pixels only .5-boundary rounding differs: at most 1 level, on well under 1% of values
// (the BMP/PNG cases; measured max 1, mean 0.003). For JPEG inputs the decoders differ
// too (Pillow's libjpeg vs stb_image: IDCT and chroma upsampling), which adds about +-1
// on some pixels before the resize (measured max 2, mean 0.08 on the LMU JPEG).
// The mean bound is what a wrong filter breaks (see the nearest-neighbour test below).
TEST(DataImage, ResizeMatchesPillowAntialiased) {
  struct Case {
    std::string src, ref;
    int size;
    int max_diff;
    double mean_diff;
  };
  const Case cases[] = {{"wbc/pbc/basophil/BA_100102.jpg", "resize_BA_100102_224.png", 224, 3, 0.15},
                        {"wbc/aml-lmu/MYO/MYO_0001.jpg", "resize_MYO_0001_224.png", 224, 3, 0.15},
                        {"small_120.bmp", "resize_small_120_224.png", 224, 1, 0.01},
                        {"wide_240x80.png", "resize_wide_240x80_64.png", 64, 1, 0.01}};
  for (const auto& c : cases) {
    Image got = preprocess(load_image((fixtures() / c.src).string()), c.size);
    Image ref = load_image((test_data() / c.ref).string());
    ASSERT_EQ(got.width, c.size);
    int md = max_abs_diff(got, ref);
    double mean = 0;
    for (size_t i = 0; i < got.rgb.size(); ++i) mean += std::abs((int)got.rgb[i] - (int)ref.rgb[i]);
    mean /= got.rgb.size();
    EXPECT_GE(md, 0) << c.src;
    EXPECT_LE(md, c.max_diff) << c.src;
    EXPECT_LT(mean, c.mean_diff) << c.src;
  }
}

TEST(DataImage, NaiveSubsamplingWouldFailTheResizeTest) {
  // Guards the test above: nearest-neighbour 400->224 on the LMU image is far from Pillow's.
  Image src = load_image((fixtures() / "wbc/aml-lmu/MYO/MYO_0001.jpg").string());
  Image ref = load_image((test_data() / "resize_MYO_0001_224.png").string());
  Image nn;
  nn.width = nn.height = 224;
  nn.rgb.resize(224 * 224 * 3);
  for (int y = 0; y < 224; ++y)
    for (int x = 0; x < 224; ++x)
      for (int c = 0; c < 3; ++c)
        nn.rgb[(y * 224 + x) * 3 + c] = src.rgb[((y * 400 / 224) * 400 + x * 400 / 224) * 3 + c];
  EXPECT_GT(max_abs_diff(nn, ref), 2);
}

TEST(DataImage, ChwNormalisation) {
  Image im;
  im.width = 2;
  im.height = 1;
  im.rgb = {255, 0, 51, 0, 255, 102};
  const float mean[3] = {0.5f, 0.25f, 0.1f}, sd[3] = {0.5f, 0.25f, 0.2f};
  float out[6];
  to_chw_normalized(im, mean, sd, out);
  // Hand-computed: (x/255 - mean) / std, channel-major.
  const float want[6] = {1.f, -1.f, -1.f, 3.f, (0.2f - 0.1f) / 0.2f, (0.4f - 0.1f) / 0.2f};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(out[i], want[i], 1e-5f) << i;  // float rounding only
}
