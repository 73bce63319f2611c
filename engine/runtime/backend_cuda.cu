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

#ifdef VITENGINE_HAS_NCCL
#include <nccl.h>
#endif

namespace vit {
namespace {

#ifdef VITENGINE_HAS_NCCL
// Data-parallel gradients on NCCL. The ranks of dist::Comm form one NCCL communicator (rank 0's
// id goes out over MPI). Backward hands over each layer's gradients as soon as it has enqueued
// them (ViTCuda::set_backward_hook); they are all-reduced in place on a communication stream,
// one NCCL group per layer, while backward computes the layers below. fp32: the arena's
// gradients are fp32 in both precisions (the bf16 path keeps fp32 master gradients), and a
// bf16 sum over ranks would round each partial sum to 8 bits of mantissa; the bytes are
// affordable (docs/distributed.md). The scale n/global_n is NCCL's pre-multiplied sum.
class NcclGradients {
 public:
  NcclGradients(dist::Comm& comm, ViTCuda& m) : who_(comm.who()), m_(m) {
    ncclUniqueId id{};
    if (comm.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId", "the communicator's id");
    comm.broadcast(&id, sizeof id, 0, "the NCCL id");
    check(ncclCommInitRank(&nccl_, comm.size(), id, comm.rank()), "ncclCommInitRank", "the communicator");
    VIT_CHECK(cudaStreamCreateWithFlags(&cs_, cudaStreamNonBlocking));
    VIT_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    VIT_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    // the tensors of each backward stage (ViTCuda::set_backward_hook): [0] embedding, [1 + l] block
    // l, [1 + depth] head and final LayerNorm
    const int depth = m.config().depth;
    stages_.resize(size_t(depth) + 2);
    for (const ParamInfo& p : m.params()) {
      int stage = -1;
      for (int l = 0; l < depth; ++l)
        if (p.name.rfind(layer_prefix(l), 0) == 0) stage = l;
      if (p.name.rfind("heads.", 0) == 0 || p.name.rfind("encoder.ln.", 0) == 0) stage = depth;
      stages_[size_t(stage + 1)].push_back(p);
    }
  }
  ~NcclGradients() {
    if (nccl_) ncclCommDestroy(nccl_);
    VIT_CHECK_NOTHROW(cudaEventDestroy(ready_));
    VIT_CHECK_NOTHROW(cudaEventDestroy(done_));
    VIT_CHECK_NOTHROW(cudaStreamDestroy(cs_));
  }

  void start(float scale) {
    scale_ = scale;
    check(ncclRedOpCreatePreMulSum(&op_, &scale_, ncclFloat, ncclScalarHostImmediate, nccl_),
          "ncclRedOpCreatePreMulSum", "the gradient scale");
    reduced_.assign(stages_.size(), false);
  }
  // The tensors of `stage` are complete on the compute stream: all-reduce them on ours after it.
  void stage_done(int stage) {
    const size_t s = size_t(stage + 1);
    if (reduced_.at(s)) return;
    VIT_CHECK(cudaEventRecord(ready_, m_.stream()));
    VIT_CHECK(cudaStreamWaitEvent(cs_, ready_, 0));
    float* g = m_.device_grads();
    const std::string what = stage < 0                    ? "embedding gradients"
                             : stage == m_.config().depth ? "head gradients"
                                                          : "gradients of block " + std::to_string(stage);
    check(ncclGroupStart(), "ncclGroupStart", what);
    for (const ParamInfo& p : stages_[s])
      check(ncclAllReduce(g + p.offset, g + p.offset, p.numel, ncclFloat, op_, nccl_, cs_), "ncclAllReduce", what);
    check(ncclGroupEnd(), "ncclGroupEnd", what);
    reduced_[s] = true;
  }
  // Every stage reduced (all of them on a rank that ran no backward), and the compute stream,
  // which AdamW and its clipping norm run on next, ordered after the last all-reduce.
  void finish() {
    for (int stage = m_.config().depth; stage >= -1; --stage) stage_done(stage);
    VIT_CHECK(cudaEventRecord(done_, cs_));
    VIT_CHECK(cudaStreamWaitEvent(m_.stream(), done_, 0));
    check(ncclRedOpDestroy(op_, nccl_), "ncclRedOpDestroy", "the gradient scale");
  }

 private:
  // An NCCL error names the rank, the call and what it moved (a dead peer surfaces here or ends
  // the job through the launcher).
  void check(ncclResult_t r, const char* fn, const std::string& what) const {
    if (r != ncclSuccess && r != ncclInProgress)
      throw dist::DistError(who_ + ": " + fn + " (" + what + ") failed: " + ncclGetErrorString(r));
  }
  std::string who_;
  ViTCuda& m_;
  ncclComm_t nccl_ = nullptr;
  ncclRedOp_t op_{};
  float scale_ = 1;
  cudaStream_t cs_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  std::vector<std::vector<ParamInfo>> stages_;
  std::vector<bool> reduced_;
};
#endif

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

#ifdef VITENGINE_HAS_NCCL
  void start_gradient_allreduce(dist::Comm& comm, float scale) override {
    if (!nccl_) nccl_ = std::make_unique<NcclGradients>(comm, m_);
    nccl_->start(scale);
    m_.set_backward_hook([this](int stage) { nccl_->stage_done(stage); });
  }
  void finish_gradient_allreduce() override {
    m_.set_backward_hook(nullptr);
    nccl_->finish();
  }
#else
  void start_gradient_allreduce(dist::Comm&, float) override {
    throw std::logic_error("data-parallel training on cuda needs NCCL: this vitengine was built without it");
  }
#endif

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
      if (aug[i].ta_op >= 0 || aug[i].blur_sigma > 0 || aug[i].hed)
        throw std::invalid_argument("data_on_device: the GPU augmentation does neither TrivialAugment, blur nor HED jitter");
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
#ifdef VITENGINE_HAS_NCCL
  std::unique_ptr<NcclGradients> nccl_;  // made at the first distributed step
#endif
};

}  // namespace

void set_cuda_attention(const std::string& name) {
  cuda::set_attention_backend(name == "cudnn" ? cuda::AttentionBackend::kCudnn : cuda::AttentionBackend::kOwn);
}

void cuda_select_device(int local_rank) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
    cudaGetLastError();  // a CPU run on a machine without a GPU: device cuda will say so if asked for
    return;
  }
  // one GPU per rank: the launcher may also have narrowed CUDA_VISIBLE_DEVICES to one card
  VIT_CHECK(cudaSetDevice(local_rank % count));
}

std::unique_ptr<TrainBackend> make_cuda_train_backend(ViT& host, int max_batch, const std::string& precision) {
  if (precision != "bf16" && precision != "fp32")
    throw std::invalid_argument("unknown precision '" + precision + "' (bf16 or fp32)");
  return std::make_unique<CudaBackend>(host, max_batch, precision == "fp32" ? Precision::FP32 : Precision::BF16);
}

}  // namespace vit
