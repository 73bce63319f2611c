// vit::ViTCuda: the ViT chained from the CUDA ops in kernels/*.cuh. See vit_cuda.h.
// The forward/backward sequence mirrors engine/model/vit.cpp step by step (same dropout sites and
// seeds), so every intermediate can be compared with the CPU model.
#include "engine/util/rng.h"
#include "engine/model/vit_cuda.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>
#include <stdexcept>
#include <string>

#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_cudnn.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gelu.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/layernorm.cuh"
#include "kernels/cuda/patch_embed.cuh"
#include "kernels/cuda/softmax_xent.cuh"
#include "engine/model/cuda_arena.cuh"
#include "engine/model/cuda_profiler.cuh"

namespace vit {

using cuda::bf16;

bool cuda_device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

CudaDeviceInfo check_cuda_device(Precision prec) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();
    throw std::runtime_error("no CUDA device found");
  }
  int dev = 0;
  VIT_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  VIT_CHECK(cudaGetDeviceProperties(&p, dev));
  if (prec == Precision::BF16 && p.major < 8)
    throw std::runtime_error("bf16 needs compute capability >= 8.0, found " + std::to_string(p.major) + "." +
                             std::to_string(p.minor));
  CudaDeviceInfo info;
  info.name = p.name;
  info.major = p.major;
  info.minor = p.minor;
  info.sm_count = p.multiProcessorCount;
  info.total_mem = p.totalGlobalMem;
  return info;
}

namespace {
// Attention through the kernels the process selected (kernels/cuda/attention_cudnn.cuh): cuDNN's for
// bf16 when asked, the engine's own otherwise (and always for fp32, which cuDNN's fused attention
// does not take).
template <typename T>
void attention_fwd_selected(const T* qkv, T* out, float* lse, const AttnShape& shape, cudaStream_t s) {
  if constexpr (std::is_same_v<T, bf16>)
    if (cuda::attention_backend() == cuda::AttentionBackend::kCudnn)
      return cuda::attention_fwd_cudnn(qkv, out, lse, shape, s);
  cuda::attention_fwd<T>(qkv, out, lse, shape, s);
}
template <typename T>
void attention_bwd_selected(const T* qkv, const T* out, const T* dout, const float* lse, T* dqkv, float* scratch,
                            const AttnShape& shape, cudaStream_t s) {
  if constexpr (std::is_same_v<T, bf16>)
    if (cuda::attention_backend() == cuda::AttentionBackend::kCudnn)
      return cuda::attention_bwd_cudnn(qkv, out, dout, lse, dqkv, shape, s);
  cuda::attention_bwd<T>(qkv, out, dout, lse, dqkv, scratch, shape, s);
}

// Records what `work` launches on `stream` into a CUDA graph and instantiates it. If `work` throws,
// the capture is ended and dropped before the exception goes on, so the stream is usable again.
template <typename F>
cudaGraphExec_t capture_graph(cudaStream_t stream, F&& work) {
  VIT_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    work();
  } catch (...) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  cudaGraph_t graph = nullptr;
  VIT_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  VIT_CHECK(e);
  return exec;
}
}  // namespace

struct ViTCuda::Impl : ActivationArena {
  ViTConfig cfg;
  Precision prec;
  int max_batch = 0;
  bool growable = false;  // constructed with max_batch 0: the activation arena grows with the batch
  CudaDeviceInfo dev;
  std::vector<ParamInfo> table;
  size_t n = 0, ndecay = 0;
  size_t stride = 0;  // floats between the arena's segments: device_segment_stride(n) (vit.h says why)
  cudaStream_t stream = nullptr;

  // parameter arena
  void* parena = nullptr;
  size_t parena_bytes = 0;
  float *params = nullptr, *grads = nullptr, *m = nullptr, *v = nullptr;
  bf16* shadow = nullptr;  // BF16 only

  // the activation arena: ActivationArena (engine/model/cuda_arena.cuh), whose members Impl inherits
  std::unique_ptr<cuda::GemmContext> gemm;

  // pinned host mirrors
  float* h_logits = nullptr;  // (max_batch, classes)
  std::vector<float> h_features;  // features(): (B, dim)
  cpu::AdamWParams* h_hp = nullptr;
  uint64_t* h_seeds = nullptr;
  float* h_loss = nullptr;
  double* h_sumsq = nullptr;

  OpProfiler prof;

  // state of the last forward
  int B = 0;
  ForwardOptions fopt;
  const float* last_images = nullptr;
  float smoothing = 0.f;
  const int* cur_labels = nullptr;
  bool have_loss = false;
  const uint64_t* seed_ptr_base = nullptr;  // non-null while recording a graph: seeds read on the device

  std::function<void(int)> bwd_hook;  // set_backward_hook
  void stage_done(int stage) const {
    if (!bwd_hook) return;
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    VIT_CHECK(cudaStreamIsCapturing(stream, &st));
    if (st == cudaStreamCaptureStatusNone) bwd_hook(stage);  // a captured graph replays without the host
  }

  cudaGraphExec_t step_exec = nullptr, fwd_exec = nullptr;
  int step_B = 0, fwd_B = 0;
  bool step_training = false;
  double last_norm = 0;

