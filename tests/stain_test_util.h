// Smears drawn for the colour-calibration tests (test_stain_calibration.cpp, test_stain_calibrate_cli.cpp):
// a white cell of one of three kinds on beige plasma with pink red cells, and the same smear as
// another lab would show it (every pixel's Lab channels mapped by a known s x + t).
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/data/image.h"
#include "engine/data/stain.h"

namespace vt {

inline const uint8_t kPlasma[3] = {240, 225, 200};  // beige
inline const uint8_t kRedCell[3] = {215, 165, 165};  // pink
inline const uint8_t kNucleus[3] = {90, 40, 150};    // purple
// Cytoplasms of three kinds of white cell: lilac, bluish, pink-lilac.
inline const uint8_t kCytoplasm[3][3] = {{200, 170, 215}, {165, 180, 225}, {215, 170, 205}};

inline bool in_disk(int x, int y, double cx, double cy, double r) {
  return (x + 0.5 - cx) * (x + 0.5 - cx) + (y + 0.5 - cy) * (y + 0.5 - cy) <= r * r;
}

// A 160 x 160 smear: a white cell of kind `kind` and radius r at the centre (nucleus r / 2), red
// cells in two corners. With `cell`, which pixels the test drew as the white cell.
inline vit::Image smear(int kind, double r, std::vector<char>* cell = nullptr) {
  const int n = 160;
  vit::Image im;
  im.width = im.height = n;
  im.rgb.resize(size_t(n) * n * 3);
  if (cell) cell->assign(size_t(n) * n, 0);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const uint8_t* c = kPlasma;
      if (in_disk(x, y, 22, 22, 18) || in_disk(x, y, n - 22.0, n - 22.0, 18)) c = kRedCell;
      if (in_disk(x, y, n / 2.0, n / 2.0, r)) c = kCytoplasm[kind];
      if (in_disk(x, y, n / 2.0, n / 2.0, r / 2)) c = kNucleus;
      if (cell) (*cell)[size_t(y) * n + x] = in_disk(x, y, n / 2.0, n / 2.0, r);
      std::copy(c, c + 3, &im.rgb[(size_t(y) * n + x) * 3]);
    }
  return im;
}

// The same smear as another lab would show it: every pixel's Lab channels mapped by s x + t.
inline vit::Image other_lab(const vit::Image& im, const double s[3], const double t[3]) {
  vit::Image o = im;
  for (size_t i = 0; i < size_t(im.width) * im.height; ++i) {
    const double rgb[3] = {double(im.rgb[3 * i]), double(im.rgb[3 * i + 1]), double(im.rgb[3 * i + 2])};
    double lab[3], out[3];
    vit::rgb_to_lab(rgb, lab);
    for (int c = 0; c < 3; ++c) lab[c] = s[c] * lab[c] + t[c];
    vit::lab_to_rgb(lab, out);
    for (int c = 0; c < 3; ++c) o.rgb[3 * i + size_t(c)] = uint8_t(std::lround(std::clamp(out[c], 0.0, 255.0)));
  }
  return o;
}

}  // namespace vt
