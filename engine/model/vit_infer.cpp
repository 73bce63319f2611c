// The ViT's CPU inference forward: the math of ViT::forward in eval mode (no dropout), with
// nothing kept for a backward pass. It runs in one OpenMP region and one small arena:
//   x    (B*N, D)   the residual stream, updated in place
//   qkv  (B*N, 3D)  the current block's in_proj output
//   att  (B*N, D)   the attention output before out_proj
// plus per thread a block's LayerNorm output (R, D), MLP hidden layer (R, M), a tile of attention
// scores (Tq, N) and the bf16 copy of a block's input.
// Per encoder block the threads meet twice:
//   1. attention, split over (sequence, head, tile of Tq query rows): balanced even at batch 1,
//      where (sequence, head) alone gives 3 tasks to 2 threads;
//   2. row blocks of R rows: x += out_proj(att); y = ln_2(x); x += fc2(gelu(fc1(y))); then the
//      next block's y = ln_1(x) and qkv = in_proj(y), all while the block is in cache.
// The last block feeds only the class token to the head, so it computes attention for query row
// 0 alone and runs out_proj and the MLP on the B class-token rows (LayerNorm is per row, so this
// is exact), which saves about 1/depth of the work.
// Test: test_model --gtest_filter='Inference*'.
#include <algorithm>
#include <cstring>
#include <utility>

#include "engine/model/vit.h"
#include "kernels/cpu/infer.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace vit {

using cpu::Epilogue;

namespace {

constexpr int kRows = 128;  // rows per block: the (128, mlp) hidden layer of vit_ti16 is 384 KB, in L2
constexpr int kTq = 64;     // query rows per attention tile: a (64, 197) score tile is 50 KB

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Everything one forward needs, bound to the arena and the parameters.
struct Infer {
  const ViTConfig& c;
  const float* P;  // parameter arena
  const ParamOffsets& o;
  const std::vector<cpu::PackedBF16>* packed;  // null: fp32
  int B, N, D, M, nt;
  const float* images = nullptr;
  float *x, *qkv, *att, *xc, *attc;  // xc, attc: the class-token rows of x and att (B, D)
  std::vector<float*> y, h, scores;  // per thread
  std::vector<uint16_t*> xs;         // per thread, bf16 rows for the tile units