  int N() const { return cfg.seq_len(); }
  int Np() const { return cfg.num_patches(); }
  int sites() const { return 1 + 3 * cfg.depth; }
  ParamOffsets po;  // every tensor's offset by role (engine/model/params.h), the CPU path's layout
  float* P(size_t off) const { return params + off; }
  float* G(size_t off) const { return grads + off; }
  template <typename T>
  const T* W(size_t off) const {  // weights/biases the GEMMs read: bf16 shadow or fp32 master
    if constexpr (std::is_same_v<T, float>)
      return params + off;
    else
      return shadow + off;
  }
  // (seed value, device pointer) of a dropout site for this forward
  uint64_t seed_of(int site) const { return site_seed(fopt.dropout_seed, site); }
  const uint64_t* seed_ptr(int site) const { return seed_ptr_base ? seed_ptr_base + site : nullptr; }

  // ------------------------------------------------------------------ forward
  template <typename T>
  void forward_t(const float* d_images, int Bn, const ForwardOptions& opt) {
    B = Bn;
    fopt = opt;
    last_images = d_images;
    have_loss = false;
    const int Nn = N(), D = cfg.dim, Mm = cfg.mlp_dim, H = cfg.heads, NP = Np(), S = cfg.image_size;
    const int M = Bn * Nn;
    const size_t MD = size_t(M) * D;
    const float pd = opt.training ? cfg.dropout : 0.f;
    auto A = [](void* p) { return static_cast<T*>(p); };
    cudaStream_t s = stream;
    cuda::GemmContext& g = *gemm;

    prof.mark("fwd patch embed");
    cuda::patch_embed_fwd<T>(g, d_images, W<T>(po.conv_w), W<T>(po.conv_b), A(cols), A(patches),
                             PatchShape{Bn, cfg.channels, S, S, cfg.patch, D}, s);
    prof.mark("fwd embed tokens");
    cuda::embed_tokens_fwd<T>(A(patches), P(po.cls), P(po.pos), A(xs[0]), Bn, NP, D, s, pd, seed_of(0), seed_ptr(0));
    for (int l = 0; l < cfg.depth; ++l) {
      LayerActs& la = layers[l];
      const BlockOffsets& p = po.blocks[l];
      const int s0 = 1 + 3 * l;
      // attention branch: x_mid = x + dropout(out_proj(attention(in_proj(ln_1(x)))))
      prof.mark("fwd ln_1");
      cuda::layernorm_fwd<T>(A(xs[l]), P(p.ln1_w), P(p.ln1_b), A(la.ln1), la.mean1, la.rstd1, M, D, cfg.ln_eps, s);
      prof.mark("fwd qkv gemm");
      cuda::linear_fwd<T, T>(g, A(la.ln1), W<T>(p.qkv_w), W<T>(p.qkv_b), A(la.qkv), M, D, 3 * D,
                             s);  // (B,N,D)->(B,N,3D)
      prof.mark("fwd attention");
      attention_fwd_selected<T>(A(la.qkv), A(la.att), la.lse, vit::AttnShape{Bn, Nn, H, D / H}, s);
      prof.mark("fwd out_proj (+residual)");
      // stochastic depth of this block (vit.h drop_path_rate); not in captured graphs (capture_step)
      const float dp = opt.training ? drop_path_rate(opt.drop_path, l, cfg.depth) : 0.f;
      if (pd > 0.f || dp > 0.f) {
        cuda::linear_fwd<T, T>(g, A(la.att), W<T>(p.proj_w), W<T>(p.proj_b), A(tmp), M, D, D, s);
        if (dp > 0.f)
          cuda::drop_path<T>(A(tmp), A(tmp), Bn, size_t(Nn) * D, dp, drop_path_seed(opt.dropout_seed, l, 0), s);
        cuda::residual_dropout_fwd<T>(A(xs[l]), A(tmp), A(la.x_mid), MD, pd, seed_of(s0), s, seed_ptr(s0));
      } else {  // no dropout: the residual add is the GEMM's C operand
        cuda::linear_residual_fwd<T>(g, A(la.att), W<T>(p.proj_w), W<T>(p.proj_b), A(xs[l]), A(la.x_mid), M, D, D, s);
      }
      // MLP branch: x_out = x_mid + dropout(fc2(dropout(gelu(fc1(ln_2(x_mid))))))
      prof.mark("fwd ln_2");
      cuda::layernorm_fwd<T>(A(la.x_mid), P(p.ln2_w), P(p.ln2_b), A(la.ln2), la.mean2, la.rstd2, M, D, cfg.ln_eps, s);
      prof.mark("fwd fc1 gemm");
      cuda::linear_fwd<T, T>(g, A(la.ln2), W<T>(p.fc1_w), W<T>(p.fc1_b), A(la.h), M, D, Mm, s);
      prof.mark("fwd gelu");
      cuda::gelu_fwd<T>(A(la.h), A(la.g), size_t(M) * Mm, s);
      prof.mark("fwd fc2 (+residual)");
      if (pd > 0.f) cuda::dropout_fwd<T>(A(la.g), A(la.g), size_t(M) * Mm, pd, seed_of(s0 + 1), s, seed_ptr(s0 + 1));
      if (pd > 0.f || dp > 0.f) {
        cuda::linear_fwd<T, T>(g, A(la.g), W<T>(p.fc2_w), W<T>(p.fc2_b), A(tmp), M, Mm, D, s);
        if (dp > 0.f)
          cuda::drop_path<T>(A(tmp), A(tmp), Bn, size_t(Nn) * D, dp, drop_path_seed(opt.dropout_seed, l, 1), s);
        cuda::residual_dropout_fwd<T>(A(la.x_mid), A(tmp), A(xs[l + 1]), MD, pd, seed_of(s0 + 2), s, seed_ptr(s0 + 2));
      } else {
        cuda::linear_residual_fwd<T>(g, A(la.g), W<T>(p.fc2_w), W<T>(p.fc2_b), A(la.x_mid), A(xs[l + 1]), M, Mm, D, s);
      }
    }
    // encoder.ln on the class-token rows only (LayerNorm is per row: exact), then the head.
    prof.mark("fwd head");
    cuda::gather_cls<T>(A(xs[cfg.depth]), A(cls), Bn, Nn, D, s);
    cuda::layernorm_fwd<T>(A(cls), P(po.lnf_w), P(po.lnf_b), A(lnf), meanf, rstdf, Bn, D, cfg.ln_eps, s);
    cuda::linear_fwd<T, float>(g, A(lnf), W<T>(po.head_w), P(po.head_b), logits, Bn, D, cfg.num_classes, s);
  }

