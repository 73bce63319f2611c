// Decoding errors, pad-to-square, antialiased resize against Pillow, normalisation.
#include <gtest/gtest.h>

#include "engine/data/image.h"
#include "engine/data/tiff.h"
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

TEST(DataImage, ALinkThatLeadsNowhereOrAMissingFileSaysWhy) {
  TempDir d("image_link");
  const fs::path link = d.path / "cell.png";
  fs::create_symlink(d.path / "gone.png", link);
  std::string e;
  try {
    load_image(link.string());
  } catch (const ImageError& x) {
    e = x.what();
  }
  EXPECT_NE(e.find("cell.png: a link to '" + (d.path / "gone.png").string() + "', which does not exist"),
            std::string::npos)
      << e;
  try {
    load_image((d.path / "absent.png").string());
  } catch (const ImageError& x) {
    e = x.what();
  }
  EXPECT_NE(e.find("absent.png: cannot open file (No such file or directory)"), std::string::npos) << e;
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

// TIFF, as microscopes write it, against the same pixels that Pillow wrote as PNG beside each file
// (tests/data/tiff/README.md): uncompressed, LZW, deflate, RGBA, 8- and 16-bit grey, palette.
TEST(DataImageTiff, DecodesEveryLayoutToThePixelsPillowWrote) {
  if (!tiff::supported()) GTEST_SKIP() << "built without libtiff";
  const fs::path dir = test_data() / "tiff";
  for (const auto& [tif, png] : std::vector<std::pair<std::string, std::string>>{{"rgb_raw.tif", "rgb.png"},
                                                                               {"rgb_lzw.tif", "rgb.png"},
                                                                               {"rgb_deflate.tif", "rgb.png"},
                                                                               {"rgba.tif", "rgb.png"},
                                                                               {"gray8.tif", "gray.png"},
                                                                               {"gray16.tif", "gray.png"},
                                                                               {"pal.tif", "pal.png"}}) {
    const Image a = load_image((dir / tif).string()), b = load_image((dir / png).string());
    ASSERT_EQ(a.width, 13) << tif;
    ASSERT_EQ(a.height, 7) << tif;
    EXPECT_EQ(max_abs_diff(a, b), 0) << tif;
    const auto bytes = read_bytes(dir / tif);
    int w = 0, h = 0;
    ASSERT_TRUE(image_dimensions(bytes.data(), bytes.size(), &w, &h)) << tif;
    EXPECT_EQ(w, 13);
    EXPECT_EQ(h, 7);
  }
  EXPECT_TRUE(has_image_extension("scan_001.TIF"));
  EXPECT_TRUE(has_image_extension("a.tiff"));
}

TEST(DataImageTiff, BadTiffsAreNamedNotCrashed) {
  const auto good = read_bytes(test_data() / "tiff" / "rgb_lzw.tif");
  if (!tiff::supported()) {  // a build without libtiff says how to get it
    EXPECT_NE(error_of(good, "s.tif").find("s.tif: a TIFF image, and this build"), std::string::npos);
    return;
  }
  // cut in half: the pixels (or the directory at the end) are missing
  const std::vector<uint8_t> half(good.begin(), good.begin() + long(good.size() / 2));
  EXPECT_NE(error_of(half, "half.tif").find("half.tif:"), std::string::npos);
  // a signature and nothing else
  const std::vector<uint8_t> sig = {'I', 'I', 42, 0, 8, 0, 0, 0};
  EXPECT_NE(error_of(sig, "sig.tif").find("sig.tif: unreadable TIFF header"), std::string::npos);
  // a header claiming 100000 x 100000 pixels is refused before they are allocated
  std::vector<uint8_t> huge = read_bytes(test_data() / "tiff" / "rgb_raw.tif");
  int w = 0, h = 0;
  ASSERT_TRUE(image_dimensions(huge.data(), huge.size(), &w, &h));
  size_t patched = 0;
  for (size_t i = 8; i + 12 <= huge.size() && patched < 2; ++i) {  // IFD entries 256 (width) and 257 (length)
    const int tag = huge[i] | huge[i + 1] << 8, type = huge[i + 2] | huge[i + 3] << 8;
    const bool count1 = huge[i + 4] == 1 && huge[i + 5] == 0 && huge[i + 6] == 0 && huge[i + 7] == 0;
    if ((tag == 256 || tag == 257) && (type == 3 || type == 4) && count1) {
      const uint32_t v = 100000;
      huge[i + 2] = 4, huge[i + 3] = 0;  // LONG
      for (int k = 0; k < 4; ++k) huge[i + 8 + size_t(k)] = uint8_t(v >> (8 * k));
      ++patched, i += 11;
    }
  }
  ASSERT_EQ(patched, 2u);
  EXPECT_NE(error_of(huge, "huge.tif").find("huge.tif: implausible size 100000x100000"), std::string::npos)
      << error_of(huge, "huge.tif");
}

// serve decodes TIFFs from the network: damaged ones (bytes flipped, cut, repeated) must end in a
// decoded image or an ImageError naming the upload, never a crash or another exception.
TEST(DataImageTiff, DamagedTiffsDecodeOrAreRefusedNeverCrash) {
  if (!tiff::supported()) GTEST_SKIP() << "built without libtiff";
  std::mt19937 g(2026);
  int refused = 0, decoded = 0;
  for (const char* f : {"rgb_raw.tif", "rgb_lzw.tif", "rgb_deflate.tif", "gray16.tif", "pal.tif"}) {
    const auto good = read_bytes(test_data() / "tiff" / f);
    for (int t = 0; t < 400; ++t) {
      std::vector<uint8_t> b = good;
      const int flips = 1 + int(g() % 8);
      for (int k = 0; k < flips; ++k) b[4 + g() % (b.size() - 4)] = uint8_t(g());  // keep the signature
      if (t % 5 == 0) b.resize(4 + g() % (b.size() - 4));
      try {
        const Image im = decode_image(b.data(), b.size(), "fuzz.tif");
        EXPECT_EQ(im.rgb.size(), size_t(im.width) * size_t(im.height) * 3);
        ++decoded;
      } catch (const ImageError& e) {
        EXPECT_NE(std::string(e.what()).find("fuzz.tif: "), std::string::npos) << e.what();
        ++refused;
      }
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(decoded, 0);
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
