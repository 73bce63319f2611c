// The patch-embedding kernels (kernels/cuda/patch_embed_kernels.cuh: im2col by pixel segments with
// optional 16-byte loads, the token embedding by rows) run on the CPU through the CUDA emulator
// (tests/emu/cuda_emu.h) against references written from the definitions: cols[row][(c*P + ky)*P + kx]
// = img[b][c][py*P + ky][px*P + kx], and the fp64 class-token + position sum with the dropout mask
// of vit::cpu::dropout_keep. Outputs are poisoned first, so an element never written fails.
// tests/gpu/test_ops_cuda.cu runs the same kernels on a GPU (OpsCuda*PatchEmbed*, *EmbedTokens*).
#include "tests/emu/cuda_emu.h"
#ifdef VIT_CUDA_EMULATE
#include "kernels/cuda/patch_embed_kernels.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <type_traits>
#include <vector>

#include "kernels/cpu/ops.h"

namespace {

using bf16 = __nv_bfloat16;

template <typename TOut>
void check_im2col(int B, int C, int H, int W, int P, size_t misalign, bool vec4) {
  SCOPED_TRACE("B " + std::to_string(B) + " C " + std::to_string(C) + " " + std::to_string(H) + "x" +
               std::to_string(W) + " P " + std::to_string(P) + (vec4 ? " vec4" : " scalar") + " misalign " +
               std::to_string(misalign));
  std::mt19937 g(1000 + H + P);
  std::normal_distribution<float> nd;
  // 64-byte aligned storage, the image placed `misalign` floats in.
  std::vector<float4> store((size_t(B) * C * H * W + 8) / 4 + 2);
  float* img = reinterpret_cast<float*>(store.data()) + misalign;
  for (size_t i = 0; i < size_t(B) * C * H * W; ++i) img[i] = nd(g);
  const int gh = H / P, gw = W / P, K = C * P * P;
  const size_t rows = size_t(B) * gh * gw;
  std::vector<TOut> cols(rows * K);
  emu::poison(cols);
  const size_t segs = rows * C * P;
  const int threads = 64;
  const unsigned grid = unsigned(std::min<size_t>((segs + threads - 1) / threads, 3));  // grid-stride loop used
  ::emu::launch(dim3(grid), dim3(threads),
                [&] { vit::cuda_emu::im2col_segments_kernel<float, TOut>(img, cols.data(), B, C, H, W, P, vec4); });
  for (int b = 0; b < B; ++b)
    for (int py = 0; py < gh; ++py)
      for (int px = 0; px < gw; ++px)
        for (int c = 0; c < C; ++c)
          for (int ky = 0; ky < P; ++ky)
            for (int kx = 0; kx < P; ++kx) {
              const size_t row = (size_t(b) * gh + py) * gw + px;
              const double want = img[((size_t(b) * C + c) * H + py * P + ky) * W + px * P + kx];
              const double got = emu::to_double(cols[row * K + (c * P + ky) * P + kx]);
              const double tol = std::is_same_v<TOut, float> ? 0.0 : std::ldexp(std::fabs(want), -8);  // bf16 rounding
              ASSERT_TRUE(std::isfinite(got) && std::fabs(got - want) <= tol)
                  << "row " << row << " c " << c << " ky " << ky << " kx " << kx << ": " << got << " vs " << want;
            }
}

TEST(PatchEmbedEmu, Im2colMatchesTheConvIndexing) {
  check_im2col<float>(2, 3, 32, 32, 16, 0, true);  // ViT's P = 16, 16-byte loads
  check_im2col<bf16>(2, 3, 32, 32, 16, 0, true);
  check_im2col<bf16>(2, 3, 32, 32, 16, 0, false);  // the scalar path on the same data
  check_im2col<float>(1, 3, 24, 24, 8, 0, true);
  check_im2col<bf16>(2, 2, 15, 15, 5, 1, false);  // P and W not multiples of 4, unaligned image
  check_im2col<float>(1, 3, 20, 16, 4, 0, true);  // non-square image
}

template <typename T>
void check_embed(int B, int Np, int D, float p, int threads) {
  SCOPED_TRACE("B " + std::to_string(B) + " Np " + std::to_string(Np) + " D " + std::to_string(D) + " p " +
               std::to_string(p) + " threads " + std::to_string(threads));
  std::mt19937 g(7 + D);
  std::normal_distribution<float> nd;
  const int N = Np + 1;
  std::vector<T> patches(size_t(B) * Np * D), out(size_t(B) * N * D);
  std::vector<float> cls(D), pos(size_t(N) * D);
  for (auto& v : patches) v = T(nd(g));
  for (auto& v : cls) v = nd(g);
  for (auto& v : pos) v = nd(g);
  emu::poison(out);
  const uint64_t seed = 99, dev_seed = 12345;  // the device seed (seed_ptr) must win over `seed`
  const size_t rows = size_t(B) * N;
  ::emu::launch(dim3(unsigned(std::min<size_t>(rows, 5))), dim3(threads), [&] {
    vit::cuda_emu::embed_tokens_rows_kernel<T>(patches.data(), cls.data(), pos.data(), out.data(), B, Np, D, p, seed,
                                               &dev_seed);
  });
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < N; ++t)
      for (int d = 0; d < D; ++d) {
        const size_t i = (size_t(b) * N + t) * D + d;
        const double base = t == 0 ? double(cls[d]) : emu::to_double(patches[(size_t(b) * Np + t - 1) * D + d]);
        const double keep = p > 0 ? (vit::cpu::dropout_keep(dev_seed, i, p) ? 1.0 / (1.0 - p) : 0.0) : 1.0;
        const double want = (base + pos[size_t(t) * D + d]) * keep;
        const double got = emu::to_double(out[i]);
        const double tol = (std::is_same_v<T, float> ? 1e-6 : 1.0 / 128) * (std::fabs(want) + 1e-3);
        ASSERT_TRUE(std::isfinite(got) && std::fabs(got - want) <= tol)
            << "b " << b << " t " << t << " d " << d << ": " << got << " vs " << want;
      }
}

TEST(PatchEmbedEmu, EmbedTokensRowsMatchTheDefinition) {
  check_embed<float>(2, 4, 12, 0.f, 32);   // fewer dims than threads
  check_embed<float>(3, 5, 40, 0.3f, 32);  // more dims than threads, dropout from the device seed
  check_embed<bf16>(2, 9, 64, 0.1f, 64);
}

}  // namespace
#endif