  // ------------------------------------------------------------------ backward
  template <typename T>
  void backward_t() {
    const int Bn = B, Nn = N(), D = cfg.dim, Mm = cfg.mlp_dim, H = cfg.heads, NP = Np(), S = cfg.image_size;
    const int C = cfg.num_classes, M = Bn * Nn;
    const size_t MD = size_t(M) * D;
    const float pd = fopt.training ? cfg.dropout : 0.f;
    auto A = [](void* p) { return static_cast<T*>(p); };
    cudaStream_t s = stream;
    cuda::GemmContext& g = *gemm;

    // head: dlogits (fp32) -> T for the GEMMs; the bias gradient sums the fp32 values
    prof.mark("bwd head");
    T* dlt;
    if constexpr (std::is_same_v<T, float>) {
      dlt = dlogits;
    } else {
      cuda::convert<float, T>(dlogits, A(dlogits_t), size_t(Bn) * C, s);
      dlt = A(dlogits_t);
    }
    cuda::linear_bwd_dw<T>(g, A(lnf), dlt, G(po.head_w), Bn, D, C, s);
    cuda::bias_grad<float>(dlogits, G(po.head_b), bias_scratch, Bn, C, s);
    cuda::linear_bwd_dx<T>(g, dlt, W<T>(po.head_w), A(dlnf), Bn, D, C, s);
    cuda::layernorm_bwd<T>(A(cls), P(po.lnf_w), meanf, rstdf, A(dlnf), A(dcls), G(po.lnf_w), G(po.lnf_b), ln_scratch,
                           Bn, D, s);
    prof.mark("bwd scatter cls");
    cuda::scatter_cls_grad<T>(A(dcls), A(dres), Bn, Nn, D, s);  // dres = d(last block output)
    stage_done(cfg.depth);                                      // head and final LayerNorm

    for (int l = cfg.depth - 1; l >= 0; --l) {
      LayerActs& la = layers[l];
      const BlockOffsets& p = po.blocks[l];
      const int s0 = 1 + 3 * l;
      // MLP branch; dres = d(x_out), which also flows straight to x_mid.
      T* dy2 = A(dres);
      if (pd > 0.f) {
        prof.mark("bwd fc2 dropout/drop path");
        cuda::dropout_bwd<T>(A(dres), A(dtmp), MD, pd, seed_of(s0 + 2), s, seed_ptr(s0 + 2));
        dy2 = A(dtmp);
      }
      const float dp = fopt.training ? drop_path_rate(fopt.drop_path, l, cfg.depth) : 0.f;
      if (dp > 0.f) {  // dres also flows on through the residual: scale a copy
        prof.mark("bwd drop path");
        cuda::drop_path<T>(dy2, A(dtmp), Bn, size_t(Nn) * D, dp, drop_path_seed(fopt.dropout_seed, l, 1), s);
        dy2 = A(dtmp);
      }
      prof.mark("bwd fc2 dw+db");
      cuda::linear_bwd_dw_db<T>(g, A(la.g), dy2, G(p.fc2_w), G(p.fc2_b), bias_scratch, M, Mm, D, s);
      prof.mark("bwd fc2 dx");
      cuda::linear_bwd_dx<T>(g, dy2, W<T>(p.fc2_w), A(dh), M, Mm, D, s);
      // dh = gelu'(h) * dropout_bwd(dh), in place
      prof.mark("bwd gelu");
      cuda::gelu_bwd<T>(A(la.h), A(dh), A(dh), size_t(M) * Mm, s, pd, seed_of(s0 + 1), seed_ptr(s0 + 1));
      prof.mark("bwd fc1 dw+db");
      cuda::linear_bwd_dw_db<T>(g, A(la.ln2), A(dh), G(p.fc1_w), G(p.fc1_b), bias_scratch, M, D, Mm, s);
      prof.mark("bwd fc1 dx");
      cuda::linear_bwd_dx<T>(g, A(dh), W<T>(p.fc1_w), A(dtmp2), M, D, Mm, s);
      // dres = LN2-backward(dtmp2) + dres = d(x_mid)
      prof.mark("bwd ln_2");
      cuda::layernorm_bwd<T>(A(la.x_mid), P(p.ln2_w), la.mean2, la.rstd2, A(dtmp2), A(dres), G(p.ln2_w), G(p.ln2_b),
                             ln_scratch, M, D, s, A(dres));
      // attention branch
      T* dyp = A(dres);
      if (pd > 0.f) {
        prof.mark("bwd out_proj dropout/drop path");
        cuda::dropout_bwd<T>(A(dres), A(dtmp), MD, pd, seed_of(s0), s, seed_ptr(s0));
        dyp = A(dtmp);
      }
      if (dp > 0.f) {
        prof.mark("bwd drop path");
        cuda::drop_path<T>(dyp, A(dtmp), Bn, size_t(Nn) * D, dp, drop_path_seed(fopt.dropout_seed, l, 0), s);
        dyp = A(dtmp);
      }
      prof.mark("bwd out_proj dw+db");
      cuda::linear_bwd_dw_db<T>(g, A(la.att), dyp, G(p.proj_w), G(p.proj_b), bias_scratch, M, D, D, s);
      prof.mark("bwd out_proj dx");
      cuda::linear_bwd_dx<T>(g, dyp, W<T>(p.proj_w), A(dtmp2), M, D, D, s);  // d(att)
      prof.mark("bwd attention");
      attention_bwd_selected<T>(A(la.qkv), A(la.att), A(dtmp2), la.lse, A(dqkv), attn_scratch,
                                vit::AttnShape{Bn, Nn, H, D / H}, s);
      prof.mark("bwd qkv dw+db");
      cuda::linear_bwd_dw_db<T>(g, A(la.ln1), A(dqkv), G(p.qkv_w), G(p.qkv_b), bias_scratch, M, D, 3 * D, s);
      prof.mark("bwd qkv dx");
      cuda::linear_bwd_dx<T>(g, A(dqkv), W<T>(p.qkv_w), A(dtmp2), M, D, 3 * D, s);
      // dres = LN1-backward(dtmp2) + dres = d(x_in)
      prof.mark("bwd ln_1");
      cuda::layernorm_bwd<T>(A(xs[l]), P(p.ln1_w), la.mean1, la.rstd1, A(dtmp2), A(dres), G(p.ln1_w), G(p.ln1_b),
                             ln_scratch, M, D, s, A(dres));
      stage_done(l);  // every tensor of block l
    }
    // embedding: dres = d(x0); dropout + token embedding backward -> dpatches in dtmp
    prof.mark("bwd embed tokens");
    cuda::embed_tokens_bwd<T>(A(dres), A(dtmp), G(po.cls), G(po.pos), Bn, NP, D, s, pd, seed_of(0), seed_ptr(0));
    prof.mark("bwd patch embed");
    cuda::patch_embed_bwd<T>(g, A(cols), A(dtmp), G(po.conv_w), G(po.conv_b), bias_scratch,
                             PatchShape{Bn, cfg.channels, S, S, cfg.patch, D}, s);
    stage_done(-1);  // patch projection, class token, positions
  }

