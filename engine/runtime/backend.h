// The tiny adapter a training loop or an evaluation runs a model through: the CPU
// ViT (engine/model/vit.h) or ViTCuda (engine/model/vit_cuda.h). Light on purpose (no JSON, no
// data headers) so that the CUDA side (engine/runtime/backend_cuda.cu) compiles it with nvcc.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/dist/dist.h"
#include "engine/model/vit.h"
#include "kernels/common/augment_pixel.h"  // AugmentParams (plain C++)

namespace vit {

// The tiny adapter the loop trains through: the CPU ViT, or ViTCuda when built
// with CUDA. Both keep parameters and AdamW moments; the host ViT is the copy
// that checkpoints read and write.
class TrainBackend {
 public:
  virtual ~TrainBackend() = default;
  virtual std::string device() const = 0;
  virtual int num_classes() const = 0;
  // images (B, 3, S, S) on the host, normalised. Returns host logits (B, K),
  // valid until the next forward.
  virtual const float* forward(const float* images, int B, const ForwardOptions& opt) = 0;
  // Host (B, dim) class-token features of the last forward, after the final LayerNorm (what the
  // head reads; the out-of-distribution score's input), valid until the next forward.
  virtual const float* features() = 0;
  virtual float loss(const int* labels, float smoothing) = 0;
  virtual void backward() = 0;
  virtual void zero_grad() = 0;
  // Returns the gradient norm before clipping; throws on a non-finite norm.
  virtual double adamw_step(const cpu::AdamWParams& hp, float clip_norm) = 0;
  // The same with a learning-rate scale per parameter tensor (ViT::params() order);
  // scale 0 freezes the tensor (its moments are not touched).
  virtual double adamw_step_scaled(const cpu::AdamWParams& hp, float clip_norm, const std::vector<float>& scale) = 0;
  // Data parallelism: the gradients of the next backward(), times `scale`, summed over the
  // ranks of comm into every rank's gradients. start_ goes before backward() and finish_ after
  // it (also on a rank whose share of the batch is empty and that runs no backward); the AdamW
  // step after finish_ clips on the global norm. CPU: MPI_Allreduce in buckets, in finish_.
  // CUDA with NCCL: each layer's gradients are all-reduced on a communication stream as soon as
  // backward has written them, overlapping the layers below; finish_ orders the optimizer after.
  virtual void start_gradient_allreduce(dist::Comm& comm, float scale) {
    (void)comm, (void)scale;
    throw std::logic_error("data-parallel training is not built for device " + device());
  }
  virtual void finish_gradient_allreduce() {}
  virtual void pull(ViT& host) = 0;        // device -> host: parameters and moments
  virtual void push(const ViT& host) = 0;  // host -> device

  // ---- data_on_device: the train images live in device memory (cuda only) ----
  // Uploads `count` uint8 HWC images of side `size` once, each with the colour its augmentation
  // fills the frame with (fills: count x 3, engine/data/image.h border_color), and the normalisation.
  // Throws if they do not fit in free device memory.
  virtual void upload_train_images(const uint8_t* images, const uint8_t* fills, size_t count, int size,
                                   const float mean[3], const float std[3]) {
    (void)images, (void)fills, (void)count, (void)size, (void)mean, (void)std;
    throw std::logic_error("data_on_device needs device=cuda, this backend is " + device());
  }
  // forward() of the batch made on the device: uploaded image index[i], augmented with aug[i]
  // (kernels/cuda/augment.cuh), normalised. The same batch as the CPU loader's; host logits.
  virtual const float* forward_uploaded(const size_t* index, const AugmentParams* aug, int B,
                                        const ForwardOptions& opt) {
    (void)index, (void)aug, (void)B, (void)opt;
    throw std::logic_error("data_on_device needs device=cuda, this backend is " + device());
  }
};
// The TrainBackend methods that only pass through to a model with ViT's interface: the CPU ViT
// (backend.cpp) and ViTCuda (backend_cuda.cu) share them.
template <class Model>
class ModelBackend : public TrainBackend {
 public:
  const float* forward(const float* x, int B, const ForwardOptions& o) override { return model().forward(x, B, o); }
  const float* features() override { return model().features(); }
  float loss(const int* y, float s) override { return model().loss(y, s); }
  void backward() override { model().backward(); }
  void zero_grad() override { model().zero_grad(); }
  double adamw_step(const cpu::AdamWParams& hp, float clip) override { return model().adamw_step(hp, clip); }
  double adamw_step_scaled(const cpu::AdamWParams& hp, float clip, const std::vector<float>& s) override {
    return model().adamw_step_scaled(hp, clip, s);
  }

 protected:
  virtual Model& model() = 0;
};

// device "cpu" trains `host` in place; "cuda" needs the CUDA factory registered
// (throws otherwise) and sizes its buffers for max_batch; precision (bf16 | fp32)
// applies to cuda only.
std::unique_ptr<TrainBackend> make_backend(const std::string& device, ViT& host, int max_batch = 256,
                                           const std::string& precision = "bf16");

// The CUDA backend lives in engine/runtime/backend_cuda.cu, in the vit_runtime_cuda library,
// which this layer's CPU library cannot see. An executable built with CUDA registers it once,
// before anything asks for device "cuda": tools/main.cpp does, and so do the GPU tests.
using CudaBackendFactory = std::unique_ptr<TrainBackend> (*)(ViT& host, int max_batch, const std::string& precision);
void register_cuda_backend(CudaBackendFactory f);
#ifdef VITENGINE_HAS_CUDA
std::unique_ptr<TrainBackend> make_cuda_train_backend(ViT& host, int max_batch, const std::string& precision);
// The GPU of this rank: local_rank modulo the visible devices (cudaSetDevice), before any backend;
// nothing on a machine without a GPU.
void cuda_select_device(int local_rank);
#endif

// Which attention kernels the CUDA path runs from now on, process-wide: "own" (the engine's,
// kernels/cuda/attention.cu) or "cudnn" (cuDNN's fused SDPA, kernels/cuda/attention_cudnn.cpp).
// The CUDA library registers the setter beside its backend; without it only "own" exists.
// Throws std::invalid_argument naming the value, or std::runtime_error when it is not built.
using GpuAttentionSetter = void (*)(const std::string& name);
void register_gpu_attention(GpuAttentionSetter f);
void set_gpu_attention(const std::string& name);
#ifdef VITENGINE_HAS_CUDA
void set_cuda_attention(const std::string& name);
#endif

}  // namespace vit
