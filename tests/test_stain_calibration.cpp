// A lab's colour calibration (engine/data/stain.h: lab_anchors, lab_calibration,
// lab_affine_normalize) on smears drawn by the test (stain_test_util.h): the anchors against the mean Lab colours of the
// pixels the test itself drew inside and outside the white cell; a second "lab" made from the
// first by a known per-channel Lab map is mapped back onto it (scales recovered, pixels within the
// 8-bit rounding); the reference calibrated onto itself is the identity; nonsense is refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/data/stain.h"
#include "stain_test_util.h"

using namespace vit;

namespace {

using vt::other_lab;
using vt::smear;

std::vector<Image> reference_lab() {
  std::vector<Image> v;
  for (int i = 0; i < 6; ++i) v.push_back(smear(i % 3, 22 + 5 * i));
  return v;
}

}  // namespace

TEST(StainCalibration, AnchorsAreTheMeanColoursInsideAndOutsideTheCell) {
  // Two smears; the test's own means: each drawn pixel's Lab, averaged inside the drawn cell and
  // outside it, per image, then over the two images.
  std::vector<Image> ims;
  double want[2][3] = {{0, 0, 0}, {0, 0, 0}};
  for (int k = 0; k < 2; ++k) {
    std::vector<char> cell;
    ims.push_back(smear(k, 30 + 10 * k, &cell));
    long double sum[2][3] = {{0, 0, 0}, {0, 0, 0}};
    long count[2] = {0, 0};
    for (size_t i = 0; i < cell.size(); ++i) {
      const double rgb[3] = {double(ims.back().rgb[3 * i]), double(ims.back().rgb[3 * i + 1]),
                             double(ims.back().rgb[3 * i + 2])};
      double lab[3];
      rgb_to_lab(rgb, lab);
      const int w = cell[i] ? 0 : 1;
      for (int c = 0; c < 3; ++c) sum[w][c] += lab[c];
      ++count[w];
    }
    for (int w = 0; w < 2; ++w)
      for (int c = 0; c < 3; ++c) want[w][c] += double(sum[w][c] / count[w]) / 2;
  }
  const LabAnchors a = lab_anchors(ims);
  EXPECT_EQ(a.images, 2);
  EXPECT_EQ(a.cells, 2);
  EXPECT_EQ(a.backgrounds, 2);
  // The detector's 3x3 smoothing may move the cell's edge by a pixel: a ring of cytoplasm, a few
  // per cent of the cell, against anchors over 20 Lab units apart in L.
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(a.cell[c], want[0][c], 1.5) << "cell, channel " << c;
    EXPECT_NEAR(a.background[c], want[1][c], 1.5) << "background, channel " << c;
  }
  EXPECT_GT(std::fabs(a.background[0] - a.cell[0]), 20);
  const LabAnchors back = LabAnchors::from_json(a.to_json());
  for (int c = 0; c < 3; ++c) {
    EXPECT_DOUBLE_EQ(back.cell[c], a.cell[c]);
    EXPECT_DOUBLE_EQ(back.background[c], a.background[c]);
  }
}

TEST(StainCalibration, AnotherLabsColoursAreMappedBackOntoTheReference) {
  // The other lab: paler, greyer and bluer (as bccd-cropped is against PBC).
  const double s[3] = {0.8, 0.85, 0.8}, t[3] = {18, -2, -8};
  const std::vector<Image> ref = reference_lab();
  std::vector<Image> lab;
  for (const Image& im : ref) lab.push_back(other_lab(im, s, t));
  const LabCalibration k = lab_calibration(lab_anchors(lab), lab_anchors(ref));
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(k.scale[c], 1 / s[c], 0.03 / s[c]) << "channel " << c;  // the inverse map
    EXPECT_NEAR(k.shift[c], -t[c] / s[c], 1.5) << "channel " << c;
  }
  // Every image, the three kinds of cell alike, comes back to the reference lab's colours: one map
  // for the whole lab keeps what tells its cells apart.
  for (size_t i = 0; i < ref.size(); ++i) {
    Image back = lab[i];
    lab_affine_normalize(back, k);
    double mean = 0;
    int worst = 0;
    for (size_t j = 0; j < back.rgb.size(); ++j) {
      const int d = std::abs(int(back.rgb[j]) - int(ref[i].rgb[j]));
      mean += d, worst = std::max(worst, d);
    }
    EXPECT_LT(mean / double(back.rgb.size()), 1.5) << "image " << i;
    EXPECT_LE(worst, 6) << "image " << i;
  }
}

