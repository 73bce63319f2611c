// The training augmentation on the GPU (data_on_device): one kernel turns a batch of uint8
// HWC images already in device memory into the model's normalised float input (B, 3, S, S):
// bilinear affine resample (rotation, flip, zoom, shift; border fill or reflection), colour and stain jitter, (x/255 -
// mean)/std. It applies parameters the host drew with engine/data/augment.h draw_augment (the same draws as the CPU
// loader), with the CPU's per-pixel code (kernels/common/augment_pixel.h), so the batch is the one the CPU path would
// make. TrivialAugment and blur are not done here (augment=strong). Test: vitengine_gpu_tests
// --gtest_filter='AugmentCuda*'; emulated on the CPU by tests/test_augment_emu.cpp.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/augment_pixel.h"

namespace vit::cuda {

// One image of a batch: which uploaded image, its border colour (the fill for pixels moved in
// from outside the frame, engine/data/image.h border_color) and the augmentation drawn for it.
struct AugmentItem {
  uint64_t image = 0;
  uint8_t fill[3] = {0, 0, 0};
  AugmentParams p;
};
// Normalisation as engine/data/image.h to_chw_normalized: out = v * scale[c] - shift[c] with
// scale = 1 / (255 std), shift = mean / std.
struct AugmentNorm {
  float scale[3], shift[3];
};
inline AugmentNorm augment_norm(const float mean[3], const float std[3]) {
  AugmentNorm n;
  for (int c = 0; c < 3; ++c) n.scale[c] = 1.f / (255.f * std[c]), n.shift[c] = mean[c] / std[c];
  return n;
}

// Largest image side the kernel takes (one thread per row, a row tile in shared memory).
constexpr int kAugmentMaxSide = 448;

// images: (N, S, S, 3) uint8 on the device; items: B entries on the device; out: (B, 3, S, S).
// Items must not ask for TrivialAugment or blur (p.ta_op < 0, p.blur_sigma == 0); the caller checks.
void augment_batch(const uint8_t* images, const AugmentItem* items, int B, int S, const AugmentNorm& norm, float* out,
                   cudaStream_t stream);

}  // namespace vit::cuda
