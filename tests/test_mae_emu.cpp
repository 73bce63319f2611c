// The masked autoencoder's CUDA kernels (kernels/cuda/mae.cu) run on the CPU through the CUDA
// emulator (tests/emu/cuda_emu.h) against the CPU reference ops (kernels/cpu/mae.cpp, themselves
// checked against finite differences and PyTorch): gather, scatter and their backward passes, the
// position add and its gradient, the per-patch normalisation, and the masked loss with its
// gradient, in float and bf16. Outputs are poisoned (NaN) first, so an element never written
// fails. tests/gpu/test_mae_cuda.cu runs the same comparisons on a GPU.
#include "tests/emu/cuda_emu.h"
#ifdef VIT_CUDA_EMULATE
#include "kernels/cuda/mae.cu"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/emu/expect_close.h"

namespace {

using bf16 = __nv_bfloat16;

// Values rounded to T, as T and as float (the reference sees exactly the kernel's inputs).
template <typename T>
void make(std::mt19937& g, size_t n, std::vector<T>& t, std::vector<float>& f) {
  std::normal_distribution<float> nd;
  t.resize(n), f.resize(n);
  for (size_t i = 0; i < n; ++i) t[i] = T(nd(g)), f[i] = float(emu::to_double(t[i]));
}

std::vector<int> distinct_rows(std::mt19937& g, int B, int N, int K) {
  std::vector<int> idx;
  for (int b = 0; b < B; b++) {
    std::vector<int> all(N);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), g);
    idx.insert(idx.end(), all.begin(), all.begin() + K);
  }
  return idx;
}

template <typename T>
void check_tokens(int B, int N, int K, int D) {
  SCOPED_TRACE("B " + std::to_string(B) + " N " + std::to_string(N) + " K " + std::to_string(K) + " D " +
               std::to_string(D));
  std::mt19937 g(31 + N + D);
  const auto idx = distinct_rows(g, B, N, K);
  std::vector<T> x, dy, xs, dys;
  std::vector<float> fx, fdy, fxs, fdys, fill(D);
  make(g, size_t(B) * N * D, x, fx);
  make(g, size_t(B) * K * D, dy, fdy);
  make(g, size_t(B) * K * D, xs, fxs);
  make(g, size_t(B) * N * D, dys, fdys);
  for (auto& f : fill) f = float(emu::to_double(T(std::normal_distribution<float>()(g))));
  std::vector<T> y(size_t(B) * K * D), dx(size_t(B) * N * D), ys(size_t(B) * N * D), dxs(size_t(B) * K * D);
  for (auto* v : {&y, &dx, &ys, &dxs}) emu::poison(*v);
  std::vector<float> dfill(D, 0.5f);
  vit::cuda_emu::gather_tokens_fwd<T>(x.data(), idx.data(), y.data(), B, N, K, D, nullptr);
  vit::cuda_emu::gather_tokens_bwd<T>(dy.data(), idx.data(), dx.data(), B, N, K, D, nullptr);
  vit::cuda_emu::scatter_tokens_fwd<T>(xs.data(), idx.data(), fill.data(), ys.data(), B, N, K, D, nullptr);
  vit::cuda_emu::scatter_tokens_bwd<T>(dys.data(), idx.data(), dxs.data(), dfill.data(), B, N, K, D, nullptr);
  std::vector<float> ry(y.size()), rdx(dx.size()), rys(ys.size()), rdxs(dxs.size()), rdf(D, 0.5f);
  vit::cpu::gather_tokens_fwd<float>(fx.data(), idx.data(), ry.data(), B, N, K, D);
  vit::cpu::gather_tokens_bwd<float>(fdy.data(), idx.data(), rdx.data(), B, N, K, D);
  vit::cpu::scatter_tokens_fwd<float>(fxs.data(), idx.data(), fill.data(), rys.data(), B, N, K, D);
  vit::cpu::scatter_tokens_bwd<float>(fdys.data(), idx.data(), rdxs.data(), rdf.data(), B, N, K, D);
  emu::expect_close(y, ry, 0, 0, "gather y");  // copies: exact
  emu::expect_close(dx, rdx, 0, 0, "gather dx");
  emu::expect_close(ys, rys, 0, 0, "scatter y");
  emu::expect_close(dxs, rdxs, 0, 0, "scatter dx");
  emu::expect_close(dfill, rdf, 1e-4, 1e-5, "scatter dfill");  // a sum over the hidden rows, other order
}