  // Makes the activation arena hold batch Bn. With a fixed max_batch a larger batch is an
  // error; a growable model reallocates here (outside any step, like vit::ViT), which drops
  // the cuBLASLt plans and any captured graph.
  void ensure_batch(int Bn, const char* what) {
    if (Bn <= 0) throw std::invalid_argument(std::string(what) + ": batch must be positive, got " + std::to_string(Bn));
    if (Bn <= max_batch) return;
    if (!growable)
      throw std::invalid_argument(std::string(what) + ": batch " + std::to_string(Bn) + " outside [1, " +
                                  std::to_string(max_batch) + "] (the max_batch given to the constructor)");
    if (stream) VIT_CHECK(cudaStreamSynchronize(stream));
    if (step_exec) VIT_CHECK(cudaGraphExecDestroy(step_exec)), step_exec = nullptr;
    if (fwd_exec) VIT_CHECK(cudaGraphExecDestroy(fwd_exec)), fwd_exec = nullptr;
    gemm.reset();
    if (aarena) VIT_CHECK(cudaFree(aarena)), aarena = nullptr;
    if (h_logits) VIT_CHECK(cudaFreeHost(h_logits)), h_logits = nullptr;
    allocate_activations(Bn);
  }
  void allocate_activations(int Bm) {
    Bump measure;
    layout(measure, cfg, Bm, prec);
    aarena_bytes = measure.off;
    VIT_CHECK(cudaMalloc(&aarena, aarena_bytes));
    Bump real{static_cast<char*>(aarena), 0};
    layout(real, cfg, Bm, prec);
    gemm.reset(new cuda::GemmContext(workspace, workspace_bytes));
    VIT_CHECK(cudaMallocHost(&h_logits, sizeof(float) * size_t(Bm) * cfg.num_classes));
    max_batch = Bm;
  }

