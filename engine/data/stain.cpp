#include "engine/data/stain.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "engine/data/cell_size.h"

namespace vit {

namespace {

double srgb_to_linear(double c) {
  c /= 255.0;
  return c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4);
}
double linear_to_srgb(double c) {
  const double s = c <= 0.0031308 ? 12.92 * c : 1.055 * std::pow(c, 1 / 2.4) - 0.055;
  return s * 255.0;
}
const double kWhite[3] = {0.95047, 1.0, 1.08883};  // D65
double f_lab(double t) { return t > 216.0 / 24389 ? std::cbrt(t) : (24389.0 / 27 * t + 16) / 116; }
double f_lab_inv(double f) { return f * f * f > 216.0 / 24389 ? f * f * f : (116 * f - 16) * 27 / 24389; }

uint8_t to_byte(double v) { return uint8_t(std::lround(std::min(255.0, std::max(0.0, v)))); }


// Eigenvectors of a symmetric 3x3 matrix by Jacobi rotations, columns sorted by eigenvalue, largest first.
void eig3(double a[3][3], double vec[3][3], double val[3]) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) vec[i][j] = i == j;
  for (int sweep = 0; sweep < 50; ++sweep) {
    double off = std::abs(a[0][1]) + std::abs(a[0][2]) + std::abs(a[1][2]);
    if (off < 1e-15) break;
    for (int p = 0; p < 2; ++p)
      for (int q = p + 1; q < 3; ++q) {
        if (std::abs(a[p][q]) < 1e-300) continue;
        const double th = 0.5 * std::atan2(2 * a[p][q], a[q][q] - a[p][p]);
        const double c = std::cos(th), s = std::sin(th);
        for (int k = 0; k < 3; ++k) {  // A <- J^T A J
          const double akp = a[k][p], akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (int k = 0; k < 3; ++k) {
          const double apk = a[p][k], aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
        for (int k = 0; k < 3; ++k) {
          const double vkp = vec[k][p], vkq = vec[k][q];
          vec[k][p] = c * vkp - s * vkq;
          vec[k][q] = s * vkp + c * vkq;
        }
      }
  }
  int order[3] = {0, 1, 2};
  std::sort(order, order + 3, [&](int x, int y) { return a[x][x] > a[y][y]; });
  double v2[3][3];
  for (int j = 0; j < 3; ++j) {
    val[j] = a[order[j]][order[j]];
    for (int i = 0; i < 3; ++i) v2[i][j] = vec[i][order[j]];
  }
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) vec[i][j] = v2[i][j];
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, size_t(std::floor(p / 100.0 * double(v.size() - 1) + 0.5)));
  std::nth_element(v.begin(), v.begin() + long(k), v.end());
  return v[k];
}

// Concentrations of the two stains in one pixel's OD, least squares over the 3 channels.
double dot3(const double a[3], const double b[3]) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

void concentrations(const double od3[3], const StainBasis& b, double c[2]) {
  double g00 = 0, g01 = 0, g11 = 0, r0 = 0, r1 = 0;
  for (int k = 0; k < 3; ++k) {
    g00 += b.v[0][k] * b.v[0][k], g01 += b.v[0][k] * b.v[1][k], g11 += b.v[1][k] * b.v[1][k];
    r0 += b.v[0][k] * od3[k], r1 += b.v[1][k] * od3[k];
  }
  const double det = g00 * g11 - g01 * g01;
  c[0] = (g11 * r0 - g01 * r1) / det;
  c[1] = (g00 * r1 - g01 * r0) / det;
}

}  // namespace

double optical_density(uint8_t v) { return -std::log((double(v) + 1) / 256.0); }
uint8_t from_optical_density(double od) { return to_byte(256.0 * std::exp(-od) - 1); }

void rgb_to_lab(const double rgb[3], double lab[3]) {
  const double r = srgb_to_linear(rgb[0]), g = srgb_to_linear(rgb[1]), b = srgb_to_linear(rgb[2]);
  const double x = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b;
  const double y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
  const double z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b;
  const double fx = f_lab(x / kWhite[0]), fy = f_lab(y / kWhite[1]), fz = f_lab(z / kWhite[2]);
  lab[0] = 116 * fy - 16;
  lab[1] = 500 * (fx - fy);
  lab[2] = 200 * (fy - fz);
}

