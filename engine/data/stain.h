// Stain and colour normalisation of stained-cell images (another lab's stain, scanner and white
// balance moved onto the training set's): Reinhard (match the Lab-space mean and spread of each
// channel) and Macenko (estimate the two stain vectors in optical-density space, re-express the
// image with the reference's vectors and concentration range). Arithmetic in double.
//   Reinhard E et al., "Color transfer between images", IEEE CG&A 2001.
//   Macenko M et al., "A method for normalizing histology slides for quantitative analysis", ISBI 2009.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/data/image.h"

namespace vit {

// Optical density of one 8-bit channel value, -ln((I + 1) / 256) (I = 255 is 0: no light absorbed),
// and back to 8 bits (rounded, clamped). Macenko and the HED jitter (engine/data/augment.h) both.
double optical_density(uint8_t v);
uint8_t from_optical_density(double od);

// sRGB (D65) <-> CIE Lab, one pixel, 0..255 in and out for RGB.
void rgb_to_lab(const double rgb[3], double lab[3]);
void lab_to_rgb(const double lab[3], double rgb[3]);

struct LabStats {
  double mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
};
LabStats lab_stats(const Image& img);

// A stain basis in optical-density space: two unit vectors (hematoxylin first: the one that
// absorbs more red), and the 99th percentile of each stain's concentration.
struct StainBasis {
  double v[2][3] = {{0, 0, 0}, {0, 0, 0}};
  double max_conc[2] = {1, 1};
};
// Macenko's estimate from one image's pixels whose optical density exceeds beta in every
// channel (not background); alpha percentile for the robust extreme angles. Throws
// std::runtime_error when fewer than 100 pixels are stained.
StainBasis macenko_basis(const Image& img, double beta = 0.15, double alpha = 1.0);

// Swaps b's two stains (vectors and concentration ranges) when that pairs them better with ref's
// (larger sum of the cosines of the paired vectors). The red rule of macenko_basis is not stable
// on Romanowsky-stained blood, whose two stains absorb red about equally.
void align_basis(StainBasis& b, const StainBasis& ref);

// Two colour anchors of a set of images: the mean Lab colour of the white cell (the region
// cell_mask finds) and of everything else in the crop (plasma and red cells), each averaged per
// image, then over the images that have one.
struct LabAnchors {
  double cell[3] = {0, 0, 0}, background[3] = {0, 0, 0};
  int images = 0, cells = 0, backgrounds = 0;  // images seen; those that gave a cell, a background
  nlohmann::json to_json() const;
  static LabAnchors from_json(const nlohmann::json& j);  // throws std::runtime_error naming the key
};
// Throws std::runtime_error when no image has a cell or none has a background.
LabAnchors lab_anchors(const std::vector<Image>& images);

// One lab's colour calibration: L' = scale L + shift, per Lab channel, the same for every image of
// the lab, fitted so that the lab's two anchors land on the training images' (two points fix an
// affine map per channel). Whole-image statistics (Reinhard) mix the cell with its surroundings,
// and another lab's crops hold more cell (bccd's fill most of the crop, PBC's a tenth), so
// matching them per image moves the cell's own colour onto the training set's background and
// erases what tells an eosinophil from a neutrophil. Fitted once over a folder, the map keeps the
// differences between the lab's cells.
struct LabCalibration {
  double scale[3] = {1, 1, 1}, shift[3] = {0, 0, 0};
  LabAnchors lab;  // the anchors it was fitted from
  nlohmann::json to_json() const;
  static LabCalibration from_json(const nlohmann::json& j);  // throws std::runtime_error naming the key
};
// Throws std::runtime_error, naming the channel, when the lab's cell and background anchors are
// under 2 Lab units apart in a channel (the map would be ill-conditioned), or when a scale falls
// outside [1/4, 4] (not stained cells on a background).
LabCalibration lab_calibration(const LabAnchors& lab, const LabAnchors& reference);
void lab_affine_normalize(Image& img, const LabCalibration& c);  // in place

// What a checkpoint stores of its training images: the mean Lab statistics, the median stain
// basis and the two colour anchors over a sample of them.
struct StainReference {
  LabStats lab;
  StainBasis basis;
  LabAnchors anchors;
  bool has_anchors = false;  // references stored before the anchors existed have none
  int images = 0;
  // Not part of the reference's JSON: a lab's calibration onto it (meta.extra "stain_calibration",
  // written by `vitengine stain-calibrate`), which --stain-norm calibrated applies.
  LabCalibration calibration;
  bool calibrated = false;
  nlohmann::json to_json() const;
  static StainReference from_json(const nlohmann::json& j);  // throws std::runtime_error naming the key
};
StainReference stain_reference(const std::vector<Image>& images);

enum class StainNorm { kNone, kReinhard, kMacenko, kCalibrated };
// "none" | "reinhard" | "macenko" | "calibrated"; throws std::invalid_argument
StainNorm parse_stain_norm(const std::string& s);
const char* stain_norm_name(StainNorm m);

// In place. Reinhard: each Lab channel shifted and scaled to the reference's mean and spread.
// Macenko: concentrations under the image's own basis (its stains paired with the reference's by
// align_basis), scaled to the reference's range, recomposed with the reference's basis; an image
// without enough stained pixels is left unchanged. Calibrated: lab_affine_normalize with
// ref.calibration (throws std::logic_error when the reference carries none).
void reinhard_normalize(Image& img, const LabStats& target);
void macenko_normalize(Image& img, const StainBasis& target);
void stain_normalize(Image& img, StainNorm m, const StainReference& ref);

}  // namespace vit