  void forward_any(const float* d_images, int Bn, const ForwardOptions& opt) {
    ensure_batch(Bn, "ViTCuda::forward");
    if (!d_images) throw std::invalid_argument("ViTCuda::forward: images is null");
    if (prec == Precision::BF16)
      forward_t<bf16>(d_images, Bn, opt);
    else
      forward_t<float>(d_images, Bn, opt);
  }
  // Global L2 norm of the gradient arena: deterministic device sum, one host synchronisation.
  double grad_norm_sync() {
    prof.mark("grad norm (+ host sync)");
    cuda::sum_squares(grads, n, sumsq, sumsq_scratch, stream);
    VIT_CHECK(cudaMemcpyAsync(h_sumsq, sumsq, sizeof(double), cudaMemcpyDeviceToHost, stream));
    VIT_CHECK(cudaStreamSynchronize(stream));
    const double norm = std::sqrt(*h_sumsq);
    if (!std::isfinite(norm)) throw NonFiniteError("AdamW: gradient norm is not finite (NaN or inf in gradients)");
    return norm;
  }
  void xent(const int* d_labels, float sm) {
    prof.mark("loss (xent)");
    cuda::softmax_xent_fwd_bwd<float>(logits, d_labels, losses, mean_loss, dlogits, B, cfg.num_classes, sm, stream);
    smoothing = sm;
    cur_labels = d_labels;
    have_loss = true;
  }
  void backward_any() {
    if (!have_loss) throw std::logic_error("ViTCuda::backward called without loss() for this batch");
    if (prec == Precision::BF16)
      backward_t<bf16>();
    else
      backward_t<float>();
  }
  void adamw_launch(const cpu::AdamWParams& hp, const cpu::AdamWParams* hpd, const double* sq, float clip) {
    cuda::adamw_step(params, grads, m, v, n, ndecay, hp, stream, shadow, hpd, sq, clip);
  }
  void refresh_shadow() {
    if (shadow) cuda::convert<float, bf16>(params, shadow, n, stream);
  }

  // Frees whatever the constructor got to, also when it threw half-way.
  ~Impl() {
    if (stream) VIT_CHECK_NOTHROW(cudaStreamSynchronize(stream));
    if (step_exec) VIT_CHECK_NOTHROW(cudaGraphExecDestroy(step_exec));
    if (fwd_exec) VIT_CHECK_NOTHROW(cudaGraphExecDestroy(fwd_exec));
    gemm.reset();
    for (void* p : {(void*)h_logits, (void*)h_hp, (void*)h_seeds, (void*)h_loss, (void*)h_sumsq})
      if (p) VIT_CHECK_NOTHROW(cudaFreeHost(p));
    if (aarena) VIT_CHECK_NOTHROW(cudaFree(aarena));
    if (parena) VIT_CHECK_NOTHROW(cudaFree(parena));
    if (stream) VIT_CHECK_NOTHROW(cudaStreamDestroy(stream));
  }
};

