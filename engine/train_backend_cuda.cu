// The training / evaluation adapter over ViTCuda (engine/vit_cuda.h): the same
// TrainBackend contract as the CPU ViT, so engine/trainer.cpp runs one loop for both.
// Plain host C++; it lives in a .cu file only so that it is built into vitcuda (with
// VITENGINE_HAS_CUDA), which vitcore cannot depend on. Registered by the CLI through
// set_cuda_backend_factory (engine/train_backend.h).
#include <stdexcept>

#include "engine/train_backend.h"
#include "engine/vit_cuda.h"

namespace vit {
namespace {

class CudaBackend : public TrainBackend {
 public:
  CudaBackend(const ViT& host, int max_batch, Precision prec)
      : m_(host.config(), prec, max_batch), k_(host.config().num_classes) {
    m_.upload(host);
  }
  std::string device() const override { return "cuda"; }
  int num_classes() const override { return k_; }
  const float* forward(const float* x, int B, const ForwardOptions& o) override { return m_.forward(x, B, o); }
  float loss(const int* y, float s) override { return m_.loss(y, s); }
  void backward() override { m_.backward(); }
  void zero_grad() override { m_.zero_grad(); }
  double adamw_step(const cpu::AdamWParams& hp, float clip) override { return m_.adamw_step(hp, clip); }
  double adamw_step_scaled(const cpu::AdamWParams& hp, float clip, const std::vector<float>& s) override {
    return m_.adamw_step_scaled(hp, clip, s);
  }
  void pull(ViT& host) override { m_.download(host); }
  void push(const ViT& host) override { m_.upload(host); }

 private:
  ViTCuda m_;
  int k_;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cuda_train_backend(ViT& host, int max_batch, const std::string& precision) {
  if (precision != "bf16" && precision != "fp32")
    throw std::invalid_argument("unknown precision '" + precision + "' (bf16 or fp32)");
  return std::make_unique<CudaBackend>(host, max_batch, precision == "fp32" ? Precision::FP32 : Precision::BF16);
}

}  // namespace vit
