// The data_on_device augmentation kernel (see augment.cuh).
//
// One block per image, one thread per output row. A row per thread because the CPU reference
// (engine/data/augment.cpp affine_sample) steps the source position along a row, sx += m[0] per pixel,
// and a thread that computed x * m[0] instead would round differently now and then. The colour
// jitter's contrast needs the mean grey level of the brightened image (a whole-image reduction),
// so the block makes two passes: pass 1 sums the grey levels, pass 2 recomputes each pixel, runs
// the rest of the jitter and writes. Pass 2 stages 32 columns of every row in shared memory so
// that the CHW float stores are coalesced (32 consecutive x per warp).
//
// Built with --fmad=false (CMakeLists.txt): every a*b + c rounds twice, as on the CPU.
//
// CPU emulation: tests/test_augment_emu.cpp compiles this file with the host compiler against
// tests/emu/cuda_emu.h (VIT_CUDA_EMULATE); the code then lives in vit::cuda_emu.
#include "kernels/cuda/augment.cuh"

#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.cuh"

#include "kernels/cuda/emulation.cuh"
#define VIT_AUG_LAUNCH(kernel, blocks, threads, stream, ...) VIT_LAUNCH(kernel, blocks, threads, 0, stream, __VA_ARGS__)

namespace vit::VIT_KERNEL_NS {
namespace {

using cuda::AugmentItem;
using cuda::AugmentNorm;
using cuda::kAugmentMaxSide;
constexpr int kTileCols = 32;  // columns staged per round of pass 2: one warp's coalesced store

// Pixel (x, y) of the output before the colour jitter: the resampled source (or the source
// itself without geometry). (sx, sy) is the row's stepped source position at x.
__device__ __forceinline__ void sample(const uint8_t* src, int S, const AugmentItem& it, int x, int y, double sx,
                                       double sy, uint8_t* px) {
  if (it.p.geometry && it.p.reflect) {
    augpx::bilinear_reflect(src, S, S, sx, sy, px);
  } else if (it.p.geometry) {
    augpx::bilinear(src, S, S, sx, sy, it.fill, px);
  } else {
    const uint8_t* q = src + ((size_t)y * S + x) * 3;
    px[0] = q[0], px[1] = q[1], px[2] = q[2];
  }
}

__global__ void __launch_bounds__(kAugmentMaxSide)
    augment_kernel(const uint8_t* __restrict__ images, const AugmentItem* __restrict__ items, int S, AugmentNorm norm,
                   float* __restrict__ out) {
  __shared__ uint8_t tile[kAugmentMaxSide][kTileCols][3];
  __shared__ uint32_t row_gray[kAugmentMaxSide];
  __shared__ float mean_gray;
  const size_t b = blockIdx.x;
  const AugmentItem it = items[b];
  const uint8_t* src = images + it.image * size_t(S) * S * 3;
  const int y = threadIdx.x;
  const bool has_row = y < S;  // blockDim.x is S rounded up to a warp
  double m[6];
  augpx::sampling_matrix(it.p, S, S, m);

  // Pass 1: the mean grey level of the brightened image (contrast blends towards it).
  if (it.p.color) {
    if (has_row) {
      double sx, sy;
      augpx::row_start(m, S, S, y, sx, sy);
      uint32_t sum = 0;
      for (int x = 0; x < S; ++x, sx += m[0], sy += m[3]) {
        uint8_t px[3];
        sample(src, S, it, x, y, sx, sy, px);
        augpx::brighten(px, it.p.jitter);
        sum += augpx::gray(px);
      }
      row_gray[y] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint64_t total = 0;
      for (int r = 0; r < S; ++r) total += row_gray[r];
      mean_gray = augpx::mean_of(total, uint64_t(S) * S);
    }
    __syncthreads();
  }

  // Pass 2: every pixel again, the rest of the jitter, then 32 columns at a time to the output.
  double sx = 0, sy = 0;
  if (has_row) augpx::row_start(m, S, S, y, sx, sy);
  float* dst = out + b * 3 * size_t(S) * S;
  for (int x0 = 0; x0 < S; x0 += kTileCols) {
    const int cols = S - x0 < kTileCols ? S - x0 : kTileCols;
    if (has_row) {
      for (int j = 0; j < cols; ++j, sx += m[0], sy += m[3]) {
        uint8_t* px = tile[y][j];
        sample(src, S, it, x0 + j, y, sx, sy, px);
        if (it.p.color) {
          augpx::brighten(px, it.p.jitter);
          augpx::jitter_rest(px, it.p.jitter, mean_gray);
        }
      }
    }
    __syncthreads();
    // (c, row, j) with j fastest: a warp stores 32 consecutive x of one output row.
    for (int i = threadIdx.x; i < 3 * S * kTileCols; i += blockDim.x) {
      const int j = i % kTileCols, r = (i / kTileCols) % S, c = i / (kTileCols * S);
      if (j < cols) dst[(size_t(c) * S + r) * S + x0 + j] = tile[r][j][c] * norm.scale[c] - norm.shift[c];
    }
    __syncthreads();  // the tile is refilled next round
  }
}

}  // namespace

void augment_batch(const uint8_t* images, const AugmentItem* items, int B, int S, const AugmentNorm& norm, float* out,
                   cudaStream_t stream) {
  if (S < 1 || S > kAugmentMaxSide)
    throw std::invalid_argument("augment_batch: image side " + std::to_string(S) + " outside [1, " +
                                std::to_string(kAugmentMaxSide) + "]");
  if (B <= 0) return;
  const int threads = (S + 31) / 32 * 32;
  VIT_AUG_LAUNCH(augment_kernel, B, threads, stream, images, items, S, norm, out);
  VIT_LAUNCH_CHECK();
}

}  // namespace vit::VIT_KERNEL_NS
