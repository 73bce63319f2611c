#include "engine/data/cell_size.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace vit {

namespace {

// ln((B + 1) / (G + 1)) of every pixel, averaged over a 3x3 window (clipped at the edges) so that
// granules and JPEG noise do not break the cell into pieces.
std::vector<double> smoothed_score(const Image& img) {
  const int w = img.width, h = img.height;
  std::vector<double> sum(size_t(w + 1) * (h + 1), 0.0);  // integral image
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const uint8_t* p = &img.rgb[(size_t(y) * w + x) * 3];
      const double s = std::log((p[2] + 1.0) / (p[1] + 1.0));
      sum[size_t(y + 1) * (w + 1) + x + 1] =
          s + sum[size_t(y) * (w + 1) + x + 1] + sum[size_t(y + 1) * (w + 1) + x] - sum[size_t(y) * (w + 1) + x];
    }
  std::vector<double> out(size_t(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int x0 = std::max(0, x - 1), x1 = std::min(w, x + 2), y0 = std::max(0, y - 1), y1 = std::min(h, y + 2);
      const double s = sum[size_t(y1) * (w + 1) + x1] - sum[size_t(y0) * (w + 1) + x1] -
                       sum[size_t(y1) * (w + 1) + x0] + sum[size_t(y0) * (w + 1) + x0];
      out[size_t(y) * w + x] = s / double((x1 - x0) * (y1 - y0));
    }
  return out;
}

// Index of the pixel nearest the image centre among those with score above t; -1 if none.
long nearest_to_centre(const std::vector<double>& score, int w, int h, double t) {
  long best = -1;
  double best_d = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      if (score[size_t(y) * w + x] <= t) continue;
      const double d = (x + 0.5 - w / 2.0) * (x + 0.5 - w / 2.0) + (y + 0.5 - h / 2.0) * (y + 0.5 - h / 2.0);
      if (best < 0 || d < best_d) best = long(y) * w + x, best_d = d;
    }
  return best;
}

// 4-connected flood fill from the seeds over pixels where inside[i]; marks them in `mark`.
void flood(const std::vector<char>& inside, int w, int h, std::vector<long> stack, std::vector<char>& mark) {
  while (!stack.empty()) {
    const long i = stack.back();
    stack.pop_back();
    if (mark[size_t(i)] || !inside[size_t(i)]) continue;
    mark[size_t(i)] = 1;
    const int x = int(i % w), y = int(i / w);
    if (x > 0) stack.push_back(i - 1);
    if (x + 1 < w) stack.push_back(i + 1);
    if (y > 0) stack.push_back(i - w);
    if (y + 1 < h) stack.push_back(i + w);
  }
}

// The region grown from `seed` with its holes filled: every pixel not reachable from the image's
// edge without crossing the region.
std::vector<char> filled_region(const std::vector<char>& stained, int w, int h, long seed) {
  std::vector<char> region(stained.size(), 0), outside(stained.size(), 0);
  flood(stained, w, h, {seed}, region);
  std::vector<char> not_region(stained.size());
  for (size_t i = 0; i < not_region.size(); ++i) not_region[i] = !region[i];
  std::vector<long> edge;
  for (int x = 0; x < w; ++x) edge.push_back(x), edge.push_back(long(h - 1) * w + x);
  for (int y = 0; y < h; ++y) edge.push_back(long(y) * w), edge.push_back(long(y) * w + w - 1);
  flood(not_region, w, h, edge, outside);
  for (size_t i = 0; i < region.size(); ++i) region[i] = !outside[i];
  return region;
}

}  // namespace

std::vector<char> cell_mask(const Image& img, const CellDetectConfig& cfg) {
  const int w = img.width, h = img.height;
  if (w <= 0 || h <= 0) return {};
  const std::vector<double> score = smoothed_score(img);
  long seed = nearest_to_centre(score, w, h, cfg.nucleus_score);
  if (seed < 0) seed = nearest_to_centre(score, w, h, cfg.cell_score);
  if (seed < 0) return {};
  std::vector<char> stained(score.size());
  for (size_t i = 0; i < score.size(); ++i) stained[i] = score[i] > cfg.cell_score;
  std::vector<char> region = filled_region(stained, w, h, seed);
  if (std::count(region.begin(), region.end(), char(1)) < cfg.min_pixels) return {};
  return region;
}