namespace {
// Device-side init for benchmarks (no 86M host samples): uniform values with the standard
// deviation of the reference recipe (trunc-normal 0.02 -> uniform +-0.02*sqrt(3), etc.).
__global__ void init_uniform_kernel(float* x, size_t n, uint64_t seed, float half_width, float shift) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint64_t z = vit::splitmix64_at(seed, i);
    x[i] = shift + half_width * (float(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
}
}  // namespace

// ---------------------------------------------------------------------- ViTCuda
ViTCuda::ViTCuda(const ViTConfig& cfg, Precision prec, int max_batch) : impl_(new Impl()) {
  Impl& I = *impl_;
  I.dev = check_cuda_device(prec);
  cfg.validate();
  if (max_batch < 0) throw std::invalid_argument("ViTCuda: max_batch must be >= 0 (0: grow with the batch)");
  I.cfg = cfg;
  I.prec = prec;
  I.growable = max_batch == 0;
  I.table = param_table(cfg);
  for (auto& p : I.table) {
    I.n += p.numel;
    if (p.decay) I.ndecay += p.numel;
  }
  I.po = param_offsets(I.table, cfg.depth);
  VIT_CHECK(cudaStreamCreateWithFlags(&I.stream, cudaStreamNonBlocking));
  if (const char* e = std::getenv("VIT_PROFILE")) I.prof.on = std::strcmp(e, "0") != 0;
  I.prof.stream = I.stream;
  // parameter arena: [params | grads | m | v] fp32 (the vit::ViT layout) + bf16 shadow
  I.stride = device_segment_stride(I.n);
  I.parena_bytes = 4 * I.stride * sizeof(float) + (prec == Precision::BF16 ? ((I.n * 2 + 255) & ~size_t(255)) : 0);
  VIT_CHECK(cudaMalloc(&I.parena, I.parena_bytes));
  VIT_CHECK(cudaMemset(I.parena, 0, I.parena_bytes));
  I.params = static_cast<float*>(I.parena);
  I.grads = I.params + I.stride;
  I.m = I.params + 2 * I.stride;
  I.v = I.params + 3 * I.stride;
  if (prec == Precision::BF16) I.shadow = reinterpret_cast<bf16*>(I.params + 4 * I.stride);
  // activation arena: measure, then allocate once (growable: at the first forward / reserve)
  if (max_batch > 0) I.allocate_activations(max_batch);
  VIT_CHECK(cudaMallocHost(&I.h_hp, sizeof(cpu::AdamWParams)));
  VIT_CHECK(cudaMallocHost(&I.h_seeds, sizeof(uint64_t) * I.sites()));
  VIT_CHECK(cudaMallocHost(&I.h_loss, sizeof(float)));
  VIT_CHECK(cudaMallocHost(&I.h_sumsq, sizeof(double)));
}

ViTCuda::~ViTCuda() = default;

const ViTConfig& ViTCuda::config() const { return impl_->cfg; }
Precision ViTCuda::precision() const { return impl_->prec; }
int ViTCuda::max_batch() const { return impl_->max_batch; }
void ViTCuda::reserve(int B) { impl_->ensure_batch(B, "ViTCuda::reserve"); }
const std::vector<ParamInfo>& ViTCuda::params() const { return impl_->table; }
size_t ViTCuda::num_params() const { return impl_->n; }
size_t ViTCuda::num_decay_params() const { return impl_->ndecay; }
const CudaDeviceInfo& ViTCuda::device() const { return impl_->dev; }
CUstream_st* ViTCuda::stream() const { return impl_->stream; }
void ViTCuda::set_backward_hook(std::function<void(int stage)> hook) { impl_->bwd_hook = std::move(hook); }
float* ViTCuda::device_grads() { return impl_->grads; }
void ViTCuda::synchronize() { VIT_CHECK(cudaStreamSynchronize(impl_->stream)); }
size_t ViTCuda::param_arena_bytes() const { return impl_->parena_bytes; }
size_t ViTCuda::activation_arena_bytes() const { return impl_->aarena_bytes; }
int ViTCuda::last_batch() const { return impl_->B; }
float* ViTCuda::device_images() { return impl_->img; }
int* ViTCuda::device_labels() { return impl_->labels; }
const float* ViTCuda::device_logits() const { return impl_->logits; }

const float* ViTCuda::features() {
  Impl& I = *impl_;
  const size_t n = size_t(I.B) * I.cfg.dim;
  I.h_features.resize(n);
  if (I.prec == Precision::BF16) {  // the activations are bf16: widen on the host
    std::vector<bf16> t(n);
    VIT_CHECK(cudaMemcpyAsync(t.data(), I.lnf, n * sizeof(bf16), cudaMemcpyDeviceToHost, I.stream));
    VIT_CHECK(cudaStreamSynchronize(I.stream));
    for (size_t i = 0; i < n; ++i) I.h_features[i] = __bfloat162float(t[i]);
  } else {
    VIT_CHECK(cudaMemcpyAsync(I.h_features.data(), I.lnf, n * sizeof(float), cudaMemcpyDeviceToHost, I.stream));
    VIT_CHECK(cudaStreamSynchronize(I.stream));
  }
  return I.h_features.data();
}
double ViTCuda::last_grad_norm() const { return impl_->last_norm; }

void ViTCuda::upload(const ViT& host) {
  Impl& I = *impl_;
  if (!I.cfg.same_architecture(host.config()))
    throw std::invalid_argument("ViTCuda::upload: architecture mismatch: " + host.config().to_string() + " vs " +
                                I.cfg.to_string());
  // vit::ViT's arena is [params | grads | m | v] contiguous from param_data(); the device's
  // segments are `stride` apart: one copy per segment (a 2D copy would cap the pitch at 2 GB).
  for (size_t k = 0; k < 4; ++k)
    VIT_CHECK(cudaMemcpyAsync(I.params + k * I.stride, host.param_data() + k * I.n, I.n * sizeof(float),
                              cudaMemcpyHostToDevice, I.stream));
  I.refresh_shadow();
  VIT_CHECK(cudaStreamSynchronize(I.stream));
}

void ViTCuda::download(ViT& host) {
  Impl& I = *impl_;
  if (!I.cfg.same_architecture(host.config())) throw std::invalid_argument("ViTCuda::download: architecture mismatch");
  for (size_t k = 0; k < 4; ++k)
    VIT_CHECK(cudaMemcpyAsync(host.param_data() + k * I.n, I.params + k * I.stride, I.n * sizeof(float),
                              cudaMemcpyDeviceToHost, I.stream));
  VIT_CHECK(cudaStreamSynchronize(I.stream));
}

void ViTCuda::init(uint64_t seed) {
  ViT host(impl_->cfg);
  host.init(seed);
  upload(host);
}

void ViTCuda::init_device(uint64_t seed) {
  Impl& I = *impl_;
  VIT_CHECK(cudaMemsetAsync(I.params, 0, 4 * I.stride * sizeof(float), I.stream));  // params, grads, m, v
  const float sqrt3 = 1.7320508f;
  auto ends = [](const std::string& n, const std::string& s) {
    return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
  };
  uint64_t k = 0;
  for (const auto& p : I.table) {
    float sd = 0.f, shift = 0.f;
    if (p.name == "conv_proj.weight")
      sd = std::sqrt(1.0f / (I.cfg.channels * I.cfg.patch * I.cfg.patch));
    else if (p.name == "heads.head.weight" || p.name == "class_token")
      sd = 0.f;  // zeros, as torchvision
    else if (p.name == "encoder.pos_embedding" || p.decay)
      sd = 0.02f;
    else if (ends(p.name, "ln_1.weight") || ends(p.name, "ln_2.weight") || p.name == "encoder.ln.weight")
      shift = 1.f;
    ++k;
    if (sd == 0.f && shift == 0.f) continue;
    init_uniform_kernel<<<cuda::elementwise_grid(p.numel, 256), 256, 0, I.stream>>>(
        I.params + p.offset, p.numel, seed * 1000003ull + k, sd * sqrt3, shift);
    VIT_LAUNCH_CHECK();
  }
  I.refresh_shadow();
  VIT_CHECK(cudaStreamSynchronize(I.stream));
}

void ViTCuda::zero_grad() {
  Impl& I = *impl_;
  I.prof.mark("zero_grad");
  VIT_CHECK(cudaMemsetAsync(I.grads, 0, I.n * sizeof(float), I.stream));
}
void ViTCuda::reset_optimizer() {
  Impl& I = *impl_;
  VIT_CHECK(cudaMemsetAsync(I.m, 0, 2 * I.stride * sizeof(float), I.stream));  // m, v
}

const float* ViTCuda::forward(const float* images, int B, const ForwardOptions& opt) {
  Impl& I = *impl_;
  I.ensure_batch(B, "ViTCuda::forward");
  if (!images) throw std::invalid_argument("ViTCuda::forward: images is null");
  const size_t S = I.cfg.image_size;
  VIT_CHECK(
      cudaMemcpyAsync(I.img, images, sizeof(float) * B * I.cfg.channels * S * S, cudaMemcpyHostToDevice, I.stream));
  I.forward_any(I.img, B, opt);
  VIT_CHECK(
      cudaMemcpyAsync(I.h_logits, I.logits, sizeof(float) * B * I.cfg.num_classes, cudaMemcpyDeviceToHost, I.stream));
  VIT_CHECK(cudaStreamSynchronize(I.stream));
  return I.h_logits;
}

const float* ViTCuda::forward_device(const float* d_images, int B, const ForwardOptions& opt) {
  impl_->forward_any(d_images, B, opt);
  return impl_->logits;
}

const float* ViTCuda::forward_device(const uint8_t* d_u8, int B, const ForwardOptions& opt, const float* mean3,
                                     const float* std3) {
  Impl& I = *impl_;
  I.ensure_batch(B, "ViTCuda::forward_device");
  if (I.cfg.channels != 3) throw std::invalid_argument("ViTCuda::forward_device(uint8): needs 3 channels");
  cuda::ImageNorm norm;
  for (int c = 0; c < 3; ++c) {
    if (mean3) norm.mean[c] = mean3[c];
    if (std3) norm.std[c] = std3[c];
  }
  cuda::normalize_images(d_u8, I.img, B, I.cfg.image_size, norm, I.stream);
  I.forward_any(I.img, B, opt);
  return I.logits;
}

float ViTCuda::loss(const int* labels, float smoothing) {
  Impl& I = *impl_;
  if (I.B == 0) throw std::logic_error("ViTCuda::loss called before forward");
  for (int b = 0; b < I.B; ++b)
    if (labels[b] < 0 || labels[b] >= I.cfg.num_classes)
      throw std::out_of_range("softmax_xent: label " + std::to_string(labels[b]) + " of sample " + std::to_string(b) +
                              " is outside [0, " + std::to_string(I.cfg.num_classes) + ")");
  VIT_CHECK(cudaMemcpyAsync(I.labels, labels, sizeof(int) * I.B, cudaMemcpyHostToDevice, I.stream));
  I.xent(I.labels, smoothing);
  VIT_CHECK(cudaMemcpyAsync(I.h_loss, I.mean_loss, sizeof(float), cudaMemcpyDeviceToHost, I.stream));
  VIT_CHECK(cudaStreamSynchronize(I.stream));
  return *I.h_loss;
}

const float* ViTCuda::loss_device(const int* d_labels, float smoothing) {
  Impl& I = *impl_;
  if (I.B == 0) throw std::logic_error("ViTCuda::loss_device called before forward");
  I.xent(d_labels, smoothing);
  return I.mean_loss;
}

void ViTCuda::backward() { impl_->backward_any(); }

double ViTCuda::adamw_step(cpu::AdamWParams hp, float clip_norm) {
  Impl& I = *impl_;
  const double norm = I.grad_norm_sync();
  if (clip_norm > 0 && norm > clip_norm) hp.grad_scale *= (float)(clip_norm / (norm + 1e-6));
  I.prof.mark("adamw");
  I.adamw_launch(hp, nullptr, nullptr, 0.f);
  I.prof.end_step();
  return norm;
}

double ViTCuda::adamw_step_scaled(cpu::AdamWParams hp, float clip_norm, const std::vector<float>& scale) {
  Impl& I = *impl_;
  if (scale.size() != I.table.size())
    throw std::invalid_argument("adamw_step_scaled: " + std::to_string(scale.size()) + " scales for " +
                                std::to_string(I.table.size()) + " tensors");
  for (size_t i = 0; i < I.table.size(); ++i)
    if (!(scale[i] > 0))
      VIT_CHECK(cudaMemsetAsync(I.grads + I.table[i].offset, 0, I.table[i].numel * sizeof(float), I.stream));
  const double norm = I.grad_norm_sync();
  if (clip_norm > 0 && norm > clip_norm) hp.grad_scale *= (float)(clip_norm / (norm + 1e-6));
  const float lr = hp.lr;
  for (size_t i = 0; i < I.table.size(); ++i) {
    if (!(scale[i] > 0)) continue;
    const ParamInfo& p = I.table[i];
    hp.lr = lr * scale[i];
    cuda::adamw_step(I.params + p.offset, I.grads + p.offset, I.m + p.offset, I.v + p.offset, p.numel,
                     p.decay ? p.numel : 0, hp, I.stream, I.shadow ? I.shadow + p.offset : nullptr);
  }
  return norm;
}

const float* ViTCuda::attention_lse(int layer) const {
  const Impl& I = *impl_;
  if (layer < 0 || layer >= I.cfg.depth) throw std::out_of_range("attention_lse: layer " + std::to_string(layer));
  if (I.B == 0) throw std::logic_error("attention_lse called before forward");
  return I.layers[layer].lse;
}

// ---------------------------------------------------------------------- CUDA graphs
void ViTCuda::capture_step(int B, float smoothing, float clip_norm, bool training) {
  Impl& I = *impl_;
  I.ensure_batch(B, "ViTCuda::capture_step");
  ForwardOptions opt;
  opt.training = training;
  // Warm-up (eager, no optimizer step): creates every cuBLASLt plan outside the capture.
  I.forward_any(I.img, B, opt);
  I.xent(I.labels, smoothing);
  I.backward_any();
  zero_grad();
  VIT_CHECK(cudaStreamSynchronize(I.stream));
  if (I.step_exec) {
    VIT_CHECK(cudaGraphExecDestroy(I.step_exec));
    I.step_exec = nullptr;
  }
  try {
    I.step_exec = capture_graph(I.stream, [&] {
      // per-step inputs read on the device: hyper-parameters and dropout seeds from pinned memory
      VIT_CHECK(cudaMemcpyAsync(I.hp_dev, I.h_hp, sizeof(cpu::AdamWParams), cudaMemcpyHostToDevice, I.stream));
      VIT_CHECK(
          cudaMemcpyAsync(I.seeds_dev, I.h_seeds, sizeof(uint64_t) * I.sites(), cudaMemcpyHostToDevice, I.stream));
      VIT_CHECK(cudaMemsetAsync(I.grads, 0, I.n * sizeof(float), I.stream));
      I.seed_ptr_base = I.seeds_dev;
      I.forward_any(I.img, B, opt);
      I.xent(I.labels, smoothing);
      I.backward_any();
      I.seed_ptr_base = nullptr;
      cuda::sum_squares(I.grads, I.n, I.sumsq, I.sumsq_scratch, I.stream);
      I.adamw_launch(cpu::AdamWParams{}, I.hp_dev, I.sumsq, clip_norm);
      VIT_CHECK(cudaMemcpyAsync(I.h_loss, I.mean_loss, sizeof(float), cudaMemcpyDeviceToHost, I.stream));
      VIT_CHECK(cudaMemcpyAsync(I.h_sumsq, I.sumsq, sizeof(double), cudaMemcpyDeviceToHost, I.stream));
    });
  } catch (...) {
    I.seed_ptr_base = nullptr;
    throw;
  }
  I.step_B = B;
  I.step_training = training;
}

float ViTCuda::replay_step(const cpu::AdamWParams& hp, uint64_t dropout_seed) {
  Impl& I = *impl_;
  if (!I.step_exec) throw std::logic_error("replay_step called before capture_step");
  VIT_CHECK(cudaStreamSynchronize(I.stream));  // the previous replay no longer reads the pinned inputs
  *I.h_hp = hp;
  for (int s = 0; s < I.sites(); ++s) I.h_seeds[s] = site_seed(dropout_seed, s);
  VIT_CHECK(cudaGraphLaunch(I.step_exec, I.stream));
  VIT_CHECK(cudaStreamSynchronize(I.stream));
  I.last_norm = std::sqrt(*I.h_sumsq);
  I.fopt.dropout_seed = dropout_seed;
  I.fopt.training = I.step_training;
  I.have_loss = false;  // gradients were consumed by the optimizer step
  return *I.h_loss;
}

void ViTCuda::capture_forward(int B) {
  Impl& I = *impl_;
  I.ensure_batch(B, "ViTCuda::capture_forward");
  ForwardOptions opt;            // inference
  I.forward_any(I.img, B, opt);  // warm-up: plans
  VIT_CHECK(cudaStreamSynchronize(I.stream));
  if (I.fwd_exec) {
    VIT_CHECK(cudaGraphExecDestroy(I.fwd_exec));
    I.fwd_exec = nullptr;
  }
  I.fwd_exec = capture_graph(I.stream, [&] { I.forward_any(I.img, B, opt); });
  I.fwd_B = B;
}

const float* ViTCuda::replay_forward() {
  Impl& I = *impl_;
  if (!I.fwd_exec) throw std::logic_error("replay_forward called before capture_forward");
  VIT_CHECK(cudaGraphLaunch(I.fwd_exec, I.stream));
  I.B = I.fwd_B;
  return I.logits;
}

}  // namespace vit
