// GPU tests for the fused attention kernels (kernels/cuda/attention.cu) against an independent fp64 oracle
// in naive loops (tests/attention_oracle.h): softmax(q k^T / sqrt(Dh)) v and its backward, per (b, h).
// tests/test_attention_emu.cpp runs the same checks on the CPU through a CUDA emulator.
//
// Every run draws fresh random inputs (seed printed; set VIT_TEST_SEED=<n> to replay one), poisons all
// outputs with 0xFF bytes (NaN in fp32 and bf16) so that an unwritten element fails, and compares
// out, lse and dqkv by relative error ||x - ref|| / ||ref||.
//   fp32 kernels: < 1e-5.
//   bf16 kernels (both variants, kernels/cuda/attention_variant.cuh): <= 2 x the error of a bf16-emulating
//   reference + a small floor (the flash-attention test habit: as exact as the precision allows), and
//   < 2e-2 outright. Tolerances and their reasons: tests/attention_oracle.h.
// Skips with "no CUDA device" where there is none. Run: build/vitengine_gpu_tests --gtest_filter='Attention*'
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_cudnn.cuh"
#include "kernels/cuda/attention_variant.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "tests/attention_oracle.h"

namespace {

using namespace attn_test;

bool has_cuda_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Device buffer, poisoned with 0xFF bytes (NaN for float and bf16) on creation.
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) {
    VIT_CHECK(cudaMalloc(&p, n * sizeof(T)));
    poison();
  }
  ~DevBuf() { VIT_CHECK_NOTHROW(cudaFree(p)); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void poison() { VIT_CHECK(cudaMemset(p, 0xFF, n * sizeof(T))); }
  void upload(const std::vector<T>& h) { VIT_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<double> download() const {
    std::vector<T> h(n);
    VIT_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<double> r(n);
    for (size_t i = 0; i < n; ++i) r[i] = double(to_f(h[i]));
    return r;
  }
  static float to_f(float x) { return x; }
  static float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
};

template <typename T>
T from_f(float x);
template <>
float from_f<float>(float x) {
  return x;
}
template <>
__nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Device buffers holding the given (already representable-in-T) inputs, poisoned outputs, and the
// results after `run` (which launches the forward and backward on them).
template <typename T>
struct Problem {
  DevBuf<T> qkv, out, dout, dqkv;
  DevBuf<float> lse, scratch;
  vit::AttnShape shape;
  Problem(const std::vector<float>& h_qkv, const std::vector<float>& h_dout, const Shape& sh)
      : qkv(h_qkv.size()),
        out(h_dout.size()),
        dout(h_dout.size()),
        dqkv(h_qkv.size()),
        lse(size_t(sh.B) * sh.H * sh.N),
        scratch(size_t(sh.B) * sh.H * sh.N),
        shape{sh.B, sh.N, sh.H, sh.Dh} {
    std::vector<T> a(h_qkv.size()), b(h_dout.size());
    for (size_t i = 0; i < a.size(); ++i) a[i] = from_f<T>(h_qkv[i]);
    for (size_t i = 0; i < b.size(); ++i) b[i] = from_f<T>(h_dout[i]);
    qkv.upload(a);
    dout.upload(b);
  }
  template <typename Run>
  Outputs results(Run&& run) {
    run(*this);
    VIT_CHECK(cudaDeviceSynchronize());
    return {out.download(), lse.download(), dqkv.download()};
  }
};

// The own kernels' forward then backward.
template <typename T>
Outputs run_kernels(const std::vector<float>& qkv, const std::vector<float>& dout, const Shape& sh) {
  Problem<T> p(qkv, dout, sh);
  return p.results([](Problem<T>& q) {
    vit::cuda::attention_fwd<T>(q.qkv.p, q.out.p, q.lse.p, q.shape, 0);
    vit::cuda::attention_bwd<T>(q.qkv.p, q.out.p, q.dout.p, q.lse.p, q.dqkv.p, q.scratch.p, q.shape, 0);
  });
}

class AttentionCuda : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    if (!has_cuda_device()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(AttentionCuda, Fp32MatchesFp64Reference) {
  const Shape sh = GetParam();
  std::vector<float> qkv, dout;
  make_inputs(sh, false, qkv, dout);
  const RefResult ref = reference<double>(qkv, dout, sh, false);
  const Outputs got = run_kernels<float>(qkv, dout, sh);
  check_fp32("fp32", sh, got, ref);
}

// Both bf16 variants (kernels/cuda/attention_variant.cuh: kSimple and the default kFast) on the same inputs.
TEST_P(AttentionCuda, Bf16MatchesFp64Reference) {
  const Shape sh = GetParam();
  std::vector<float> qkv, dout;
  make_inputs(sh, true, qkv, dout);
  const RefResult ref = reference<double>(qkv, dout, sh, false);
  const RefResult lowp = reference<float>(qkv, dout, sh, true);
  const auto saved = vit::cuda::attention_variant();
  for (auto v : {vit::cuda::AttentionVariant::kSimple, vit::cuda::AttentionVariant::kFast}) {
    SCOPED_TRACE(std::string("variant ") + vit::cuda::attention_variant_name(v));
    vit::cuda::set_attention_variant(v);
    check_bf16(v == vit::cuda::AttentionVariant::kFast ? "bf16 fast" : "bf16 simp", sh,
               run_kernels<__nv_bfloat16>(qkv, dout, sh), ref, lowp);
  }
  vit::cuda::set_attention_variant(saved);
}

// cuDNN's fused attention (kernels/cuda/attention_cudnn.cpp) on the same inputs and bounds, and each
// direction paired with the other implementation's: the saved log-sum-exp must mean the same to both.
Outputs run_cudnn(const std::vector<float>& qkv, const std::vector<float>& dout, const Shape& sh, bool cudnn_fwd,
                  bool cudnn_bwd) {
  using bf = __nv_bfloat16;
  Problem<bf> p(qkv, dout, sh);
  return p.results([&](Problem<bf>& q) {
    if (cudnn_fwd)
      vit::cuda::attention_fwd_cudnn(q.qkv.p, q.out.p, q.lse.p, q.shape, 0);
    else
      vit::cuda::attention_fwd<bf>(q.qkv.p, q.out.p, q.lse.p, q.shape, 0);
    if (cudnn_bwd)
      vit::cuda::attention_bwd_cudnn(q.qkv.p, q.out.p, q.dout.p, q.lse.p, q.dqkv.p, q.shape, 0);
    else
      vit::cuda::attention_bwd<bf>(q.qkv.p, q.out.p, q.dout.p, q.lse.p, q.dqkv.p, q.scratch.p, q.shape, 0);
  });
}

TEST_P(AttentionCuda, CudnnBf16MatchesFp64Reference) {
  if (!vit::cuda::cudnn_attention_built()) GTEST_SKIP() << "built without cudnn-frontend";
  const Shape sh = GetParam();
  std::vector<float> qkv, dout;
  make_inputs(sh, true, qkv, dout);
  const RefResult ref = reference<double>(qkv, dout, sh, false);
  const RefResult lowp = reference<float>(qkv, dout, sh, true);
  check_bf16("cudnn    ", sh, run_cudnn(qkv, dout, sh, true, true), ref, lowp);
  check_bf16("cudnn+own", sh, run_cudnn(qkv, dout, sh, true, false), ref, lowp);
  check_bf16("own+cudnn", sh, run_cudnn(qkv, dout, sh, false, true), ref, lowp);
}

// 197: ViT; 256: no padding; 17, 5, 69, 129, 1: ragged last tiles where the kernels skip padding
// (kernels/cuda/attention.cu, "Padding"); H > 1 and B > 1 check the head offsets and the per-head warp rotation.
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCuda,
                         ::testing::Values(Shape{2, 197, 3, 64}, Shape{1, 17, 2, 64}, Shape{3, 5, 1, 64},
                                           Shape{4, 256, 12, 64}, Shape{2, 197, 2, 32}, Shape{3, 69, 2, 64},
                                           Shape{2, 129, 3, 64}, Shape{1, 1, 4, 64}),
                         [](const ::testing::TestParamInfo<Shape>& i) { return shape_name(i.param); });

// The backward has no atomics (dQ is its own pass over key tiles): two runs are bit-identical.
TEST(AttentionCudaMisc, Bf16BackwardIsDeterministic) {
  if (!has_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const Shape sh{2, 197, 3, 64};
  std::vector<float> qkv, dout;
  make_inputs(sh, true, qkv, dout);
  const Outputs a = run_kernels<__nv_bfloat16>(qkv, dout, sh);
  const Outputs b = run_kernels<__nv_bfloat16>(qkv, dout, sh);
  EXPECT_EQ(std::memcmp(a.dqkv.data(), b.dqkv.data(), a.dqkv.size() * sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(double)), 0);
}

// The bf16 kernels need 16-byte aligned rows (cp.async of 16 bytes); a misaligned pointer is refused.
TEST(AttentionCudaMisc, Bf16RejectsMisalignedPointers) {
  if (!has_cuda_device()) GTEST_SKIP() << "no CUDA device";
  DevBuf<__nv_bfloat16> qkv(3 * 64 + 8), out(64 + 8);
  DevBuf<float> lse(8);
  EXPECT_THROW(vit::cuda::attention_fwd<__nv_bfloat16>(qkv.p + 1, out.p, lse.p, vit::AttnShape{1, 1, 1, 64}, 0),
               std::invalid_argument);
}

// Argument checks happen before any CUDA call, so this runs without a device too.
TEST(AttentionCudaMisc, RejectsUnsupportedHeadDim) {
  try {
    vit::cuda::attention_fwd<float>(nullptr, nullptr, nullptr, vit::AttnShape{1, 8, 1, 48}, 0);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Dh = 48"), std::string::npos) << e.what();
  }
  EXPECT_THROW(vit::cuda::attention_bwd<__nv_bfloat16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                       vit::AttnShape{1, 8, 1, 128}, 0),
               std::invalid_argument);
}

}  // namespace