CellExtent detect_cell(const Image& img, const CellDetectConfig& cfg) {
  CellExtent e;
  const std::vector<char> region = cell_mask(img, cfg);
  if (region.empty()) return e;
  const size_t w = size_t(img.width);
  double sx = 0, sy = 0;
  for (size_t i = 0; i < region.size(); ++i)
    if (region[i]) ++e.pixels, sx += double(i % w) + 0.5, sy += double(i / w) + 0.5;
  e.found = true;
  e.cx = sx / double(e.pixels), e.cy = sy / double(e.pixels);
  e.diameter = std::sqrt(4.0 * double(e.pixels) / 3.14159265358979323846);
  return e;
}

double cell_fraction(const Image& img, const CellDetectConfig& cfg) {
  const CellExtent e = detect_cell(img, cfg);
  return e.found ? e.diameter / double(std::max(img.width, img.height)) : 0.0;
}

CellSizeReference cell_size_reference(const std::vector<Image>& images, const CellDetectConfig& cfg) {
  CellSizeReference r;
  std::vector<double> f;
  for (const Image& im : images) {
    ++r.images;
    const double x = cell_fraction(im, cfg);
    if (x > 0) f.push_back(x);
  }
  if (f.empty()) throw std::runtime_error("cell_size_reference: no cell found in any of the " +
                                          std::to_string(images.size()) + " images");
  r.found = int(f.size());
  std::nth_element(f.begin(), f.begin() + long(f.size() / 2), f.end());
  r.fraction = f[f.size() / 2];
  return r;
}

nlohmann::json CellSizeReference::to_json() const {
  return {{"fraction", fraction},
          {"images", images},
          {"found", found},
          {"method", "median over a sample of train images of the white cell's equivalent diameter / view side"}};
}

CellSizeReference CellSizeReference::from_json(const nlohmann::json& j) {
  CellSizeReference r;
  try {
    r.fraction = j.at("fraction").get<double>();
    r.images = j.value("images", 0), r.found = j.value("found", 0);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("cell-size reference in the checkpoint is malformed: ") + e.what());
  }
  if (!(r.fraction > 0 && r.fraction <= 1))
    throw std::runtime_error("cell-size reference in the checkpoint is malformed: fraction " +
                             std::to_string(r.fraction) + " is not in (0, 1]");
  return r;
}

CellSizeNorm parse_cell_size_norm(const std::string& s) {
  if (s == "none") return CellSizeNorm::kNone;
  if (s == "normalize") return CellSizeNorm::kNormalize;
  throw std::invalid_argument("--cell-size must be none, normalize or auto, not '" + s + "'");
}

const char* cell_size_norm_name(CellSizeNorm m) { return m == CellSizeNorm::kNormalize ? "normalize" : "none"; }

Image cell_size_view(const Image& img, int size, double fraction, const CellDetectConfig& cfg) {
  if (!(fraction > 0 && fraction <= 1))
    throw std::invalid_argument("cell_size_view: fraction " + std::to_string(fraction) + " is not in (0, 1]");
  const CellExtent e = detect_cell(img, cfg);
  if (!e.found) return preprocess(img, size);
  const double base = std::max(img.width, img.height);
  const double side = std::clamp(e.diameter / fraction, base / 3, base * 3);
  const int n = std::max(1, int(std::lround(side)));
  const int x0 = int(std::lround(e.cx - n / 2.0)), y0 = int(std::lround(e.cy - n / 2.0));
  uint8_t fill[3];
  border_color(img, fill);
  Image win;
  win.width = win.height = n;
  win.rgb.resize(size_t(n) * n * 3);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const int sx = x0 + x, sy = y0 + y;
      const bool in = sx >= 0 && sy >= 0 && sx < img.width && sy < img.height;
      const uint8_t* p = in ? &img.rgb[(size_t(sy) * img.width + sx) * 3] : fill;
      std::copy(p, p + 3, &win.rgb[(size_t(y) * n + x) * 3]);
    }
  return resize_aa(win, size, size);
}

}  // namespace vit
