// The two patch-embedding kernels that do not call cuBLAS, im2col and the token embedding's
// forward, in a header of their own so that tests/test_patch_embed_emu.cpp can compile this very
// source on the CPU (tests/emu/cuda_emu.h, VIT_CUDA_EMULATE: the code then lives in
// vit::cuda_emu). kernels/cuda/patch_embed.cu launches them.
//
// Why they are shaped this way: one thread per output element would split its flat index with
// 64-bit divisions and modulos (five for im2col, three for the embedding) for each of 38.5 M
// elements at ViT-B/16 batch 256. Here the index arithmetic is per segment of P pixels (im2col)
// or per token row (embedding), and im2col reads the image with 16-byte loads when it can.
// The profiled "fwd patch embed" time is larger than index arithmetic explains
// (docs/performance.md); where the rest goes is still to be measured on a GPU.
#pragma once
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/dropout.cuh"

#include "kernels/cuda/emulation.cuh"

namespace vit::VIT_KERNEL_NS {

#ifdef VIT_CUDA_EMULATE
using ::vit::cuda::bf16, ::vit::cuda::to_f32, ::vit::cuda::from_f32, ::vit::cuda::dropout_scale;
#endif

// img (B, C, H, W) -> cols (B*Np, C*P*P), row = (b, py, px), column = (c, ky, kx).
// One thread per segment s = (row, c, ky): the P pixels kx = 0..P-1 of one image row, which are
// also P consecutive columns of one cols row, at cols + s*P (s*P = row*C*P*P + (c*P + ky)*P).
// vec4 (the host checks: img 16-byte aligned, W and P multiples of 4): float4 loads.
template <typename TIn, typename TOut>
__global__ void im2col_segments_kernel(const TIn* __restrict__ img, TOut* __restrict__ cols, int B, int C, int H, int W,
                                       int P, bool vec4) {
  const int gw = W / P, gh = H / P;
  const size_t segs = size_t(B) * gh * gw * C * P;
  for (size_t s = blockIdx.x * size_t(blockDim.x) + threadIdx.x; s < segs; s += size_t(gridDim.x) * blockDim.x) {
    const int ky = int(s % P);
    const size_t rc = s / P;
    const int c = int(rc % C);
    const size_t row = rc / C;
    const int px = int(row % gw);
    const size_t bpy = row / gw;
    const int py = int(bpy % gh);
    const size_t b = bpy / gh;
    const TIn* src = img + ((b * C + c) * H + size_t(py) * P + ky) * W + size_t(px) * P;
    TOut* dst = cols + s * P;
    if constexpr (sizeof(TIn) == 4) {
      if (vec4) {
        for (int k = 0; k < P; k += 4) {
          const float4 v = *reinterpret_cast<const float4*>(src + k);
          dst[k] = from_f32<TOut>(v.x);
          dst[k + 1] = from_f32<TOut>(v.y);
          dst[k + 2] = from_f32<TOut>(v.z);
          dst[k + 3] = from_f32<TOut>(v.w);
        }
        continue;
      }
    }
    for (int k = 0; k < P; ++k) dst[k] = from_f32<TOut>(to_f32(src[k]));
  }
}

// out (B, Np+1, D): row 0 = cls + pos[0], row t = patches[t-1] + pos[t], then dropout with the
// element's flat index (the same masks as the CPU path). One block per token row (grid-stride),
// threads over d.
template <typename T>
__global__ void embed_tokens_rows_kernel(const T* __restrict__ patches, const float* __restrict__ cls,
                                         const float* __restrict__ pos, T* __restrict__ out, int B, int Np, int D,
                                         float p, uint64_t seed, const uint64_t* seed_ptr) {
  if (seed_ptr) seed = *seed_ptr;
  const int N = Np + 1;
  const size_t rows = size_t(B) * N;
  for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int t = int(r % N);
    const size_t b = r / N;
    const T* prow = patches + (b * Np + (t > 0 ? t - 1 : 0)) * D;
    const float* pr = pos + size_t(t) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      const size_t i = r * D + d;
      const float base = t == 0 ? cls[d] : to_f32(prow[d]);
      out[i] = from_f32<T>((base + pr[d]) * dropout_scale(seed, i, p));
    }
  }
}

}  // namespace vit::VIT_KERNEL_NS
