// The training / evaluation adapter over ViTCuda (engine/model/vit_cuda.h): the same
// TrainBackend contract as the CPU ViT, so engine/train/trainer.cpp runs one loop for both.
// Plain host C++; it lives in a .cu file only so that it is built into vitcuda (with
// VITENGINE_HAS_CUDA), which vitcore cannot depend on. Registered by the CLI through
// register_cuda_backend (engine/runtime/backend.h).
#include <cuda_runtime.h>

#include <cstdio>
#include <stdexcept>

#include "engine/runtime/backend.h"
#include "engine/model/vit_cuda.h"
#include "kernels/cuda/attention_cudnn.cuh"
#include "kernels/cuda/augment.cuh"
#include "kernels/cuda/cuda_check.cuh"

namespace vit {
namespace {

class CudaBackend : public ModelBackend<ViTCuda> {
 public:
  CudaBackend(const ViT& host, int max_batch, Precision prec)
      : m_(host.config(), prec, max_batch), k_(host.config().num_classes) {
    m_.upload(host);
  }
  ~CudaBackend() override {
    VIT_CHECK_NOTHROW(cudaFree(d_images_));
    VIT_CHECK_NOTHROW(cudaFree(d_items_));
    VIT_CHECK_NOTHROW(cudaFreeHost(h_items_));
    VIT_CHECK_NOTHROW(cudaFreeHost(h_logits_));
  }
  std::string device() const override { return "cuda"; }
  int num_classes() const override { return k_; }
  void pull(ViT& host) override { m_.download(host); }
  void push(const ViT& host) override { m_.upload(host); }

  void upload_train_images(const uint8_t* images, const uint8_t* fills, size_t count, int size, const float mean[3],
                           const float std[3]) override {
    if (size != m_.config().image_size)
      throw std::invalid_argument("upload_train_images: images are " + std::to_string(size) + " px, the model takes " +
                                  std::to_string(m_.config().image_size));
    if (size > cuda::kAugmentMaxSide)
      throw std::invalid_argument("data_on_device: image_size " + std::to_string(size) +
                                  " is above the GPU augmentation's " + std::to_string(cuda::kAugmentMaxSide) +
                                  "; set data_on_device=false");
    const size_t bytes = count * size_t(size) * size * 3;
    // Room is also needed later: the evaluation model (EMA, the final report) and cuBLAS.
    const size_t keep_free = size_t(1) << 30;
    size_t free_b = 0, total_b = 0;
    VIT_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (bytes + keep_free > free_b) {
      char b[320];
      std::snprintf(b, sizeof b,
                    "data_on_device: the %zu train images at %d px need %.2f GiB of GPU memory, but only %.2f GiB of "
                    "%.2f GiB are free (1 GiB is kept for evaluation); set data_on_device=false or a smaller subset",
                    count, size, bytes / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0);
      throw std::runtime_error(b);
    }
    VIT_CHECK(cudaFree(d_images_));
    d_images_ = nullptr;
    VIT_CHECK(cudaMalloc(&d_images_, bytes));
    VIT_CHECK(cudaMemcpy(d_images_, images, bytes, cudaMemcpyHostToDevice));
    fills_.assign(fills, fills + 3 * count);
    count_ = count;
    norm_ = cuda::augment_norm(mean, std);
  }

  const float* forward_uploaded(const size_t* index, const AugmentParams* aug, int B,
                                const ForwardOptions& opt) override {
    if (!d_images_) throw std::logic_error("forward_uploaded: upload_train_images first");
    m_.reserve(B);
    if (B > items_cap_) {  // once: the trainer's largest batch
      VIT_CHECK(cudaFree(d_items_));
      VIT_CHECK(cudaFreeHost(h_items_));
      VIT_CHECK(cudaFreeHost(h_logits_));
      d_items_ = nullptr, h_items_ = nullptr, h_logits_ = nullptr;
      VIT_CHECK(cudaMalloc(&d_items_, sizeof(cuda::AugmentItem) * B));
      VIT_CHECK(cudaMallocHost(&h_items_, sizeof(cuda::AugmentItem) * B));
      VIT_CHECK(cudaMallocHost(&h_logits_, sizeof(float) * B * k_));
      items_cap_ = B;
    }
    for (int i = 0; i < B; ++i) {
      if (index[i] >= count_)
        throw std::out_of_range("forward_uploaded: image " + std::to_string(index[i]) + " of " +
                                std::to_string(count_));
      if (aug[i].ta_op >= 0 || aug[i].blur_sigma > 0)
        throw std::invalid_argument("data_on_device: the GPU augmentation does neither TrivialAugment nor blur");
      cuda::AugmentItem& it = h_items_[i];
      it.image = index[i];
      for (int c = 0; c < 3; ++c) it.fill[c] = fills_[3 * index[i] + c];
      it.p = aug[i];
    }
    // One small copy and one kernel per step; the only synchronisation is the logits download,
    // as in forward() (h_items_ is free again once it returns).
    cudaStream_t s = m_.stream();
    VIT_CHECK(cudaMemcpyAsync(d_items_, h_items_, sizeof(cuda::AugmentItem) * B, cudaMemcpyHostToDevice, s));
    cuda::augment_batch(d_images_, d_items_, B, m_.config().image_size, norm_, m_.device_images(), s);
    const float* d_logits = m_.forward_device(m_.device_images(), B, opt);
    VIT_CHECK(cudaMemcpyAsync(h_logits_, d_logits, sizeof(float) * B * k_, cudaMemcpyDeviceToHost, s));
    VIT_CHECK(cudaStreamSynchronize(s));
    return h_logits_;
  }

 private:
  ViTCuda& model() override { return m_; }
  ViTCuda m_;
  int k_;
  // data_on_device
  uint8_t* d_images_ = nullptr;  // (count_, S, S, 3)
  size_t count_ = 0;
  std::vector<uint8_t> fills_;  // (count_, 3)
  cuda::AugmentNorm norm_{};
  cuda::AugmentItem *d_items_ = nullptr, *h_items_ = nullptr;  // one batch of items: device, pinned host
  float* h_logits_ = nullptr;                                  // pinned (items_cap_, k_)
  int items_cap_ = 0;
};

}  // namespace

void set_cuda_attention(const std::string& name) {
  cuda::set_attention_backend(name == "cudnn" ? cuda::AttentionBackend::kCudnn : cuda::AttentionBackend::kOwn);
}

std::unique_ptr<TrainBackend> make_cuda_train_backend(ViT& host, int max_batch, const std::string& precision) {
  if (precision != "bf16" && precision != "fp32")
    throw std::invalid_argument("unknown precision '" + precision + "' (bf16 or fp32)");
  return std::make_unique<CudaBackend>(host, max_batch, precision == "fp32" ? Precision::FP32 : Precision::BF16);
}

}  // namespace vit
