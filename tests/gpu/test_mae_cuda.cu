// The masked autoencoder's CUDA ops (kernels/cuda/mae.cuh) against the CPU reference ops
// (kernels/cpu/mae.cpp, themselves checked against finite differences and PyTorch), float and
// bf16, fresh random inputs and masks each run. Outputs start poisoned (NaN): every element must
// be written. Run: vitengine_gpu_tests --gtest_filter='MaeCuda*'. Skips without a GPU.
#include <algorithm>
#include <numeric>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/mae.cuh"
#include "tests/gpu/gpu_test_util.h"
#include "tests/op_tolerance.h"

using namespace vit::test;
using bf16 = __nv_bfloat16;

namespace {

template <typename T>
class MaeCuda : public ::testing::Test {};
using Types = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(MaeCuda, Types);

// K distinct rows of N per sample, unsorted.
std::vector<int> distinct_rows(Rng& rng, int B, int N, int K) {
  std::vector<int> idx;
  for (int b = 0; b < B; b++) {
    std::vector<int> all(N);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng.r);
    idx.insert(idx.end(), all.begin(), all.begin() + K);
  }
  return idx;
}

struct DevInts {
  int* p = nullptr;
  explicit DevInts(const std::vector<int>& h) {
    VIT_CHECK(cudaMalloc(&p, h.size() * sizeof(int)));
    VIT_CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice));
  }
  ~DevInts() { VIT_CHECK_NOTHROW(cudaFree(p)); }
};

}  // namespace

TYPED_TEST(MaeCuda, GatherAndScatterWithTheirGradients) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  const int B = 3, N = 197, K = 50, D = 72;  // ViT-B/16's 1 + 196 tokens, 1 + 49 visible
  const auto idx = distinct_rows(rng, B, N, K);
  DevInts didx(idx);
  const auto x = representable<T>(rng.normal(size_t(B) * N * D)), dy = representable<T>(rng.normal(size_t(B) * K * D));
  const auto xs = representable<T>(rng.normal(size_t(B) * K * D)), fill = representable<T>(rng.normal(D));
  const auto dys = representable<T>(rng.normal(size_t(B) * N * D));
  DevBuf<T> dx_(x), y(size_t(B) * K * D), ddy(dy), dxg(size_t(B) * N * D);
  DevBuf<T> dxs(xs), ys(size_t(B) * N * D), ddys(dys), dxsg(size_t(B) * K * D);
  DevBuf<float> dfill(fill), dfg(std::vector<float>(D, 0.5f));
  vit::cuda::gather_tokens_fwd<T>(dx_, didx.p, y, B, N, K, D, nullptr);
  vit::cuda::gather_tokens_bwd<T>(ddy, didx.p, dxg, B, N, K, D, nullptr);
  vit::cuda::scatter_tokens_fwd<T>(dxs, didx.p, dfill, ys, B, N, K, D, nullptr);
  vit::cuda::scatter_tokens_bwd<T>(ddys, didx.p, dxsg, dfg, B, N, K, D, nullptr);
  std::vector<float> ry(y.n), rdx(dxg.n), rys(ys.n), rdxs(dxsg.n), rdf(D, 0.5f);
  vit::cpu::gather_tokens_fwd<float>(x.data(), idx.data(), ry.data(), B, N, K, D);
  vit::cpu::gather_tokens_bwd<float>(dy.data(), idx.data(), rdx.data(), B, N, K, D);
  vit::cpu::scatter_tokens_fwd<float>(xs.data(), idx.data(), fill.data(), rys.data(), B, N, K, D);
  vit::cpu::scatter_tokens_bwd<float>(dys.data(), idx.data(), rdxs.data(), rdf.data(), B, N, K, D);
  // copies are exact; the mask token's gradient is a sum over ~440 rows in another order
  expect_close(y.download(), ry, 0, 0, "gather y");
  expect_close(dxg.download(), rdx, 0, 0, "gather dx");
  expect_close(ys.download(), rys, 0, 0, "scatter y");
  expect_close(dxsg.download(), rdxs, 0, 0, "scatter dx");
  expect_close(dfg.download(), rdf, 1e-3, 1e-4, "scatter dfill");
}

TYPED_TEST(MaeCuda, PositionNormalisationAndMaskedLoss) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  const int B = 4, N = 65, D = 40, R = B * N, K = 192;
  const auto x = representable<T>(rng.normal(size_t(B) * N * D)), pos = rng.normal(size_t(N) * D);
  DevBuf<T> dx_(x), y(x.size());
  DevBuf<float> dpos(pos), dposg(std::vector<float>(pos.size(), 0.f));
  vit::cuda::add_position_fwd<T>(dx_, dpos, y, B, N, D, nullptr);
  vit::cuda::add_position_bwd<T>(dx_, dposg, B, N, D, nullptr);
  std::vector<float> ry(x.size()), rpg(pos.size(), 0.f);
  vit::cpu::add_position_fwd<float>(x.data(), pos.data(), ry.data(), B, N, D);
  vit::cpu::add_position_bwd<float>(x.data(), rpg.data(), B, N, D);
  expect_close(y.download(), ry, Tol<T>::atol, Tol<T>::rtol, "position y");
  expect_close(dposg.download(), rpg, 1e-5, 1e-5, "position dpos");
  // targets: per-row normalisation, in float on both sides
  std::vector<float> target = rng.normal(size_t(R) * K, 0.3f, 0.5f), rt = target, rmean(R), rsd(R);
  DevBuf<float> dt(target), dmean(R), dsd(R);
  vit::cuda::normalize_rows(dt, dmean, dsd, R, K, 1e-6f, nullptr);
  vit::cpu::normalize_rows<float>(rt.data(), rmean.data(), rsd.data(), R, K, 1e-6f);
  expect_close(dt.download(), rt, 1e-5, 1e-4, "normalised target");
  expect_close(dsd.download(), rsd, 1e-6, 1e-5, "patch spread");
  // the masked loss and its gradient, about 3/4 of the rows hidden
  std::vector<float> mask(R);
  float hidden = 0;
  for (auto& m : mask) hidden += (m = rng.r() % 4 != 0 ? 1.f : 0.f);
  const auto pred = representable<T>(rng.normal(size_t(R) * K));
  DevBuf<T> dp(pred), dgrad(pred.size());
  DevBuf<float> dmask(mask), derr(R), dloss(1);
  vit::cuda::masked_mse_fwd<T>(dp, dt, dmask, derr, dloss, R, K, nullptr);
  vit::cuda::masked_mse_bwd<T>(dp, dt, dmask, dgrad, R, K, hidden, nullptr);
  std::vector<float> rgrad(pred.size());
  const float rloss = vit::cpu::masked_mse_fwd<float>(pred.data(), rt.data(), mask.data(), R, K);
  vit::cpu::masked_mse_bwd<float>(pred.data(), rt.data(), mask.data(), rgrad.data(), R, K);
  EXPECT_NEAR(dloss.download()[0], rloss, 1e-5 * rloss);
  expect_close(dgrad.download(), rgrad, Tol<T>::atol * 1e-3, Tol<T>::rtol, "masked mse dpred");
}
