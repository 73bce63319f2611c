// The ViT on the GPU: same architecture, parameter table and arena layout as vit::ViT
// (engine/model/vit.h), so the two copy parameters 1:1 and the CPU model is the test oracle.
//
// Precision::FP32 runs everything in fp32 (GEMMs with CUBLAS_COMPUTE_32F, no TF32): the
// checking mode. Precision::BF16 keeps fp32 master weights, gradients and Adam moments,
// a bf16 shadow of the weights for the GEMMs (refreshed by the AdamW kernel), and bf16
// activations; LayerNorm, softmax, the loss and every GEMM accumulate in fp32.
//
// Memory: one device allocation for [params | grads | adam m | adam v | bf16 shadow],
// one for every activation, scratch buffer and the cuBLASLt workspace, both sized in the
// constructor for max_batch: nothing is allocated inside a step, so a whole training step
// can be captured as a CUDA graph (capture_step / replay_step). With max_batch = 0 the
// activation arena instead grows with the largest batch seen (like vit::ViT), reallocating
// outside the step when a larger batch arrives.
//
// This header includes no CUDA header, so plain C++ (the CLI, tests) can use it.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/vit.h"

struct CUstream_st;

namespace vit {

enum class Precision { FP32, BF16 };

struct CudaDeviceInfo {
  std::string name;
  int major = 0, minor = 0;
  int sm_count = 0;
  size_t total_mem = 0;
};
// Throws std::runtime_error("no CUDA device found") without a usable device, and
// "bf16 needs compute capability >= 8.0, found X.Y" for BF16 on an older card.
CudaDeviceInfo check_cuda_device(Precision prec);
// True when at least one CUDA device is visible (never throws).
bool cuda_device_available();

class ViTCuda {
 public:
  // max_batch > 0: activations for up to max_batch images, allocated here; 0: grow on demand.
  explicit ViTCuda(const ViTConfig& cfg, Precision prec = Precision::BF16, int max_batch = 0);
  ~ViTCuda();
  ViTCuda(const ViTCuda&) = delete;
  ViTCuda& operator=(const ViTCuda&) = delete;

  const ViTConfig& config() const;
  Precision precision() const;
  int max_batch() const;  // current capacity (0 before the first forward of a growable model)
  void reserve(int B);    // make room for batch B now (throws if above a fixed max_batch)
  const std::vector<ParamInfo>& params() const;
  size_t num_params() const;
  size_t num_decay_params() const;
  const CudaDeviceInfo& device() const;

  // ---- parameters: host <-> device, the whole arena [params | grads | m | v] in one copy ----
  void upload(const ViT& host);
  void download(ViT& host);
  void init(uint64_t seed);  // vit::ViT::init on the host, then upload
  // Fast device-side init (benchmarks): same per-tensor std as init(), uniform instead of
  // truncated normal, head and class token zero; gradients and Adam moments zeroed.
  void init_device(uint64_t seed);
  void zero_grad();
  void reset_optimizer();

  // ---- forward / backward, same contract as vit::ViT ----
  // Host images (B, 3, S, S) normalised floats; returns host logits (B, classes), valid until the next call.
  const float* forward(const float* images, int B, const ForwardOptions& opt = {});
  // Device images; returns DEVICE logits (fp32). No host copy, no synchronisation.
  const float* forward_device(const float* d_images, int B, const ForwardOptions& opt = {});
  // Device uint8 images (B, S, S, 3) HWC, normalised on the device with mean/std (ImageNet by default).
  const float* forward_device(const uint8_t* d_images_u8, int B, const ForwardOptions& opt = {},
                              const float* mean3 = nullptr, const float* std3 = nullptr);
  // Mean label-smoothed cross-entropy of the last forward (host labels; synchronises).
  float loss(const int* labels, float smoothing = 0.0f);
  // Same from device labels; returns a DEVICE pointer to the mean loss, no synchronisation.
  const float* loss_device(const int* d_labels, float smoothing = 0.0f);
  void backward();  // accumulates every parameter gradient (+=)
  // One AdamW step over the whole arena; returns the global grad norm before clipping
  // (computed on the device; one synchronisation to read it). Throws if it is not finite.
  double adamw_step(cpu::AdamWParams hp, float clip_norm);
  // Fine-tuning: the same as vit::ViT::adamw_step_scaled (lr * scale[i] per tensor, 0 = frozen:
  // moments untouched, gradient left out of the clipping norm). One launch per live tensor; the
  // gradients of frozen tensors are zeroed first so that one arena-wide sum of squares is the
  // norm over the live ones (the next step's zero_grad clears them anyway).
  double adamw_step_scaled(cpu::AdamWParams hp, float clip_norm, const std::vector<float>& scale);

  // ---- device-side views (for tests and attention maps) ----
  const float* attention_lse(int layer) const;  // device (B, H, N) from the last forward
  const float* device_logits() const;           // device (B, classes)
  // Host (B, dim) fp32 class-token features after the final LayerNorm, of the last forward (as
  // vit::ViT::features()); copies them from the device and synchronises. Valid until the next call.
  const float* features();
  float* device_images();                       // internal (max_batch, 3, S, S) input buffer (reserve first)
  int* device_labels();                         // internal (max_batch) label buffer
  int last_batch() const;

  // ---- CUDA graphs ----
  // Records one whole training step on the internal image/label buffers: zero_grad, forward
  // (dropout if training), loss, backward, grad norm, clipping, AdamW. Runs one eager
  // forward/backward first (not an optimizer step) so every cuBLASLt plan exists.
  void capture_step(int B, float smoothing, float clip_norm, bool training);
  // Replays it with this step's hyper-parameters and dropout seed; returns the loss (synchronises).
  float replay_step(const cpu::AdamWParams& hp, uint64_t dropout_seed);
  double last_grad_norm() const;  // from the last replay_step
  // Records an inference forward on the internal image buffer; replay returns device logits.
  void capture_forward(int B);
  const float* replay_forward();

  // ---- data parallelism ----
  // Called on the host during backward(), each time a group of parameter gradients has been
  // enqueued in full on stream(): stage `depth` = the head and the final LayerNorm, then block
  // l = depth-1 .. 0, then -1 = the embedding (patch projection, class token, positions). The
  // backend all-reduces each group on its own stream while backward computes the next (NCCL).
  // Empty: no hook. Not called while a step is captured as a graph.
  void set_backward_hook(std::function<void(int stage)> hook);
  float* device_grads();  // the gradient segment: ViT::params() offsets apply

  CUstream_st* stream() const;
  void synchronize();
  size_t param_arena_bytes() const;
  size_t activation_arena_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vit
