#include "kernels/cuda/attention_cudnn.cuh"

#include <atomic>
#include <stdexcept>
#include <string>

#ifdef VITENGINE_HAS_CUDNN_FE
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "kernels/cuda/cuda_check.cuh"
#endif

namespace vit::cuda {

namespace {
std::atomic<int> g_backend{int(AttentionBackend::kOwn)};
}

void set_attention_backend(AttentionBackend b) {
  if (b == AttentionBackend::kCudnn && !cudnn_attention_built())
    throw std::runtime_error("attention=cudnn: this build has no cudnn-frontend (see docs/cuda.md)");
  g_backend.store(int(b));
}
AttentionBackend attention_backend() { return AttentionBackend(g_backend.load()); }

#ifndef VITENGINE_HAS_CUDNN_FE

bool cudnn_attention_built() { return false; }
void attention_fwd_cudnn(const __nv_bfloat16*, __nv_bfloat16*, float*, const AttnShape&, cudaStream_t) {
  throw std::runtime_error("attention=cudnn: this build has no cudnn-frontend (see docs/cuda.md)");
}
void attention_bwd_cudnn(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const float*, __nv_bfloat16*,
                         const AttnShape&, cudaStream_t) {
  throw std::runtime_error("attention=cudnn: this build has no cudnn-frontend (see docs/cuda.md)");
}

#else

namespace fe = cudnn_frontend;

namespace {

// Tensor ids in the variant pack (the graph's inputs and outputs by number, not by pointer).
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

void check_fe(fe::error_t e, const char* what) {
  if (!e.is_good()) throw std::runtime_error(std::string("cuDNN attention: ") + what + ": " + e.get_message());
}

void check_cudnn(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuDNN attention: ") + what + ": " + cudnnGetErrorString(s));
}

struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;
  void* workspace = nullptr;  // owned; sized once for this graph
};

// The views of the engine's buffers that both directions describe, as (dims, strides).
struct Views {
  std::vector<int64_t> dims, qkv_stride, out_stride, stats_dims, stats_stride;
  explicit Views(const AttnShape& s) {
    const int64_t B = s.B, H = s.H, N = s.N, Dh = s.Dh, D = H * Dh;
    dims = {B, H, N, Dh};
    qkv_stride = {N * 3 * D, Dh, 3 * D, 1};
    out_stride = {N * D, Dh, D, 1};
    stats_dims = {B, H, N, 1};
    stats_stride = {H * N, N, 1, 1};
  }
};

std::shared_ptr<fe::graph::Tensor_attributes> input(fe::graph::Graph& g, const char* name, Uid uid,
                                                    const std::vector<int64_t>& dims,
                                                    const std::vector<int64_t>& stride) {
  return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims).set_stride(stride));
}

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

std::shared_ptr<fe::graph::Graph> forward_graph(const AttnShape& s) {
  const Views v(s);
  auto g = new_graph();
  auto q = input(*g, "Q", kQ, v.dims, v.qkv_stride);
  auto k = input(*g, "K", kK, v.dims, v.qkv_stride);
  auto val = input(*g, "V", kV, v.dims, v.qkv_stride);
  auto opt = fe::graph::SDPA_attributes()
                 .set_name("vit_attention_fwd")
                 .set_generate_stats(true)  // the backward (ours or cuDNN's) needs the log-sum-exp
                 .set_attn_scale(1.0f / std::sqrt(float(s.Dh)))
                 .set_causal_mask(false);
  auto [o, stats] = g->sdpa(q, k, val, opt);
  o->set_output(true).set_uid(kO).set_dim(v.dims).set_stride(v.out_stride);
  stats->set_output(true)
      .set_uid(kStats)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim(v.stats_dims)
      .set_stride(v.stats_stride);
  return g;
}