TEST(StainCalibration, TheReferenceCalibratedOntoItselfIsTheIdentity) {
  const std::vector<Image> ref = reference_lab();
  const LabAnchors a = lab_anchors(ref);
  const LabCalibration k = lab_calibration(a, a);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(k.scale[c], 1, 1e-12);
    EXPECT_NEAR(k.shift[c], 0, 1e-9);
  }
  Image im = ref[2];
  lab_affine_normalize(im, k);
  int worst = 0;
  for (size_t j = 0; j < im.rgb.size(); ++j) worst = std::max(worst, std::abs(int(im.rgb[j]) - int(ref[2].rgb[j])));
  EXPECT_LE(worst, 1);
  // Through the stored reference and the mode, as predict and eval apply it.
  StainReference r = stain_reference(ref);
  ASSERT_TRUE(r.has_anchors);
  EXPECT_EQ(StainReference::from_json(r.to_json()).has_anchors, true);
  Image m = ref[2];
  EXPECT_THROW(stain_normalize(m, StainNorm::kCalibrated, r), std::logic_error);  // no calibration yet
  r.calibration = LabCalibration::from_json(lab_calibration(a, a).to_json());
  r.calibrated = true;
  stain_normalize(m, parse_stain_norm("calibrated"), r);
  EXPECT_EQ(std::string(stain_norm_name(StainNorm::kCalibrated)), "calibrated");
  worst = 0;
  for (size_t j = 0; j < m.rgb.size(); ++j) worst = std::max(worst, std::abs(int(m.rgb[j]) - int(ref[2].rgb[j])));
  EXPECT_LE(worst, 1);
}

TEST(StainCalibration, NonsenseIsRefusedNamingIt) {
  LabAnchors ref, flat;
  const double cell[3] = {40, 35, -34}, bg[3] = {83, 8, 9};
  for (int c = 0; c < 3; ++c) ref.cell[c] = cell[c], ref.background[c] = bg[c];
  flat = ref;
  flat.cell[1] = flat.background[1] + 0.5;  // cells and background alike in channel a
  try {
    lab_calibration(flat, ref);
    FAIL() << "a lab whose cells look like its background was calibrated";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("channel a"), std::string::npos) << e.what();
  }
  LabAnchors steep = ref;
  steep.cell[0] = steep.background[0] - 5;  // a scale of 8.6 in L
  try {
    lab_calibration(steep, ref);
    FAIL() << "a scale of 8.6 was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("channel L"), std::string::npos) << e.what();
  }
  Image blank;
  blank.width = blank.height = 64;
  blank.rgb.assign(size_t(64) * 64 * 3, 230);
  try {
    lab_anchors({blank, blank});
    FAIL() << "images without a cell gave anchors";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no white cell"), std::string::npos) << e.what();
  }
  EXPECT_THROW(LabCalibration::from_json({{"scale", {1, 1}}, {"shift", {0, 0, 0}}}), std::runtime_error);
  EXPECT_THROW(LabCalibration::from_json({{"scale", {1, -1, 1}}, {"shift", {0, 0, 0}}}), std::runtime_error);
  EXPECT_THROW(LabAnchors::from_json({{"cell", {1, 2, 3}}}), std::runtime_error);
  EXPECT_THROW(parse_stain_norm("calibrate"), std::invalid_argument);
}
