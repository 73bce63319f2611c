// y (M, N) = or += x (M, K) @ w^T on Intel's AMX tile units: bf16 inputs, fp32 accumulation.
// Compiled with the AMX flags (kernels/CMakeLists.txt) and called only after amx_bf16_available()
// said yes, so this file holds raw-pointer code only: no inline library templates that the linker
// could pick in place of a copy built for every CPU.
//
// Tiles (palette 1): each is 16 rows x 64 bytes. A tile holds 16 rows of x as 32 bf16 values, a
// B tile 16 "VNNI" rows of the packed weight, each the pairs (k, k+1) of 16 output columns, and a
// C tile 16 x 16 fp32 sums. One TDPBF16PS adds a (16 x 32) @ (32 x 16) product to a C tile.
// Register blocking: a 32 x 32 block of y in four C tiles (0-3), two A tiles (4, 5) and two B
// tiles (6, 7) per step of 32 along K, so each loaded tile feeds two multiplies.
// Test: test_kernels --gtest_filter='Infer*Bf16*'.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/gemm_amx.h"

namespace vit::cpu::amx {

namespace {

struct TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// x rows [0, M) to bf16 with round-to-nearest-even, rows [M, Mp) zero: the tiles always read 16.
void round_rows(const float* x, uint16_t* xs, int M, int Mp, int K) {
  for (int m = 0; m < M; m++)
    for (int k = 0; k < K; k += 32) {
      __m512bh v =
          _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + (size_t)m * K + k + 16), _mm512_loadu_ps(x + (size_t)m * K + k));
      _mm512_storeu_si512(xs + (size_t)m * K + k, (__m512i)v);
    }
  std::memset(xs + (size_t)M * K, 0, sizeof(uint16_t) * (size_t)(Mp - M) * K);
}

// One 32 x 32 block (or its 16-row / 16-column part) of the product, summed over all of K.
void block(const uint16_t* xs, const uint16_t* wp, int K, int m0, int n0, bool two_m, bool two_n, float* c) {
  const size_t a_stride = (size_t)K * 2, b_panel = (size_t)K * 16;  // bytes per x row; values per 16-col panel
  const uint16_t* a0 = xs + (size_t)m0 * K;
  const uint16_t* a1 = a0 + (size_t)16 * K;
  const uint16_t* b0 = wp + (size_t)(n0 / 16) * b_panel;
  const uint16_t* b1 = b0 + b_panel;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int k = 0; k < K; k += 32) {
    _tile_loadd(4, a0 + k, a_stride);
    _tile_loadd(6, b0 + (size_t)k * 16, 64);
    _tile_dpbf16ps(0, 4, 6);
    if (two_n) {
      _tile_loadd(7, b1 + (size_t)k * 16, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if (two_m) {
      _tile_loadd(5, a1 + k, a_stride);
      _tile_dpbf16ps(2, 5, 6);
      if (two_n) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, 128);  // c is 32 x 32 fp32, 128-byte rows
  _tile_stored(1, c + 16, 128);
  _tile_stored(2, c + 512, 128);
  _tile_stored(3, c + 528, 128);
}

}  // namespace

void matmul_bf16(const float* x, const uint16_t* wp, float* y, int M, int K, int N, bool accumulate, uint16_t* xs) {
  TileConfig cfg;
  for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  _tile_loadconfig(&cfg);
  const int Mp = (M + 15) / 16 * 16;
  round_rows(x, xs, M, Mp, K);
  alignas(64) float c[32 * 32];
  for (int m0 = 0; m0 < Mp; m0 += 32) {
    const bool two_m = m0 + 16 < Mp;
    const int rows = M - m0 < 32 ? M - m0 : 32;
    for (int n0 = 0; n0 < N; n0 += 32) {
      const bool two_n = n0 + 16 < N;
      block(xs, wp, K, m0, n0, two_m, two_n, c);
      const int cols = two_n ? 32 : 16;
      for (int r = 0; r < rows; r++) {
        float* yr = y + (size_t)(m0 + r) * N + n0;
        const float* cr = c + r * 32;
        if (accumulate)
          for (int j = 0; j < cols; j++) yr[j] += cr[j];
        else
          std::memcpy(yr, cr, sizeof(float) * cols);
      }
    }
  }
  _tile_release();
}

}  // namespace vit::cpu::amx
