// One pre-norm transformer encoder block on the CPU reference path, forward and backward, for any
// sequence length: the ViT (vit.cpp) runs its encoder through it, and the masked autoencoder
// (mae.cpp) runs its encoder on the visible tokens and its decoder on all of them through the same
// code. Shapes: B batch, N tokens, D width, M MLP width, H heads.
//
//   x_mid = x   + dropout(out_proj(attention(in_proj(ln_1(x)))))
//   x_out = x_mid + dropout(fc2(dropout(gelu(fc1(ln_2(x_mid))))))
// (each residual branch also through stochastic depth when training.)
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/model/params.h"  // BlockParams

namespace vit {

// What the forward saves for the backward (all row-major (B, N, .)).
struct BlockActs {
  float* x_in;  // block input (B,N,D) = previous block's output
  float *ln1, *ln1_mean, *ln1_rstd;
  float* qkv;    // (B,N,3D)
  float* probs;  // (B,H,N,N)
  float* att;    // (B,N,D) attention output before out_proj
  float* x_mid;  // (B,N,D) after the attention residual
  float *ln2, *ln2_mean, *ln2_rstd;
  float* h;   // (B,N,M) fc1 output (pre-GELU)
  float* g;   // (B,N,M) GELU output
  float* gd;  // (B,N,M) after dropout (== g when the model has no dropout)
};

struct BlockShape {
  int B, N, D, H, M;
  float ln_eps;
};

// The block's randomness in one training step: dropout probability and the seed of its three
// dropout sites (site, site + 1, site + 2; engine/model/params.h site_seed), and the block's
// drop-path rate with its seed base (drop_path_seed(seed, layer, branch)). All zero: no noise.
struct BlockNoise {
  float dropout = 0.0f;
  float drop_path = 0.0f;
  uint64_t seed = 0;
  int site = 0;
  int layer = 0;
};

// Floats of saved activations per block; `dropout` says whether gd needs its own buffer.
size_t block_acts_floats(const BlockShape& s, bool dropout);
// Lays out one block's saved activations from `base` (x_in is left to the caller); returns the
// floats taken.
size_t block_acts_layout(const BlockShape& s, bool dropout, float* base, BlockActs* a);

// a.x_in -> x_out, saving a's buffers; tmp is (B,N,D) scratch.
void block_fwd(const BlockParams& w, BlockActs& a, float* x_out, float* tmp, const BlockShape& s,
               const BlockNoise& n);

// Scratch the backward works in: dx2, dtmp (B,N,D), dqkv (B,N,3D), dh, dh2 (B,N,M).
struct BlockScratch {
  float *dx2, *dtmp, *dqkv, *dh, *dh2;
};
// dx holds d(x_out) on entry and d(x_in) on return; parameter gradients accumulate into g.
void block_bwd(const BlockParams& w, const BlockParams& g, const BlockActs& a, float* dx, const BlockScratch& t,
               const BlockShape& s, const BlockNoise& n);

}  // namespace vit