TEST(MaeEmu, GatherScatterAndTheirGradients) {
  check_tokens<float>(2, 17, 5, 12);
  check_tokens<bf16>(2, 17, 5, 12);
  check_tokens<float>(3, 65, 17, 40);  // the CPU ablation model's 1 + 64 tokens, 1 + 16 visible
}

template <typename T>
void check_position_and_loss(int B, int N, int D, int K) {
  SCOPED_TRACE("B " + std::to_string(B) + " N " + std::to_string(N));
  std::mt19937 g(7 + N);
  std::vector<T> x;
  std::vector<float> fx, pos, tmp;
  make(g, size_t(B) * N * D, x, fx);
  std::vector<float> dummy;
  make(g, size_t(N) * D, pos, dummy);
  std::vector<T> y(x.size());
  emu::poison(y);
  std::vector<float> dpos(pos.size(), 0.f), ry(x.size()), rdpos(pos.size(), 0.f);
  vit::cuda_emu::add_position_fwd<T>(x.data(), pos.data(), y.data(), B, N, D, nullptr);
  vit::cuda_emu::add_position_bwd<T>(x.data(), dpos.data(), B, N, D, nullptr);
  vit::cpu::add_position_fwd<float>(fx.data(), pos.data(), ry.data(), B, N, D);
  vit::cpu::add_position_bwd<float>(fx.data(), rdpos.data(), B, N, D);
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1.0 / 128;
  emu::expect_close(y, ry, tol, tol, "position y");
  emu::expect_close(dpos, rdpos, 1e-5, 1e-5, "position dpos");
  // per-row normalisation and the masked loss (targets and masks are fp32)
  const int R = B * N;
  std::vector<float> target, tdummy, mean(R), sd(R);
  make(g, size_t(R) * K, target, tdummy);
  for (auto& v : target) v = 0.5f + 0.3f * v;
  std::vector<float> rt = target, rmean(R), rsd(R);
  vit::cuda_emu::normalize_rows(target.data(), mean.data(), sd.data(), R, K, 1e-6f, nullptr);
  vit::cpu::normalize_rows<float>(rt.data(), rmean.data(), rsd.data(), R, K, 1e-6f);
  emu::expect_close(target, rt, 1e-5, 1e-4, "normalised target");
  emu::expect_close(sd, rsd, 1e-6, 1e-5, "patch spread");
  std::vector<float> mask(R);
  float hidden = 0;
  for (auto& m : mask) hidden += (m = g() % 4 != 0 ? 1.f : 0.f);
  std::vector<T> pred, grad(size_t(R) * K);
  std::vector<float> fpred;
  make(g, size_t(R) * K, pred, fpred);
  emu::poison(grad);
  std::vector<float> err(R), loss(1), rgrad(grad.size());
  vit::cuda_emu::masked_mse_fwd<T>(pred.data(), target.data(), mask.data(), err.data(), loss.data(), R, K, nullptr);
  vit::cuda_emu::masked_mse_bwd<T>(pred.data(), target.data(), mask.data(), grad.data(), R, K, hidden, nullptr);
  const float rloss = vit::cpu::masked_mse_fwd<float>(fpred.data(), rt.data(), mask.data(), R, K);
  vit::cpu::masked_mse_bwd<float>(fpred.data(), rt.data(), mask.data(), rgrad.data(), R, K);
  EXPECT_NEAR(loss[0], rloss, 1e-5 * rloss);
  emu::expect_close(grad, rgrad, 1e-9, std::is_same_v<T, float> ? 1e-4 : 1.0 / 128, "masked mse dpred");
}

TEST(MaeEmu, PositionNormalisationAndMaskedLoss) {
  check_position_and_loss<float>(2, 17, 12, 48);
  check_position_and_loss<bf16>(2, 17, 12, 48);
  check_position_and_loss<float>(3, 65, 8, 192);  // 8 px patches of 3 channels
}

}  // namespace
#endif  // VIT_CUDA_EMULATE