void lab_to_rgb(const double lab[3], double rgb[3]) {
  const double fy = (lab[0] + 16) / 116, fx = fy + lab[1] / 500, fz = fy - lab[2] / 200;
  const double x = kWhite[0] * f_lab_inv(fx), y = kWhite[1] * f_lab_inv(fy), z = kWhite[2] * f_lab_inv(fz);
  const double r = 3.2404542 * x - 1.5371385 * y - 0.4985314 * z;
  const double g = -0.9692660 * x + 1.8760108 * y + 0.0415560 * z;
  const double b = 0.0556434 * x - 0.2040259 * y + 1.0572252 * z;
  rgb[0] = linear_to_srgb(r), rgb[1] = linear_to_srgb(g), rgb[2] = linear_to_srgb(b);
}

namespace {
// One 8-bit pixel's Lab.
void lab_of(const uint8_t* p, double lab[3]) {
  const double rgb[3] = {double(p[0]), double(p[1]), double(p[2])};
  rgb_to_lab(rgb, lab);
}

// Every pixel through Lab: f(lab) changes its three channels in place, and the pixel is written
// back in 8 bits. Reinhard and the lab's colour map are both such per-channel maps.
template <class F>
void map_lab_pixels(Image& img, F f) {
  const size_t n = size_t(img.width) * img.height;
  for (size_t i = 0; i < n; ++i) {
    double lab[3], out[3];
    lab_of(&img.rgb[3 * i], lab);
    f(lab);
    lab_to_rgb(lab, out);
    for (int c = 0; c < 3; ++c) img.rgb[3 * i + size_t(c)] = to_byte(out[c]);
  }
}
}  // namespace

LabStats lab_stats(const Image& img) {
  const size_t n = size_t(img.width) * img.height;
  if (!n) throw std::runtime_error("lab_stats: empty image");
  double s[3] = {0, 0, 0}, s2[3] = {0, 0, 0};
  for (size_t i = 0; i < n; ++i) {
    double lab[3];
    lab_of(&img.rgb[3 * i], lab);
    for (int c = 0; c < 3; ++c) s[c] += lab[c], s2[c] += lab[c] * lab[c];
  }
  LabStats st;
  for (int c = 0; c < 3; ++c) {
    st.mean[c] = s[c] / double(n);
    st.std[c] = std::sqrt(std::max(0.0, s2[c] / double(n) - st.mean[c] * st.mean[c]));
  }
  return st;
}

void reinhard_normalize(Image& img, const LabStats& target) {
  const LabStats src = lab_stats(img);
  map_lab_pixels(img, [&](double lab[3]) {
    for (int c = 0; c < 3; ++c)
      lab[c] = (lab[c] - src.mean[c]) / std::max(src.std[c], 1e-6) * target.std[c] + target.mean[c];
  });
}

StainBasis macenko_basis(const Image& img, double beta, double alpha) {
  const size_t n = size_t(img.width) * img.height;
  std::vector<double> ods;
  ods.reserve(3 * n);
  for (size_t i = 0; i < n; ++i) {
    const double o[3] = {optical_density(img.rgb[3 * i]), optical_density(img.rgb[3 * i + 1]),
                          optical_density(img.rgb[3 * i + 2])};
    if (o[0] > beta && o[1] > beta && o[2] > beta) ods.insert(ods.end(), o, o + 3);
  }
  const size_t m = ods.size() / 3;
  if (m < 100) throw std::runtime_error("macenko: only " + std::to_string(m) + " stained pixels");
  // The plane of the two largest directions of the (uncentred, as Macenko) OD covariance.
  double cov[3][3] = {{0}};
  for (size_t i = 0; i < m; ++i)
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) cov[a][b] += ods[3 * i + a] * ods[3 * i + b] / double(m);
  double vec[3][3], val[3];
  eig3(cov, vec, val);
  double e0[3] = {vec[0][0], vec[1][0], vec[2][0]}, e1[3] = {vec[0][1], vec[1][1], vec[2][1]};
  if (e0[0] + e0[1] + e0[2] < 0)  // point into positive optical density
    for (double& x : e0) x = -x;
  if (e1[0] + e1[1] + e1[2] < 0)
    for (double& x : e1) x = -x;
  std::vector<double> phi(m);
  for (size_t i = 0; i < m; ++i) {
    const double* o = &ods[3 * i];
    phi[i] = std::atan2(o[0] * e1[0] + o[1] * e1[1] + o[2] * e1[2], o[0] * e0[0] + o[1] * e0[1] + o[2] * e0[2]);
  }
  const double lo = percentile(phi, alpha), hi = percentile(phi, 100 - alpha);
  StainBasis b;
  for (int k = 0; k < 3; ++k) {
    b.v[0][k] = std::cos(lo) * e0[k] + std::sin(lo) * e1[k];
    b.v[1][k] = std::cos(hi) * e0[k] + std::sin(hi) * e1[k];
  }
  // Hematoxylin absorbs more red light than eosin: it goes first.
  if (b.v[0][0] < b.v[1][0])
    for (int k = 0; k < 3; ++k) std::swap(b.v[0][k], b.v[1][k]);
  for (auto& v : b.v) {
    const double norm = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    for (int k = 0; k < 3; ++k) v[k] /= norm;
  }
  std::vector<double> c0(m), c1(m);
  for (size_t i = 0; i < m; ++i) {
    double c[2];
    concentrations(&ods[3 * i], b, c);
    c0[i] = c[0], c1[i] = c[1];
  }
  b.max_conc[0] = std::max(1e-6, percentile(c0, 99)), b.max_conc[1] = std::max(1e-6, percentile(c1, 99));
  return b;
}