std::shared_ptr<fe::graph::Graph> backward_graph(const AttnShape& s) {
  const Views v(s);
  auto g = new_graph();
  auto q = input(*g, "Q", kQ, v.dims, v.qkv_stride);
  auto k = input(*g, "K", kK, v.dims, v.qkv_stride);
  auto val = input(*g, "V", kV, v.dims, v.qkv_stride);
  auto o = input(*g, "O", kO, v.dims, v.out_stride);
  auto d_o = input(*g, "dO", kDO, v.dims, v.out_stride);
  auto stats = input(*g, "Stats", kStats, v.stats_dims, v.stats_stride);
  stats->set_data_type(fe::DataType_t::FLOAT);
  auto opt = fe::graph::SDPA_backward_attributes()
                 .set_name("vit_attention_bwd")
                 .set_attn_scale(1.0f / std::sqrt(float(s.Dh)))
                 .set_causal_mask(false);
  auto [dq, dk, dv] = g->sdpa_backward(q, k, val, o, d_o, stats, opt);
  // dQ, dK, dV land in the thirds of dqkv, as the own backward writes them.
  dq->set_output(true).set_uid(kDQ).set_dim(v.dims).set_stride(v.qkv_stride);
  dk->set_output(true).set_uid(kDK).set_dim(v.dims).set_stride(v.qkv_stride);
  dv->set_output(true).set_uid(kDV).set_dim(v.dims).set_stride(v.qkv_stride);
  return g;
}

// One cuDNN handle per device for the process (cudnnSetStream before each call).
cudnnHandle_t handle() {
  static std::mutex mu;
  static std::map<int, cudnnHandle_t> handles;
  int dev = 0;
  VIT_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lk(mu);
  auto it = handles.find(dev);
  if (it != handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  check_cudnn(cudnnCreate(&h), "cudnnCreate");
  handles[dev] = h;
  return h;
}

Plan& plan_for(const AttnShape& s, bool backward) {
  static std::mutex mu;
  static std::map<std::tuple<int, int, int, int, int, bool>, Plan> cache;
  int dev = 0;
  VIT_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lk(mu);
  Plan& p = cache[{dev, s.B, s.N, s.H, s.Dh, backward}];
  if (p.graph) return p;
  auto g = backward ? backward_graph(s) : forward_graph(s);
  cudnnHandle_t h = handle();
  check_fe(g->validate(), "validate");
  check_fe(g->build_operation_graph(h), "build_operation_graph");
  check_fe(g->create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans");
  check_fe(g->check_support(h), "check_support (is this shape supported by cuDNN's fused attention?)");
  check_fe(g->build_plans(h), "build_plans");
  int64_t ws = 0;
  check_fe(g->get_workspace_size(ws), "get_workspace_size");
  if (ws > 0) VIT_CHECK(cudaMalloc(&p.workspace, size_t(ws)));
  p.graph = std::move(g);
  return p;
}

void run(Plan& p, std::unordered_map<int64_t, void*>& pack, cudaStream_t stream, const char* what) {
  cudnnHandle_t h = handle();
  check_cudnn(cudnnSetStream(h, stream), "cudnnSetStream");
  check_fe(p.graph->execute(h, pack, p.workspace), what);
}

}  // namespace

bool cudnn_attention_built() { return true; }

void attention_fwd_cudnn(const __nv_bfloat16* qkv, __nv_bfloat16* out, float* lse, const AttnShape& s,
                         cudaStream_t stream) {
  const int64_t D = int64_t(s.H) * s.Dh;
  auto* base = const_cast<__nv_bfloat16*>(qkv);  // the variant pack takes void*; cuDNN only reads inputs
  std::unordered_map<int64_t, void*> pack = {{kQ, base}, {kK, base + D}, {kV, base + 2 * D}, {kO, out}, {kStats, lse}};
  run(plan_for(s, false), pack, stream, "forward");
}

void attention_bwd_cudnn(const __nv_bfloat16* qkv, const __nv_bfloat16* out, const __nv_bfloat16* dout,
                         const float* lse, __nv_bfloat16* dqkv, const AttnShape& s, cudaStream_t stream) {
  const int64_t D = int64_t(s.H) * s.Dh;
  auto* base = const_cast<__nv_bfloat16*>(qkv);
  std::unordered_map<int64_t, void*> pack = {{kQ, base},
                                             {kK, base + D},
                                             {kV, base + 2 * D},
                                             {kO, const_cast<__nv_bfloat16*>(out)},
                                             {kDO, const_cast<__nv_bfloat16*>(dout)},
                                             {kStats, const_cast<float*>(lse)},
                                             {kDQ, dqkv},
                                             {kDK, dqkv + D},
                                             {kDV, dqkv + 2 * D}};
  run(plan_for(s, true), pack, stream, "backward");
}

#endif

}  // namespace vit::cuda
