// Shapes of the ops whose argument lists would otherwise be long runs of ints that are easy to
// swap (flash-attention passes its shapes by name the same way). Shared by the CPU and the CUDA ops.
#pragma once

namespace vit {

// A patch embedding: B images of C x H x W pixels, cut into P x P patches, each mapped to D
// channels; Np = (H / P) * (W / P) patches per image.
struct PatchShape {
  int B = 0, C = 0, H = 0, W = 0, P = 0, D = 0;
  int patches() const { return (H / P) * (W / P); }
};

// Multi-head attention over B sequences of N tokens, H heads of Dh channels each (D = H * Dh).
struct AttnShape {
  int B = 0, N = 0, H = 0, Dh = 0;
  int D() const { return H * Dh; }
};

}  // namespace vit