void align_basis(StainBasis& b, const StainBasis& ref) {
  const double kept = dot3(b.v[0], ref.v[0]) + dot3(b.v[1], ref.v[1]);
  const double swapped = dot3(b.v[0], ref.v[1]) + dot3(b.v[1], ref.v[0]);
  if (swapped <= kept) return;
  for (int k = 0; k < 3; ++k) std::swap(b.v[0][k], b.v[1][k]);
  std::swap(b.max_conc[0], b.max_conc[1]);
}

void macenko_normalize(Image& img, const StainBasis& target) {
  StainBasis src;
  try {
    src = macenko_basis(img);
  } catch (const std::runtime_error&) {
    return;  // too little stain to estimate a basis: leave the image as it is
  }
  // The red rule of macenko_basis is not stable on Romanowsky stains (both vectors absorb red
  // about equally): pair each of the image's stains with the reference's nearest one instead.
  align_basis(src, target);
  const size_t n = size_t(img.width) * img.height;
  for (size_t i = 0; i < n; ++i) {
    const double o[3] = {optical_density(img.rgb[3 * i]), optical_density(img.rgb[3 * i + 1]),
                          optical_density(img.rgb[3 * i + 2])};
    double c[2];
    concentrations(o, src, c);
    for (int s = 0; s < 2; ++s) c[s] *= target.max_conc[s] / src.max_conc[s];
    for (int k = 0; k < 3; ++k) {
      const double od_out = c[0] * target.v[0][k] + c[1] * target.v[1][k];
      img.rgb[3 * i + size_t(k)] = from_optical_density(od_out);
    }
  }
}

namespace {

// Componentwise medians of the bases, each vector back to unit length: robust to a few odd images.
StainBasis median_basis(const std::vector<StainBasis>& bases) {
  StainBasis m;
  std::vector<double> x(bases.size());
  for (int s = 0; s < 2; ++s) {
    for (int k = 0; k < 3; ++k) {
      for (size_t i = 0; i < bases.size(); ++i) x[i] = bases[i].v[s][k];
      m.v[s][k] = percentile(x, 50);
    }
    const double norm = std::sqrt(dot3(m.v[s], m.v[s]));
    for (int k = 0; k < 3; ++k) m.v[s][k] /= norm;
    for (size_t i = 0; i < bases.size(); ++i) x[i] = bases[i].max_conc[s];
    m.max_conc[s] = percentile(x, 50);
  }
  return m;
}

}  // namespace

namespace {
const char* const kLabChannel[3] = {"L", "a", "b"};

// At least this many pixels make an anchor of one image: a few stray pixels are not a background.
constexpr long kMinAnchorPixels = 100;
}  // namespace

