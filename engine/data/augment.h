// Training-time augmentation on 8-bit RGB images, all driven by an explicit RNG so
// that every result is a pure function of its seed.
//   - TrivialAugmentWide: torchvision 0.14's op list and 31 magnitude bins
//     (torchvision/transforms/autoaugment.py), with the tensor-path semantics
//     (uint8 truncation, nearest-neighbour geometry).
//   - augment_train: rotation + flip + scale jitter (one bilinear affine), optional
//     TrivialAugmentWide, colour/stain jitter, Gaussian blur. It is draw_augment (every random
//     draw, no pixels) then apply_augment (no randomness), so the GPU path (data_on_device,
//     kernels/cuda/augment.cu) can apply on the device exactly what the host drew.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/data/image.h"
#include "engine/util/rng.h"
#include "kernels/common/augment_pixel.h"  // AugmentParams, the per-pixel arithmetic

namespace vit {

// Rng and mix_seed: engine/util/rng.h.

struct AugmentConfig {
  bool enabled = false;                      // master switch (train only)
  bool trivial_augment = false;              // one TrivialAugmentWide op per image
  bool rotate_flip = true;                   // uniform rotation in [0, 360) and a random horizontal flip
  float scale_min = 0.7f, scale_max = 1.4f;  // zoom factor, drawn log-uniformly
  float translate = 0.0f;       // shift of up to +-translate of the side in x and y, drawn uniformly (0: no draw)
  bool reflect_border = false;  // geometry mirrors the image at its edges instead of filling with its border colour
  float color = 0.2f;           // brightness/contrast/saturation jitter +-color, hue +-color/4, stain gain +-color/4
  float blur_prob = 0.2f;       // probability of a Gaussian blur, sigma U[0.1, 1.5] px
  // HED stain jitter (Tellez et al. 2019, "Whole-slide mitosis detection in H&E breast histology
  // using PHH3 as a reference to train distilled stain-invariant convolutional networks"): each
  // image's stain concentrations c -> alpha * c + beta, alpha ~ U[1-hed, 1+hed] and
  // beta ~ U[-hed, hed] per stain, in their units (skimage's rgb2hed: optical density / ln 10^6),
  // so 0.05 is their "HED-light" and 0.2 "HED-strong". 0: none, and nothing drawn.
  float hed = 0.0f;
};

// ---- TrivialAugmentWide ----
enum class TAOp {
  Identity,
  ShearX,
  ShearY,
  TranslateX,
  TranslateY,
  Rotate,
  Brightness,
  Color,
  Contrast,
  Sharpness,
  Posterize,
  Solarize,
  AutoContrast,
  Equalize
};
struct TAOpInfo {
  TAOp op;
  std::string name;               // torchvision's name
  std::vector<float> magnitudes;  // the bins; empty = the op takes no magnitude
  bool is_signed = false;         // a random sign is applied to the magnitude
};
// In torchvision's order (the op is drawn by index into this list).
const std::vector<TAOpInfo>& trivial_augment_ops(int num_bins = 31);
// One op at a given magnitude, in place. fill: colour for pixels that geometry
// moves in from outside the image (torchvision's `fill`).
void apply_ta_op(Image& img, TAOp op, float magnitude, const uint8_t fill[3]);
struct TAChoice {
  int op = 0;
  float magnitude = 0;
};
// Draw an op, a bin and a sign as torchvision does.
TAChoice draw_trivial_augment(Rng& rng);
// The same, applied; returns what was drawn.
TAChoice trivial_augment(Image& img, Rng& rng, const uint8_t fill[3]);

// Full training augmentation of an already preprocessed square image, in place:
// apply_augment(img, draw_augment(cfg, rng)).
void augment_train(Image& img, const AugmentConfig& cfg, Rng& rng);
// Every random draw of augment_train, in its order (identity parameters, no draw, when !cfg.enabled).
AugmentParams draw_augment(const AugmentConfig& cfg, Rng& rng);
// Applies drawn parameters; pixels moved in from outside the frame take the image's border colour,
// or mirror the image (p.reflect).
void apply_augment(Image& img, const AugmentParams& p);

// Building blocks (exposed for tests).

// The stain vectors the HED jitter decomposes into (Ruifrok & Johnston 2001, "Quantification of
// histochemical staining by color deconvolution", as skimage's rgb_from_hed): optical density per
// unit of haematoxylin, eosin and DAB (rows) in R, G, B (columns).
extern const double kRgbFromHed[3][3];
// c -> alpha * c + beta on each pixel's HED concentrations, with optical density
// OD = -ln((I + 1) / 256) (engine/data/stain.h optical_density) and concentrations in Tellez's units
// (OD / ln 10^6), back to 8-bit RGB (rounded, clamped).
void apply_hed_jitter(Image& img, const float alpha[3], const float beta[3]);
// Output pixel centre p (relative to the image centre) samples input at A*p + t.
// reflect (bilinear only): out-of-frame points mirror the image instead of taking `fill`.
void affine_sample(const Image& src, Image& dst, const double m[6], const uint8_t fill[3], bool bilinear,
                   bool reflect = false);
void gaussian_blur(Image& img, float sigma);
void adjust_hue(Image& img, float hue_shift);  // hue_shift in turns, [-0.5, 0.5]

}  // namespace vit
