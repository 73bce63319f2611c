// Patch embedding, CPU reference: the 16x16 stride-16 conv as im2col + GEMM.
//   img (B, C, H, W) -> cols (B*Np, C*P*P), ordered (c, ky, kx) to match the conv
//   weight (D, C, P, P) flattened to (D, C*P*P) -> out = cols @ w^T + b   (B, Np, D)
// Then the class token and position embedding:
//   tokens[b, 0] = cls + pos[0];  tokens[b, 1 + p] = patches[b, p] + pos[1 + p]
// Test: test_kernels --gtest_filter='Ops*Patch*:Ops*Embed*'.
#include <vector>

#include "kernels/cpu/ops.h"

namespace vit::cpu {

// im2col: each patch's pixels as one row. Also the masked autoencoder's reconstruction target.
template <typename T>
void patchify(const T* img, T* cols, int B, int C, int H, int W, int P) {
  const int gh = H / P, gw = W / P, K = C * P * P;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++)
    for (int py = 0; py < gh; py++)
      for (int px = 0; px < gw; px++) {
        T* col = cols + ((size_t)b * gh * gw + py * gw + px) * K;
        for (int c = 0; c < C; c++)
          for (int ky = 0; ky < P; ky++) {
            const T* src = img + (((size_t)b * C + c) * H + py * P + ky) * W + px * P;
            T* dst = col + (c * P + ky) * P;
            for (int kx = 0; kx < P; kx++) dst[kx] = src[kx];
          }
      }
}

template <typename T>
void patch_embed_fwd(const T* img, const T* w, const T* b, T* out, const PatchShape& s) {
  const int B = s.B, C = s.C, H = s.H, W = s.W, P = s.P, D = s.D;
  const int Np = (H / P) * (W / P), K = C * P * P;
  std::vector<T> cols((size_t)B * Np * K);
  patchify(img, cols.data(), B, C, H, W, P);
  linear_fwd(cols.data(), w, b, out, B * Np, K, D);
}

template <typename T>
void patch_embed_bwd(const T* img, const T* dout, T* dw, T* db, const PatchShape& s) {
  const int B = s.B, C = s.C, H = s.H, W = s.W, P = s.P, D = s.D;
  const int Np = (H / P) * (W / P), K = C * P * P;
  std::vector<T> cols((size_t)B * Np * K);
  patchify(img, cols.data(), B, C, H, W, P);
  // Only weight/bias gradients: dx is not needed (the image is data), so pass dx = nullptr.
  linear_bwd<T>(cols.data(), nullptr, dout, nullptr, dw, db, B * Np, K, D);
}

template <typename T>
void embed_tokens_fwd(const T* patches, const T* cls, const T* pos, T* out, int B, int Np, int D) {
  const int N = Np + 1;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++) {
    T* o = out + (size_t)b * N * D;
    for (int d = 0; d < D; d++) o[d] = cls[d] + pos[d];
    for (int p = 0; p < Np; p++)
      for (int d = 0; d < D; d++)
        o[(size_t)(p + 1) * D + d] = patches[((size_t)b * Np + p) * D + d] + pos[(size_t)(p + 1) * D + d];
  }
}

template <typename T>
void embed_tokens_bwd(const T* dout, T* dpatches, T* dcls, T* dpos, int B, int Np, int D) {
  const int N = Np + 1;
  for (int b = 0; b < B; b++) {  // serial over b: dcls/dpos accumulate in a fixed order
    const T* g = dout + (size_t)b * N * D;
    for (int d = 0; d < D; d++) dcls[d] += g[d];
    for (size_t i = 0; i < (size_t)N * D; i++) dpos[i] += g[i];
    for (int p = 0; p < Np; p++)
      for (int d = 0; d < D; d++) dpatches[((size_t)b * Np + p) * D + d] = g[(size_t)(p + 1) * D + d];
  }
}

// col2im without overlap: every pixel belongs to exactly one patch.
template <typename T>
void unpatchify(const T* cols, T* img, int B, int C, int H, int W, int P) {
  const int gh = H / P, gw = W / P, K = C * P * P;
  for (int b = 0; b < B; b++)
    for (int py = 0; py < gh; py++)
      for (int px = 0; px < gw; px++) {
        const T* col = cols + ((size_t)b * gh * gw + py * gw + px) * K;
        for (int c = 0; c < C; c++)
          for (int ky = 0; ky < P; ky++) {
            T* dst = img + (((size_t)b * C + c) * H + py * P + ky) * W + px * P;
            const T* src = col + (c * P + ky) * P;
            for (int kx = 0; kx < P; kx++) dst[kx] = src[kx];
          }
      }
}

#define VIT_INST(T)                                                                      \
  template void patchify<T>(const T*, T*, int, int, int, int, int);                     \
  template void unpatchify<T>(const T*, T*, int, int, int, int, int);                   \
  template void patch_embed_fwd<T>(const T*, const T*, const T*, T*, const PatchShape&); \
  template void patch_embed_bwd<T>(const T*, const T*, T*, T*, const PatchShape&);       \
  template void embed_tokens_fwd<T>(const T*, const T*, const T*, T*, int, int, int);    \
  template void embed_tokens_bwd<T>(const T*, T*, T*, T*, int, int, int);
VIT_INST(float)
VIT_INST(double)
#undef VIT_INST

}  // namespace vit::cpu