  // y = epilogue(x w^T + b) through the fp32 or bf16 GEMM; `which` indexes the packed weights.
  void linear(const float* in, size_t w, int which, size_t b, float* out, int R, int K, int Nout, Epilogue e) {
    if (packed)
      cpu::linear_rows_bf16(in, (*packed)[which], P + b, out, R, e, xs[thread_id()]);
    else
      cpu::linear_rows(in, P + w, P + b, out, R, K, Nout, e);
  }
  void ln1_qkv(int l, float* xr, float* qkvr, int R) {
    const BlockOffsets& w = o.blocks[l];
    float* yt = y[thread_id()];
    cpu::layernorm_rows(xr, P + w.ln1_w, P + w.ln1_b, yt, R, D, c.ln_eps);
    linear(yt, w.qkv_w, 1 + 4 * l, w.qkv_b, qkvr, R, D, 3 * D, Epilogue::store);
  }
  // Block l after its attention, for R rows: out_proj + residual, then the MLP + residual.
  void proj_mlp(int l, const float* attr, float* xr, int R) {
    const BlockOffsets& w = o.blocks[l];
    float *yt = y[thread_id()], *ht = h[thread_id()];
    linear(attr, w.proj_w, 2 + 4 * l, w.proj_b, xr, R, D, D, Epilogue::accumulate);
    cpu::layernorm_rows(xr, P + w.ln2_w, P + w.ln2_b, yt, R, D, c.ln_eps);
    linear(yt, w.fc1_w, 3 + 4 * l, w.fc1_b, ht, R, D, M, Epilogue::gelu);
    linear(ht, w.fc2_w, 4 + 4 * l, w.fc2_b, xr, R, M, D, Epilogue::accumulate);
  }
  void embed(int b, int p0, int p1);
  void run_blocks();
};

// Patches [p0, p1) of image b: im2col into the thread's hidden-layer buffer (kRows x max(M, K)),
// the conv as a GEMM, then + position embedding. Patch p is token 1 + p; token 0 the class token.
void Infer::embed(int b, int p0, int p1) {
  const int C = c.channels, S = c.image_size, Pz = c.patch, g = c.grid(), K = C * Pz * Pz;
  float* cols = h[thread_id()];
  for (int p = p0; p < p1; p++)
    for (int ch = 0; ch < C; ch++)
      for (int ky = 0; ky < Pz; ky++)
        std::memcpy(cols + (size_t)(p - p0) * K + (ch * Pz + ky) * Pz,
                    images + (((size_t)b * C + ch) * S + (p / g) * Pz + ky) * S + (p % g) * Pz, sizeof(float) * Pz);
  float* out = x + ((size_t)b * N + 1 + p0) * D;
  linear(cols, o.conv_w, 0, o.conv_b, out, p1 - p0, K, D, Epilogue::store);
  const float* pos = P + o.pos + (size_t)(1 + p0) * D;
  for (size_t i = 0; i < (size_t)(p1 - p0) * D; i++) out[i] += pos[i];
  if (p0 == 0)
    for (int d = 0; d < D; d++) x[(size_t)b * N * D + d] = P[o.cls + d] + P[o.pos + d];
}

void Infer::run_blocks() {
  const int BN = B * N, L = c.depth, H = c.heads, Np = N - 1;
  const AttnShape as{B, N, H, D / H};
  // Row blocks: a multiple of the thread count, each at most kRows rows.
  int nblk = (BN + kRows - 1) / kRows;
  nblk = (nblk + nt - 1) / nt * nt;
  const int rb = (BN + nblk - 1) / nblk;
  const int tiles = (N + kTq - 1) / kTq, pblk = (Np + kRows - 1) / kRows;
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (int t = 0; t < B * pblk; t++) {
      const int p0 = (t % pblk) * kRows;
      embed(t / pblk, p0, std::min(p0 + kRows, Np));
    }
#pragma omp for schedule(static)
    for (int r0 = 0; r0 < BN; r0 += rb) ln1_qkv(0, x + (size_t)r0 * D, qkv + (size_t)r0 * 3 * D, std::min(rb, BN - r0));
    for (int l = 0; l < L - 1; l++) {
#pragma omp for schedule(static)
      for (int t = 0; t < B * H * tiles; t++) {
        const int q0 = (t % tiles) * kTq;
        cpu::attention_rows(qkv, att, as, t / (H * tiles), t / tiles % H, q0, std::min(q0 + kTq, N),
                            scores[thread_id()]);
      }
#pragma omp for schedule(static)
      for (int r0 = 0; r0 < BN; r0 += rb) {
        const int R = std::min(rb, BN - r0);
        proj_mlp(l, att + (size_t)r0 * D, x + (size_t)r0 * D, R);
        ln1_qkv(l + 1, x + (size_t)r0 * D, qkv + (size_t)r0 * 3 * D, R);
      }
    }
    // The last block: class-token rows only.
#pragma omp for schedule(static)
    for (int t = 0; t < B * H; t++) {
      cpu::attention_rows(qkv, att, as, t / H, t % H, 0, 1, scores[thread_id()]);
    }
#pragma omp single
    {
      for (int b = 0; b < B; b++) {
        std::memcpy(xc + (size_t)b * D, x + (size_t)b * N * D, sizeof(float) * D);
        std::memcpy(attc + (size_t)b * D, att + (size_t)b * N * D, sizeof(float) * D);
      }
    }
    const int cb = std::min(kRows, (B + nt - 1) / nt);
#pragma omp for schedule(static)
    for (int b0 = 0; b0 < B; b0 += cb)
      proj_mlp(L - 1, attc + (size_t)b0 * D, xc + (size_t)b0 * D, std::min(cb, B - b0));
  }
}

}  // namespace

