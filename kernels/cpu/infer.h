// The CPU inference path's fused building blocks (float only). The model's inference forward
// (engine/model/vit_infer.cpp) runs them inside one OpenMP region, each call on one thread over a
// block of rows, so that a block's intermediates (LayerNorm output, the MLP hidden layer, a tile of
// attention scores) stay in that core's cache and the threads meet only twice per encoder block.
// Each function computes what the reference ops in ops.h compute, in float, with other summation
// orders (and erf from a rational approximation accurate to a few ulp); test_kernels checks each
// against the reference: test_kernels --gtest_filter='Infer*'.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/common/shapes.h"

namespace vit::cpu {

// What a linear layer does with its result x @ w^T + b.
enum class Epilogue {
  store,       // y = x w^T + b
  gelu,        // y = gelu(x w^T + b), exact-erf GELU
  accumulate,  // y += x w^T + b: a residual add
};

// One thread, M contiguous rows: x (M, K), w (N, K) in torch's layout, b (N), y (M, N).
void linear_rows(const float* x, const float* w, const float* b, float* y, int M, int K, int N, Epilogue e);

// One thread: LayerNorm of R contiguous rows of C values, no saved statistics.
void layernorm_rows(const float* x, const float* w, const float* b, float* y, int R, int C, float eps);

// One thread: attention output rows [q0, q1) of sequence b, head h, without the N x N matrix:
// the (q1 - q0, N) tile of scores lives in `scores` only. qkv (B, N, 3D) and out (B, N, D) as in
// attention_fwd.
void attention_rows(const float* qkv, float* out, const AttnShape& s, int b, int h, int q0, int q1, float* scores);

// ---- bf16 weights for the AMX tile units (Intel Sapphire Rapids and later) ----
// True when this CPU has AMX-BF16 and the kernel granted this process the tile state.
bool amx_bf16_available();

// A weight w (N, K) rounded to bf16 (round to nearest even) and laid out for the tile
// multiply: blocks of 16 output columns, within each K/2 rows of 16 pairs (the "VNNI" layout
// of the B operand). K must be a multiple of 32 and N of 16.
struct PackedBF16 {
  int N = 0, K = 0;
  std::vector<uint16_t> data;
};
PackedBF16 pack_bf16(const float* w, int N, int K);

// linear_rows with bf16 inputs and fp32 accumulation on the tile units: x is rounded to bf16
// on the fly (into `xs`, at least round_up(M, 16) * K values), w comes packed. One thread;
// the caller has checked amx_bf16_available().
void linear_rows_bf16(const float* x, const PackedBF16& w, const float* b, float* y, int M, Epilogue e, uint16_t* xs);

}  // namespace vit::cpu
