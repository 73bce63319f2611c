// Test-time augmentation over the square's symmetries (the dihedral group D4: four quarter
// turns, each with and without a mirror). A blood smear has no up or left, and training draws
// rotations in [0, 360) and mirrors, so every view is an image the model has learnt to read;
// quarter turns and mirrors move pixels exactly (no resampling, no fill). Prediction averages
// the views' logits, so the stored temperature still applies to one vector per image.
#pragma once
#include <functional>
#include <string>

namespace vit {

// Views of a mode: none 1, flip 2 (identity, mirror), d4 8. Throws naming an unknown mode.
int tta_view_count(const std::string& mode);

// View k (0 <= k < 8) of a batch of B images (C, S, S) row-major: mirrored (x -> S-1-x) when
// k >= 4, then turned k % 4 quarter turns clockwise. out must not alias in.
void dihedral_view(const float* in, float* out, int B, int C, int S, int k);

// out (B, classes) = the mean over views 0 .. views-1 of forward(view k of images), for B images
// (3, S, S). forward returns B x classes logits, valid until its next call. View 0, the images as
// given, runs last: whatever the model keeps from its last pass (the attention maps explain reads)
// belongs to the unturned images. The one loop behind predict() (eval) and Predictor::run.
// With `features` (the (B, dim) features of the forward just run), features_out gets their mean
// over the views as well: the head is affine, so the mean logits are the head of the mean features,
// and an out-of-distribution score of them describes the same image the logits do.
void mean_view_logits(const std::function<const float*(const float*)>& forward, const float* images, int B, int S,
                      int classes, int views, float* out, const std::function<const float*()>& features = nullptr,
                      int dim = 0, float* features_out = nullptr);

}  // namespace vit