InferencePrecision ViT::inference_precision() const {
  // The tile kernel takes K in steps of 32 and N in steps of 16 (pack_bf16).
  const int K = cfg_.channels * cfg_.patch * cfg_.patch;
  const bool shapes = cfg_.dim % 32 == 0 && cfg_.mlp_dim % 32 == 0 && K % 32 == 0;
  return precision_ == InferencePrecision::bf16 && shapes && cpu::amx_bf16_available() ? InferencePrecision::bf16
                                                                                       : InferencePrecision::fp32;
}

void ViT::pack_weights_bf16() {
  const float* P = arena_.data();
  const int D = cfg_.dim, M = cfg_.mlp_dim, K = cfg_.channels * cfg_.patch * cfg_.patch;
  packed_.clear();
  packed_.push_back(cpu::pack_bf16(P + offsets_.conv_w, D, K));
  for (const BlockOffsets& b : offsets_.blocks) {
    packed_.push_back(cpu::pack_bf16(P + b.qkv_w, 3 * D, D));
    packed_.push_back(cpu::pack_bf16(P + b.proj_w, D, D));
    packed_.push_back(cpu::pack_bf16(P + b.fc1_w, M, D));
    packed_.push_back(cpu::pack_bf16(P + b.fc2_w, D, M));
  }
  packed_stale_ = false;
}

const float* ViT::forward_inference(const float* images, int B) {
  const bool bf16 = inference_precision() == InferencePrecision::bf16;
  if (bf16 && packed_stale_) pack_weights_bf16();
  const int N = cfg_.seq_len(), D = cfg_.dim, M = cfg_.mlp_dim, nt = num_threads();
  const int K = cfg_.channels * cfg_.patch * cfg_.patch, Kmax = std::max({D, M, K});
  const size_t BN = (size_t)B * N, per_thread = (size_t)kRows * D + (size_t)kRows * std::max(M, K) + (size_t)kTq * N +
                                                ((size_t)kRows + 16) * Kmax / 2 + 64;
  const size_t total = BN * D * 5 + (size_t)B * D * 4 + (size_t)B * cfg_.num_classes + nt * per_thread;
  if (infer_.size() < total) infer_.assign(total, 0.0f);  // grows with the largest batch seen, then reused
  Infer r{cfg_, arena_.data(), offsets_, bf16 ? &packed_ : nullptr, B, N, D, M, nt};
  float* p = infer_.data();
  auto take = [&](size_t n) { return std::exchange(p, p + n); };
  r.x = take(BN * D), r.qkv = take(BN * 3 * D), r.att = take(BN * D), r.xc = take((size_t)B * D);
  r.attc = take((size_t)B * D);
  float* lnf = take((size_t)B * D);
  float* logits = take((size_t)B * cfg_.num_classes);
  for (int t = 0; t < nt; t++) {
    r.y.push_back(take((size_t)kRows * D));
    r.h.push_back(take((size_t)kRows * std::max(M, K)));
    r.scores.push_back(take((size_t)kTq * N));
    r.xs.push_back(reinterpret_cast<uint16_t*>(take(((size_t)kRows + 16) * Kmax / 2 + 64)));
  }
  r.images = images;
  r.run_blocks();
  cpu::layernorm_rows(r.xc, arena_.data() + offsets_.lnf_w, arena_.data() + offsets_.lnf_b, lnf, B, D, cfg_.ln_eps);
  cpu::linear_rows(lnf, arena_.data() + offsets_.head_w, arena_.data() + offsets_.head_b, logits, B, D,
                   cfg_.num_classes, Epilogue::store);
  features_ = lnf;
  return logits;
}

}  // namespace vit
