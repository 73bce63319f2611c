// Test-time augmentation over the square's symmetries (the dihedral group D4: four quarter
// turns, each with and without a mirror). A blood smear has no up or left, and training draws
// rotations in [0, 360) and mirrors, so every view is an image the model has learnt to read;
// quarter turns and mirrors move pixels exactly (no resampling, no fill). Prediction averages
// the views' logits, so the stored temperature still applies to one vector per image.
#pragma once
#include <string>

namespace vit {

// Views of a mode: none 1, flip 2 (identity, mirror), d4 8. Throws naming an unknown mode.
int tta_view_count(const std::string& mode);

// View k (0 <= k < 8) of a batch of B images (C, S, S) row-major: mirrored (x -> S-1-x) when
// k >= 4, then turned k % 4 quarter turns clockwise. out must not alias in.
void dihedral_view(const float* in, float* out, int B, int C, int S, int k);

}  // namespace vit
