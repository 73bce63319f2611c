// Patch embedding, token embedding, image normalisation; see patch_embed.cuh.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/dropout.cuh"
#include "kernels/cuda/patch_embed.cuh"
#include "kernels/cuda/patch_embed_kernels.cuh"

namespace vit::cuda {

#define VIT_GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < (n); i += size_t(gridDim.x) * blockDim.x)

__global__ void normalize_images_kernel(const uint8_t* __restrict__ u8, float* __restrict__ img, int B, int S,
                                        ImageNorm norm) {
  const size_t n = size_t(B) * 3 * S * S;
  VIT_GRID_STRIDE(i, n) {
    // i -> (b, c, y, x) of the CHW output
    const int x = int(i % S);
    const int y = int((i / S) % S);
    const int c = int((i / (size_t(S) * S)) % 3);
    const size_t b = i / (size_t(3) * S * S);
    const float v = float(u8[((b * S + y) * S + x) * 3 + c]) * (1.f / 255.f);
    img[i] = (v - norm.mean[c]) / norm.std[c];
  }
}
void normalize_images(const uint8_t* u8, float* img, int B, int S, const ImageNorm& norm, cudaStream_t stream) {
  const size_t n = size_t(B) * 3 * S * S;
  if (!n) return;
  normalize_images_kernel<<<elementwise_grid(n, 256), 256, 0, stream>>>(u8, img, B, S, norm);
  VIT_LAUNCH_CHECK();
}

template <typename TIn, typename TOut>
void im2col(const TIn* img, TOut* cols, int B, int C, int H, int W, int P, cudaStream_t stream) {
  const size_t segs = size_t(B) * (H / P) * (W / P) * C * P;
  if (!segs) return;
  const bool vec4 = sizeof(TIn) == 4 && aligned16(img) && W % 4 == 0 && P % 4 == 0;
  im2col_segments_kernel<TIn, TOut><<<elementwise_grid(segs, 256), 256, 0, stream>>>(img, cols, B, C, H, W, P, vec4);
  VIT_LAUNCH_CHECK();
}

template <typename T>
void patch_embed_fwd(GemmContext& ctx, const float* img, const T* w, const T* b, T* cols, T* out, const PatchShape& s,
                     cudaStream_t stream) {
  im2col<float, T>(img, cols, s.B, s.C, s.H, s.W, s.P, stream);
  const int M = s.B * s.patches(), K = s.C * s.P * s.P;
  linear_fwd<T, T>(ctx, cols, w, b, out, M, K, s.D, stream);  // (B*Np, K) @ (D, K)^T -> (B*Np, D)
}
template <typename T>
void patch_embed_bwd(GemmContext& ctx, const T* cols, const T* dout, float* dw, float* db, float* scratch,
                     const PatchShape& s, cudaStream_t stream) {
  const int M = s.B * s.patches(), K = s.C * s.P * s.P;
  linear_bwd_dw_db<T>(ctx, cols, dout, dw, db, scratch, M, K, s.D, stream);
}

template <typename T>
__global__ void embed_tokens_dpatches_kernel(const T* __restrict__ dout, T* __restrict__ dpatches, int B, int Np, int D,
                                             float p, uint64_t seed, const uint64_t* seed_ptr) {
  if (seed_ptr) seed = *seed_ptr;
  const int N = Np + 1;
  const size_t n = size_t(B) * Np * D;
  VIT_GRID_STRIDE(i, n) {
    const int d = int(i % D);
    const int t = int((i / D) % Np) + 1;
    const size_t b = i / (size_t(Np) * D);
    const size_t src = (b * N + t) * D + d;
    dpatches[i] = from_f32<T>(to_f32(dout[src]) * dropout_scale(seed, src, p));
  }
}
// One thread per (t, d): sums over the batch in order (deterministic, no atomics).
template <typename T>
__global__ void embed_tokens_dparams_kernel(const T* __restrict__ dout, float* dcls, float* dpos, int B, int Np, int D,
                                            float p, uint64_t seed, const uint64_t* seed_ptr) {
  if (seed_ptr) seed = *seed_ptr;
  const int N = Np + 1;
  const size_t n = size_t(N) * D;
  VIT_GRID_STRIDE(j, n) {
    float s = 0.f;
    for (int b = 0; b < B; ++b) {
      const size_t src = size_t(b) * n + j;
      s += to_f32(dout[src]) * dropout_scale(seed, src, p);
    }
    dpos[j] += s;
    if (j < size_t(D)) dcls[j] += s;  // token 0: d(cls) = d(pos[0])
  }
}
template <typename T>
void embed_tokens_fwd(const T* patches, const float* cls, const float* pos, T* out, int B, int Np, int D,
                      cudaStream_t stream, float p, uint64_t seed, const uint64_t* seed_ptr) {
  const size_t rows = size_t(B) * (Np + 1);
  if (!rows || D <= 0) return;
  const int threads = D >= 256 ? 256 : (D + 31) / 32 * 32;
  const unsigned grid = unsigned(rows < (1u << 20) ? rows : (1u << 20));  // grid-stride beyond
  embed_tokens_rows_kernel<T><<<grid, threads, 0, stream>>>(patches, cls, pos, out, B, Np, D, p, seed, seed_ptr);
  VIT_LAUNCH_CHECK();
}
template <typename T>
void embed_tokens_bwd(const T* dout, T* dpatches, float* dcls, float* dpos, int B, int Np, int D, cudaStream_t stream,
                      float p, uint64_t seed, const uint64_t* seed_ptr) {
  const size_t n = size_t(B) * Np * D;
  if (!n) return;
  embed_tokens_dpatches_kernel<T>
      <<<elementwise_grid(n, 256), 256, 0, stream>>>(dout, dpatches, B, Np, D, p, seed, seed_ptr);
  VIT_LAUNCH_CHECK();
  const size_t m = size_t(Np + 1) * D;
  embed_tokens_dparams_kernel<T><<<ceil_div(m, 256), 256, 0, stream>>>(dout, dcls, dpos, B, Np, D, p, seed, seed_ptr);
  VIT_LAUNCH_CHECK();
}

template <typename T>
__global__ void gather_cls_kernel(const T* __restrict__ x, T* __restrict__ out, int B, int N, int D) {
  const size_t n = size_t(B) * D;
  VIT_GRID_STRIDE(i, n) out[i] = x[(i / D) * size_t(N) * D + (i % D)];
}
template <typename T>
__global__ void scatter_cls_grad_kernel(const T* __restrict__ dcls, T* __restrict__ dx, int B, int N, int D) {
  const size_t n = size_t(B) * N * D;
  VIT_GRID_STRIDE(i, n) {
    const int d = int(i % D);
    const int t = int((i / D) % N);
    const size_t b = i / (size_t(N) * D);
    dx[i] = t == 0 ? dcls[b * D + d] : from_f32<T>(0.f);
  }
}
template <typename T>
void gather_cls(const T* x, T* out, int B, int N, int D, cudaStream_t stream) {
  const size_t n = size_t(B) * D;
  if (!n) return;
  gather_cls_kernel<T><<<elementwise_grid(n, 256), 256, 0, stream>>>(x, out, B, N, D);
  VIT_LAUNCH_CHECK();
}
template <typename T>
void scatter_cls_grad(const T* dcls, T* dx, int B, int N, int D, cudaStream_t stream) {
  const size_t n = size_t(B) * N * D;
  if (!n) return;
  scatter_cls_grad_kernel<T><<<elementwise_grid(n, 256), 256, 0, stream>>>(dcls, dx, B, N, D);
  VIT_LAUNCH_CHECK();
}

#define VIT_INST(T)                                                                                               \
  template void im2col<float, T>(const float*, T*, int, int, int, int, int, cudaStream_t);                        \
  template void patch_embed_fwd<T>(GemmContext&, const float*, const T*, const T*, T*, T*, const PatchShape&,     \
                                   cudaStream_t);                                                                 \
  template void patch_embed_bwd<T>(GemmContext&, const T*, const T*, float*, float*, float*, const PatchShape&,   \
                                   cudaStream_t);                                                                 \
  template void embed_tokens_fwd<T>(const T*, const float*, const float*, T*, int, int, int, cudaStream_t, float, \
                                    uint64_t, const uint64_t*);                                                   \
  template void embed_tokens_bwd<T>(const T*, T*, float*, float*, int, int, int, cudaStream_t, float, uint64_t,   \
                                    const uint64_t*);                                                             \
  template void gather_cls<T>(const T*, T*, int, int, int, cudaStream_t);                                         \
  template void scatter_cls_grad<T>(const T*, T*, int, int, int, cudaStream_t);
VIT_INST(float)
VIT_INST(bf16)
#undef VIT_INST

}  // namespace vit::cuda
