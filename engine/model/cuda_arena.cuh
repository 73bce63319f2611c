// The GPU ViT's activation arena (engine/model/vit_cuda.cu): one allocation holds every tensor a
// training step or an inference pass needs, laid out once per batch size, so a step allocates
// nothing (a cudaMalloc per tensor per step would dominate small steps). ViTCuda::Impl inherits
// these members and runs its forward and backward over them.
#pragma once
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/model/vit_cuda.h"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/layernorm.cuh"

namespace vit {

// Bump allocator over one allocation; with base == nullptr it only measures.
struct Bump {
  char* base = nullptr;
  size_t off = 0;
  template <typename T>
  T* take(size_t n) {
    off = (off + 255) & ~size_t(255);
    T* p = base ? reinterpret_cast<T*>(base + off) : nullptr;
    off += n * sizeof(T);
    return p;
  }
};
// Activation pointers are stored untyped (the element type depends on the precision).
struct LayerActs {
  void *ln1, *qkv, *att, *x_mid, *ln2, *h, *g;
  float *mean1, *rstd1, *lse, *mean2, *rstd2;
};

struct ActivationArena {
  void* aarena = nullptr;
  size_t aarena_bytes = 0;
  float* img = nullptr;  // (max_batch, 3, S, S)
  int* labels = nullptr;
  void *cols = nullptr, *patches = nullptr, *tmp = nullptr;
  std::vector<void*> xs;  // depth + 1 residual-stream tensors (B, N, D)
  std::vector<LayerActs> layers;
  void *cls = nullptr, *lnf = nullptr, *dlogits_t = nullptr, *dres = nullptr, *dtmp = nullptr, *dtmp2 = nullptr,
       *dqkv = nullptr, *dh = nullptr, *dcls = nullptr, *dlnf = nullptr;
  float *meanf = nullptr, *rstdf = nullptr, *logits = nullptr, *losses = nullptr, *mean_loss = nullptr,
        *dlogits = nullptr, *attn_scratch = nullptr, *bias_scratch = nullptr, *ln_scratch = nullptr;
  double *sumsq = nullptr, *sumsq_scratch = nullptr;
  cpu::AdamWParams* hp_dev = nullptr;
  uint64_t* seeds_dev = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t(32) << 20;

  // Places every activation of a batch of Bm in the arena that b walks (b.base == nullptr: only
  // measures, b.off is then the size to allocate). Every tensor starts 256-byte aligned.
  void layout(Bump& b, const ViTConfig& cfg, int Bm, Precision prec) {
    const size_t S = cfg.image_size, D = cfg.dim, Mm = cfg.mlp_dim, H = cfg.heads, C = cfg.num_classes;
    const size_t Nn = cfg.seq_len(), NP = cfg.num_patches(), K = size_t(cfg.channels) * cfg.patch * cfg.patch;
    const size_t M = Bm * Nn, es = prec == Precision::BF16 ? 2 : 4;
    auto act = [&](size_t count) { return static_cast<void*>(b.take<char>(count * es)); };
    img = b.take<float>(size_t(Bm) * cfg.channels * S * S);
    labels = b.take<int>(Bm);
    cols = act(Bm * NP * K);
    patches = act(Bm * NP * D);
    tmp = act(M * D);
    xs.assign(cfg.depth + 1, nullptr);
    for (auto& x : xs) x = act(M * D);
    layers.assign(cfg.depth, LayerActs{});
    for (auto& la : layers) {
      la.ln1 = act(M * D);
      la.mean1 = b.take<float>(M);
      la.rstd1 = b.take<float>(M);
      la.qkv = act(M * 3 * D);
      la.att = act(M * D);
      la.lse = b.take<float>(Bm * H * Nn);
      la.x_mid = act(M * D);
      la.ln2 = act(M * D);
      la.mean2 = b.take<float>(M);
      la.rstd2 = b.take<float>(M);
      la.h = act(M * Mm);
      la.g = act(M * Mm);
    }
    cls = act(Bm * D);
    lnf = act(Bm * D);
    meanf = b.take<float>(Bm);
    rstdf = b.take<float>(Bm);
    logits = b.take<float>(Bm * C);
    losses = b.take<float>(Bm);
    mean_loss = b.take<float>(1);
    dlogits = b.take<float>(Bm * C);
    dlogits_t = act(Bm * C);
    dres = act(M * D);
    dtmp = act(M * D);
    dtmp2 = act(M * D);
    dqkv = act(M * 3 * D);
    dh = act(M * Mm);
    dcls = act(Bm * D);
    dlnf = act(Bm * D);
    attn_scratch = b.take<float>(Bm * H * Nn);
    size_t bs = cuda::bias_grad_scratch_floats(int(M), int(std::max<size_t>({3 * D, Mm, C})));
    bias_scratch = b.take<float>(bs);
    ln_scratch = b.take<float>(cuda::layernorm_bwd_scratch_floats(int(M), int(D)));
    sumsq = b.take<double>(1);
    sumsq_scratch = b.take<double>(cuda::kSumSqBlocks);
    hp_dev = b.take<cpu::AdamWParams>(1);
    seeds_dev = b.take<uint64_t>(1 + 3 * cfg.depth);  // one seed per dropout site
    workspace = b.take<char>(workspace_bytes);
  }
};

}  // namespace vit
