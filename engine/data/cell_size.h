// Cell-size normalisation: find the white cell in a crop and rescale the crop so that the cell
// spans a fixed fraction of the model's view. The training sources image cells at different
// scales (PBC's cells span about a third of the crop, LMU's about half), and another lab's
// scanner, magnification and cropping differ again (bccd's cells fill most of the crop).
//
// Detection (Romanowsky-stained blood): the white cell is the stain that absorbs more green than
// blue light, purple nuclei and bluish or lilac cytoplasm, where red cells (pink) and the plasma
// (beige or grey) absorb the two about equally or blue more. Per pixel, score = ln((B + 1) / (G + 1))
// (the difference of the green and blue optical densities), smoothed over 3x3 pixels; the cell is
// the connected region above `cell_score` that holds the nucleus pixel (score above
// `nucleus_score`) nearest the image centre, its holes filled. Its size is the equivalent
// diameter sqrt(4 area / pi).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/data/image.h"

namespace vit {

struct CellDetectConfig {
  double cell_score = 0.16;    // ln(B/G) above which a pixel is stained like a white cell
  double nucleus_score = 0.5;  // ln(B/G) above which a pixel is nucleus (the seed)
  int min_pixels = 50;         // a region smaller than this is not a cell
};

struct CellExtent {
  bool found = false;
  double cx = 0, cy = 0;  // centroid of the region, in pixels of the image
  double diameter = 0;    // equivalent diameter, pixels
  long pixels = 0;        // area of the region with its holes filled
};
CellExtent detect_cell(const Image& img, const CellDetectConfig& cfg = {});
// The detected cell's pixels (1 inside, holes filled; row-major, width x height); empty when no
// cell is found. detect_cell measures this region.
std::vector<char> cell_mask(const Image& img, const CellDetectConfig& cfg = {});

// The cell's diameter as a fraction of the side of the square view preprocess() makes of the
// image (max(width, height)); 0 when no cell is found.
double cell_fraction(const Image& img, const CellDetectConfig& cfg = {});

// What a checkpoint stores (meta.extra "cell_size", written by `vitengine stain-ref`): the median
// cell fraction of a sample of training images.
struct CellSizeReference {
  double fraction = 0;  // target: the cell spans this fraction of the view's side
  int images = 0, found = 0;
  nlohmann::json to_json() const;
  static CellSizeReference from_json(const nlohmann::json& j);  // throws std::runtime_error naming the key
};
// Throws std::runtime_error when no image holds a cell.
CellSizeReference cell_size_reference(const std::vector<Image>& images, const CellDetectConfig& cfg = {});

enum class CellSizeNorm { kNone, kNormalize };
CellSizeNorm parse_cell_size_norm(const std::string& s);  // "none" | "normalize"; throws std::invalid_argument
const char* cell_size_norm_name(CellSizeNorm m);

// preprocess() with the cell rescaled: a square window of side diameter / fraction centred on the
// cell (outside the image filled with its border colour, as preprocess() pads; a mirrored border
// was tried and repeats the cell itself when it fills the crop, as bccd's do), resized to size x
// size. The zoom is limited to [1/3, 3] of preprocess()'s; an image without a detected cell is
// preprocess()ed. Throws std::invalid_argument for a fraction outside (0, 1].
Image cell_size_view(const Image& img, int size, double fraction, const CellDetectConfig& cfg = {});

}  // namespace vit