LabAnchors lab_anchors(const std::vector<Image>& images) {
  LabAnchors a;
  for (const Image& im : images) {
    ++a.images;
    const std::vector<char> mask = cell_mask(im);
    const size_t n = size_t(im.width) * im.height;
    double s[2][3] = {{0, 0, 0}, {0, 0, 0}};  // [cell, background][channel]
    long count[2] = {0, 0};
    for (size_t i = 0; i < n; ++i) {
      const int k = !mask.empty() && mask[i] ? 0 : 1;
      double lab[3];
      lab_of(&im.rgb[3 * i], lab);
      for (int c = 0; c < 3; ++c) s[k][c] += lab[c];
      ++count[k];
    }
    if (count[0] >= kMinAnchorPixels) {
      for (int c = 0; c < 3; ++c) a.cell[c] += s[0][c] / double(count[0]);
      ++a.cells;
    }
    if (count[1] >= kMinAnchorPixels) {
      for (int c = 0; c < 3; ++c) a.background[c] += s[1][c] / double(count[1]);
      ++a.backgrounds;
    }
  }
  if (!a.cells || !a.backgrounds)
    throw std::runtime_error("lab_anchors: " + std::string(!a.cells ? "no white cell" : "no background") +
                             " found in any of the " + std::to_string(images.size()) + " images");
  for (int c = 0; c < 3; ++c) a.cell[c] /= a.cells, a.background[c] /= a.backgrounds;
  return a;
}

nlohmann::json LabAnchors::to_json() const {
  return {{"cell", cell}, {"background", background}, {"images", images}, {"cells", cells}, {"backgrounds", backgrounds}};
}

LabAnchors LabAnchors::from_json(const nlohmann::json& j) {
  LabAnchors a;
  try {
    for (int c = 0; c < 3; ++c)
      a.cell[c] = j.at("cell").at(size_t(c)), a.background[c] = j.at("background").at(size_t(c));
    a.images = j.value("images", 0), a.cells = j.value("cells", 0), a.backgrounds = j.value("backgrounds", 0);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("colour anchors in the checkpoint are malformed: ") + e.what());
  }
  return a;
}

LabCalibration lab_calibration(const LabAnchors& lab, const LabAnchors& ref) {
  LabCalibration k;
  k.lab = lab;
  for (int c = 0; c < 3; ++c) {
    const double d = lab.background[c] - lab.cell[c], dr = ref.background[c] - ref.cell[c];
    char buf[320];
    if (std::fabs(d) < 2.0) {
      std::snprintf(buf, sizeof buf,
                    "the images' cells and background are %.2f Lab units apart in channel %s (cell %.1f, "
                    "background %.1f): too close to fit a colour map on",
                    std::fabs(d), kLabChannel[c], lab.cell[c], lab.background[c]);
      throw std::runtime_error(buf);
    }
    k.scale[c] = dr / d;
    k.shift[c] = ref.background[c] - k.scale[c] * lab.background[c];
    if (!(k.scale[c] >= 0.25 && k.scale[c] <= 4.0)) {
      std::snprintf(buf, sizeof buf,
                    "the colour map would scale Lab channel %s by %.2f (cell %.1f -> %.1f, background %.1f -> "
                    "%.1f), outside [0.25, 4]: these images do not look like stained cells on a background",
                    kLabChannel[c], k.scale[c], lab.cell[c], ref.cell[c], lab.background[c], ref.background[c]);
      throw std::runtime_error(buf);
    }
  }
  return k;
}

nlohmann::json LabCalibration::to_json() const {
  return {{"scale", scale},
          {"shift", shift},
          {"anchors", lab.to_json()},
          {"method", "per Lab channel, scale x + shift mapping the images' mean cell and background colours onto "
                     "the training images'"}};
}

LabCalibration LabCalibration::from_json(const nlohmann::json& j) {
  LabCalibration k;
  try {
    for (int c = 0; c < 3; ++c) k.scale[c] = j.at("scale").at(size_t(c)), k.shift[c] = j.at("shift").at(size_t(c));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("colour calibration in the checkpoint is malformed: ") + e.what());
  }
  for (int c = 0; c < 3; ++c)
    if (!(k.scale[c] > 0) || !std::isfinite(k.shift[c]))
      throw std::runtime_error("colour calibration in the checkpoint is malformed: channel " +
                               std::string(kLabChannel[c]) + " has scale " + std::to_string(k.scale[c]));
  if (j.contains("anchors")) k.lab = LabAnchors::from_json(j.at("anchors"));
  return k;
}

