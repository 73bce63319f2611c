// Cell-size normalisation (engine/data/cell_size.h) against references drawn here: a synthetic
// "white cell" (purple nucleus in lilac cytoplasm) of known radius on a beige smear background with
// pink red cells. The detected diameter is checked against the radius drawn; the rescaled view is
// measured by counting the cell's pixels with a colour rule of the test's own, not by the detector.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "engine/data/cell_size.h"

using namespace vit;

namespace {

const uint8_t kBackground[3] = {240, 225, 200};  // beige plasma: absorbs more blue than green
const uint8_t kRedCell[3] = {215, 165, 165};     // pink: blue and green absorbed alike
const uint8_t kCytoplasm[3] = {200, 170, 215};   // lilac
const uint8_t kNucleus[3] = {90, 40, 150};       // purple

void paint_disk(Image& im, double cx, double cy, double r, const uint8_t c[3]) {
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      if ((x + 0.5 - cx) * (x + 0.5 - cx) + (y + 0.5 - cy) * (y + 0.5 - cy) <= r * r)
        for (int k = 0; k < 3; ++k) im.rgb[(size_t(y) * im.width + x) * 3 + size_t(k)] = c[k];
}

// A w x h smear with a white cell of radius r at (cx, cy) (nucleus of radius r / 2) and two red
// cells in the corners.
Image smear(int w, int h, double cx, double cy, double r) {
  Image im;
  im.width = w, im.height = h;
  im.rgb.resize(size_t(w) * h * 3);
  for (size_t i = 0; i < size_t(w) * h; ++i)
    for (int k = 0; k < 3; ++k) im.rgb[3 * i + size_t(k)] = kBackground[k];
  paint_disk(im, 18, 18, 14, kRedCell);
  paint_disk(im, w - 18.0, h - 18.0, 14, kRedCell);
  if (r > 0) {
    paint_disk(im, cx, cy, r, kCytoplasm);
    paint_disk(im, cx, cy, r / 2, kNucleus);
  }
  return im;
}

// The test's own measure of the cell in a view: pixels whose blue exceeds green by 25 or more
// (lilac and purple; the background, the red cells and their blends with it do not), as an
// equivalent diameter over the view's side.
double drawn_fraction(const Image& v) {
  long n = 0;
  for (size_t i = 0; i < size_t(v.width) * v.height; ++i) n += v.rgb[3 * i + 2] >= v.rgb[3 * i + 1] + 25;
  return std::sqrt(4.0 * double(n) / M_PI) / double(std::max(v.width, v.height));
}

}  // namespace

TEST(CellSize, DetectsTheDrawnDiameterAndCentre) {
  for (const double r : {28.0, 45.0, 80.0}) {  // white cells span 60 to 180 pixels of a 224 view
    const Image im = smear(224, 224, 120, 104, r);
    const CellExtent e = detect_cell(im);
    ASSERT_TRUE(e.found) << "r = " << r;
    // 4%: the 3x3 smoothing moves the thresholded edge inwards by under a pixel of radius.
    EXPECT_NEAR(e.diameter, 2 * r, 0.04 * 2 * r) << "r = " << r;
    EXPECT_NEAR(e.cx, 120, 1.0);
    EXPECT_NEAR(e.cy, 104, 1.0);
  }
  // The fraction is of the longer side, the one preprocess() pads the image to.
  const Image wide = smear(300, 200, 150, 100, 30);
  EXPECT_NEAR(cell_fraction(wide), 60.0 / 300, 0.04 * 60 / 300);
}

TEST(CellSize, TheRescaledViewSpansTheTargetFraction) {
  for (const double target : {0.3, 0.5}) {
    for (const double r : {25.0, 90.0}) {  // a cell to enlarge and one to shrink
      const Image v = cell_size_view(smear(240, 240, 110, 130, r), 224, target);
      ASSERT_EQ(v.width, 224);
      ASSERT_EQ(v.height, 224);
      const double before = drawn_fraction(smear(240, 240, 110, 130, r));
      ASSERT_NEAR(before, 2 * r / 240, 0.03 * 2 * r / 240) << "the test's own measure is off";
      EXPECT_NEAR(drawn_fraction(v), target, 0.05 * target) << "r = " << r << ", target " << target;
    }
  }
}

TEST(CellSize, AnImageAtTheTargetIsNearlyUnchanged) {
  const Image im = smear(224, 224, 112, 112, 50);
  const Image plain = preprocess(im, 224);
  const Image v = cell_size_view(im, 224, 100.0 / 224);
  ASSERT_EQ(v.rgb.size(), plain.rgb.size());
  double diff = 0;
  for (size_t i = 0; i < v.rgb.size(); ++i) diff += std::abs(int(v.rgb[i]) - int(plain.rgb[i]));
  // Only the edges of the disks move, by the detector's error of about a pixel (a 2% zoom).
  EXPECT_LT(diff / double(v.rgb.size()), 2.0);
}

TEST(CellSize, ABlankImageIsLeftAsItIs) {
  const Image blank = smear(200, 160, 0, 0, 0);  // background and red cells only
  EXPECT_FALSE(detect_cell(blank).found);
  EXPECT_EQ(cell_fraction(blank), 0.0);
  EXPECT_EQ(cell_size_view(blank, 224, 0.4).rgb, preprocess(blank, 224).rgb);
  Image tiny;
  tiny.width = tiny.height = 1;
  tiny.rgb = {90, 40, 150};  // one purple pixel: below min_pixels, no cell
  EXPECT_FALSE(detect_cell(tiny).found);
  EXPECT_FALSE(detect_cell(Image{}).found);
}

TEST(CellSize, ReferenceIsTheMedianOfTheCellsFound) {
  const CellSizeReference r = cell_size_reference(
      {smear(224, 224, 112, 112, 20), smear(224, 224, 112, 112, 35), smear(224, 224, 112, 112, 60),
       smear(224, 224, 0, 0, 0)});
  EXPECT_EQ(r.images, 4);
  EXPECT_EQ(r.found, 3);
  EXPECT_NEAR(r.fraction, 70.0 / 224, 0.04 * 70 / 224);
  const CellSizeReference back = CellSizeReference::from_json(r.to_json());
  EXPECT_DOUBLE_EQ(back.fraction, r.fraction);
  EXPECT_EQ(back.found, 3);
  EXPECT_THROW(cell_size_reference({smear(100, 100, 0, 0, 0)}), std::runtime_error);
}

TEST(CellSize, RefusesNonsenseNamingIt) {
  EXPECT_THROW(CellSizeReference::from_json({{"images", 3}}), std::runtime_error);
  try {
    CellSizeReference::from_json({{"fraction", 1.5}});
    FAIL() << "a fraction of 1.5 was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("1.5"), std::string::npos) << e.what();
  }
  try {
    parse_cell_size_norm("double");
    FAIL() << "'double' was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'double'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_cell_size_norm("normalize"), CellSizeNorm::kNormalize);
  EXPECT_THROW(cell_size_view(smear(64, 64, 32, 32, 10), 224, 0.0), std::invalid_argument);
}
