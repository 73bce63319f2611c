// The model backends: the CPU ViT in place, or the CUDA one registered by the executable.
#include "engine/runtime/backend.h"

#include <algorithm>
#include <stdexcept>

namespace vit {

namespace {

class CpuBackend : public ModelBackend<ViT> {
 public:
  explicit CpuBackend(ViT& m) : m_(m) {}
  std::string device() const override { return "cpu"; }
  int num_classes() const override { return m_.config().num_classes; }
  void pull(ViT& host) override {
    if (&host != &m_) copy(m_, host);
  }
  void push(const ViT& host) override {
    if (&host != &m_) copy(host, m_);
  }
  void start_gradient_allreduce(dist::Comm& comm, float scale) override {
    comm_ = &comm;
    scale_ = scale;
  }
  void finish_gradient_allreduce() override {
    if (!comm_) throw std::logic_error("finish_gradient_allreduce without start_gradient_allreduce");
    float* g = m_.grad_data();
    const size_t n = m_.num_params();
    for (size_t i = 0; i < n; ++i) g[i] *= scale_;
    comm_->allreduce_sum(g, n, "gradients");
    comm_ = nullptr;
  }

 private:
  static void copy(const ViT& a, ViT& b) {
    if (!a.config().same_architecture(b.config())) throw std::logic_error("CpuBackend: architectures differ");
    ViT& src = const_cast<ViT&>(a);
    std::copy(src.param_data(), src.param_data() + 4 * a.num_params(), b.param_data());
  }
  ViT& model() override { return m_; }
  ViT& m_;
  dist::Comm* comm_ = nullptr;  // between start_ and finish_gradient_allreduce
  float scale_ = 1;
};

}  // namespace

namespace {
CudaBackendFactory g_cuda_factory = nullptr;
}
void register_cuda_backend(CudaBackendFactory f) { g_cuda_factory = f; }

namespace {
GpuAttentionSetter g_attention_setter = nullptr;
}
void register_gpu_attention(GpuAttentionSetter f) { g_attention_setter = f; }
void set_gpu_attention(const std::string& name) {
  if (name != "own" && name != "cudnn") throw std::invalid_argument("unknown attention '" + name + "' (own or cudnn)");
  if (g_attention_setter)
    g_attention_setter(name);
  else if (name == "cudnn")
    throw std::runtime_error("attention=cudnn asked for, but this vitengine was built without CUDA");
}

std::unique_ptr<TrainBackend> make_backend(const std::string& device, ViT& host, int max_batch,
                                           const std::string& precision) {
  if (precision != "bf16" && precision != "fp32")
    throw std::invalid_argument("unknown precision '" + precision + "' (bf16 or fp32)");
  if (device == "cpu") return std::make_unique<CpuBackend>(host);
  if (device == "cuda") {
    if (!g_cuda_factory)
      throw std::runtime_error(
          "device 'cuda' asked for, but this vitengine was built without CUDA (VITENGINE_CUDA=OFF)");
    return g_cuda_factory(host, max_batch, precision);
  }
  throw std::invalid_argument("unknown device '" + device + "' (cpu or cuda)");
}

}  // namespace vit