void lab_affine_normalize(Image& img, const LabCalibration& k) {
  map_lab_pixels(img, [&](double lab[3]) {
    for (int c = 0; c < 3; ++c) lab[c] = k.scale[c] * lab[c] + k.shift[c];
  });
}

StainReference stain_reference(const std::vector<Image>& images) {
  if (images.empty()) throw std::runtime_error("stain_reference: no images");
  StainReference r;
  std::vector<double> lab[6];
  std::vector<StainBasis> bases;
  for (const Image& im : images) {
    const LabStats s = lab_stats(im);
    for (int c = 0; c < 3; ++c) lab[c].push_back(s.mean[c]), lab[3 + c].push_back(s.std[c]);
    try {
      bases.push_back(macenko_basis(im));
    } catch (const std::runtime_error&) {
    }
    ++r.images;
  }
  for (int c = 0; c < 3; ++c) {
    double m = 0, sd = 0;
    for (double v : lab[c]) m += v;
    for (double v : lab[3 + c]) sd += v;
    r.lab.mean[c] = m / double(lab[c].size()), r.lab.std[c] = sd / double(lab[3 + c].size());
  }
  if (bases.empty()) throw std::runtime_error("stain_reference: no image has enough stain for a basis");
  // The red rule may order two images' stains differently: take a first median, pair every
  // image's stains with it by cosine, and take the median of the paired bases.
  const StainBasis first = median_basis(bases);
  for (StainBasis& b : bases) align_basis(b, first);
  r.basis = median_basis(bases);
  try {  // images of something other than stained cells have no anchors; the rest stands
    r.anchors = lab_anchors(images);
    r.has_anchors = true;
  } catch (const std::runtime_error&) {
  }
  return r;
}

nlohmann::json StainReference::to_json() const {
  nlohmann::json j = {{"lab_mean", lab.mean},
                      {"lab_std", lab.std},
                      {"stain_vectors", {basis.v[0], basis.v[1]}},
                      {"max_concentration", basis.max_conc},
                      {"images", images},
                      {"method", "Lab mean/std (Reinhard), median Macenko basis and mean cell/background Lab "
                                 "colours over a sample of train images"}};
  if (has_anchors) j["anchors"] = anchors.to_json();
  return j;
}

StainReference StainReference::from_json(const nlohmann::json& j) {
  StainReference r;
  try {
    for (int c = 0; c < 3; ++c)
      r.lab.mean[c] = j.at("lab_mean").at(size_t(c)), r.lab.std[c] = j.at("lab_std").at(size_t(c));
    for (int s = 0; s < 2; ++s) {
      for (int k = 0; k < 3; ++k) r.basis.v[s][k] = j.at("stain_vectors").at(size_t(s)).at(size_t(k));
      r.basis.max_conc[s] = j.at("max_concentration").at(size_t(s));
    }
    r.images = j.value("images", 0);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("stain reference in the checkpoint is malformed: ") + e.what());
  }
  if (j.contains("anchors")) r.anchors = LabAnchors::from_json(j.at("anchors")), r.has_anchors = true;
  return r;
}

StainNorm parse_stain_norm(const std::string& s) {
  if (s == "none") return StainNorm::kNone;
  if (s == "reinhard") return StainNorm::kReinhard;
  if (s == "macenko") return StainNorm::kMacenko;
  if (s == "calibrated") return StainNorm::kCalibrated;
  throw std::invalid_argument("--stain-norm must be none, reinhard, macenko or calibrated, not '" + s + "'");
}

const char* stain_norm_name(StainNorm m) {
  switch (m) {
    case StainNorm::kReinhard: return "reinhard";
    case StainNorm::kMacenko: return "macenko";
    case StainNorm::kCalibrated: return "calibrated";
    default: return "none";
  }
}

void stain_normalize(Image& img, StainNorm m, const StainReference& ref) {
  if (m == StainNorm::kReinhard) reinhard_normalize(img, ref.lab);
  if (m == StainNorm::kMacenko) macenko_normalize(img, ref.basis);
  if (m == StainNorm::kCalibrated) {
    if (!ref.calibrated) throw std::logic_error("stain_normalize: --stain-norm calibrated without a calibration");
    lab_affine_normalize(img, ref.calibration);
  }
}

}  // namespace vit
