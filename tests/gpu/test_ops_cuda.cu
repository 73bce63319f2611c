// Every CUDA op against the CPU reference (vit::cpu::*, kernels/cpu/ops.h), float (checking
// mode) and bf16 (training), on fresh random inputs each run (seed printed; VIT_TEST_SEED
// replays one). Outputs are poisoned with 0xFF bytes (NaN) first, and every element must be
// written, finite and within tolerance; an all-zero output fails.
// Inputs are first rounded to what T can hold, so CPU and GPU compute from identical values
// and the tolerance only covers the GPU's own rounding and summation order.
// Run: ctest -L gpu, or vitengine_gpu_tests --gtest_filter='OpsCuda*'. Skips without a GPU.
#include <array>

#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gelu.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/layernorm.cuh"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/patch_embed.cuh"
#include "kernels/cuda/softmax_xent.cuh"
#include "tests/gpu/gpu_test_util.h"
#include "tests/op_tolerance.h"

using namespace vit::test;
using bf16 = __nv_bfloat16;

namespace {

template <typename T>
class OpsCuda : public ::testing::Test {};
using Types = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(OpsCuda, Types);

std::vector<float> plus(std::vector<float> a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

}  // namespace

TEST(CudaDevice, ClearErrorWithoutDevice) {
  if (vit::cuda_device_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    vit::check_cuda_device(vit::Precision::BF16);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "no CUDA device found");
  }
  EXPECT_THROW(vit::ViTCuda(vit::ViTConfig::preset("vit_ti16"), vit::Precision::FP32, 1), std::runtime_error);
}

TEST(CudaDevice, ReportsCard) {
  VIT_REQUIRE_GPU();
  auto info = vit::check_cuda_device(vit::Precision::FP32);
  std::printf("device: %s, compute capability %d.%d, %d SMs, %.1f GiB\n", info.name.c_str(), info.major, info.minor,
              info.sm_count, info.total_mem / 1073741824.0);
  if (info.major >= 8)
    EXPECT_NO_THROW(vit::check_cuda_device(vit::Precision::BF16));
  else
    EXPECT_THROW(vit::check_cuda_device(vit::Precision::BF16), std::runtime_error);
}

TYPED_TEST(OpsCuda, Linear) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  const int M = 77, K = 96, N = 136;
  auto x = representable<T>(rng.normal(size_t(M) * K));
  auto w = representable<T>(rng.normal(size_t(N) * K, 0.1f));
  auto b = representable<T>(rng.normal(N, 0.5f));
  auto dy = representable<T>(rng.normal(size_t(M) * N));
  auto dw0 = rng.normal(size_t(N) * K), db0 = rng.normal(N);
  DevBuf<T> dx_(x), dw_(w), db_(b), ddy(dy), y(size_t(M) * N), dx(size_t(M) * K);
  DevBuf<float> gw(dw0), gb(db0), scratch(vit::cuda::bias_grad_scratch_floats(M, N));
  vit::cuda::GemmContext ctx;
  vit::cuda::linear_fwd<T, T>(ctx, dx_, dw_, db_, y, M, K, N, nullptr);
  vit::cuda::linear_bwd<T>(ctx, dx_, dw_, ddy, dx, gw, gb, scratch, M, K, N, nullptr);
  std::vector<float> ry(size_t(M) * N), rdx(size_t(M) * K), rdw = dw0, rdb = db0;
  vit::cpu::linear_fwd<float>(x.data(), w.data(), b.data(), ry.data(), M, K, N);
  vit::cpu::linear_bwd<float>(x.data(), w.data(), dy.data(), rdx.data(), rdw.data(), rdb.data(), M, K, N);
  // y and dx are K- or N-term sums stored in T; dw/db are fp32 sums over M = 77 rows.
  expect_close(y.download(), ry, Tol<T>::sum_atol, Tol<T>::sum_rtol, "linear y");
  expect_close(dx.download(), rdx, Tol<T>::sum_atol, Tol<T>::sum_rtol, "linear dx");
  expect_close(gw.download(), rdw, 1e-4, 1e-4, "linear dw (accumulated, fp32)");
  expect_close(gb.download(), rdb, 1e-4, 1e-4, "linear db (accumulated, fp32)");
  // the residual add fused as the GEMM's C operand, into a separate output and in place
  auto res = representable<T>(rng.normal(size_t(M) * N));
  DevBuf<T> dres(res), yr(size_t(M) * N);
  vit::cuda::linear_residual_fwd<T>(ctx, dx_, dw_, db_, dres, yr, M, K, N, nullptr);
  expect_close(yr.download(), plus(ry, res), Tol<T>::sum_atol, Tol<T>::sum_rtol, "linear + residual");
  vit::cuda::linear_residual_fwd<T>(ctx, dx_, dw_, db_, dres, dres, M, K, N, nullptr);
  expect_close(dres.download(), plus(ry, res), Tol<T>::sum_atol, Tol<T>::sum_rtol, "linear + residual, in place");
}

TEST(OpsCudaHead, LinearBf16InFp32Out) {
  VIT_REQUIRE_GPU();
  Rng rng(fresh_seed());
  const int M = 33, K = 128, N = 14;  // the classifier head: 14 classes, fp32 logits
  auto x = representable<bf16>(rng.normal(size_t(M) * K));
  auto w = representable<bf16>(rng.normal(size_t(N) * K, 0.1f));
  auto b = rng.normal(N, 0.5f);
  DevBuf<bf16> dxx(x), dww(w);
  DevBuf<float> dbb(b), y(size_t(M) * N);
  vit::cuda::GemmContext ctx;
  vit::cuda::linear_fwd<bf16, float>(ctx, dxx, dww, dbb, y, M, K, N, nullptr);
  std::vector<float> ry(size_t(M) * N);
  vit::cpu::linear_fwd<float>(x.data(), w.data(), b.data(), ry.data(), M, K, N);
  // bf16 products are exact in fp32; only the summation order differs.
  expect_close(y.download(), ry, 1e-4, 1e-4, "head logits");
}

// Both library forward launch shapes (vit::cuda::LayerNormFwdVariant) against the CPU
// reference, and bitwise against the library default: the shapes differ only in how rows are
// assigned to warps, so switching kLayerNormFwdDefault must not change a bit. Rows: fewer than one
// group, ragged groups and blocks, and 20011 rows, enough for every warp of a persistent grid to
// walk several groups (the prefetch path). C = 200: lanes without a vector in the last slot.
TYPED_TEST(OpsCuda, LayerNormFwdVariants) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  using vit::cuda::LayerNormFwdVariant;
  Rng rng(fresh_seed());
  for (int C : {768, 200}) {
    for (int R : {1, 7, 197, 20011}) {
      auto x = representable<T>(rng.normal(size_t(R) * C, 2.f, 0.5f));
      auto w = rng.normal(C, 0.2f, 1.f), b = rng.normal(C, 0.1f);
      DevBuf<T> dx_(x);
      DevBuf<float> dw_(w), db_(b);
      std::vector<float> ry(size_t(R) * C), rm(R), rr(R);
      vit::cpu::layernorm_fwd<float>(x.data(), w.data(), b.data(), ry.data(), rm.data(), rr.data(), R, C, 1e-6f);
      DevBuf<T> y0(size_t(R) * C);
      DevBuf<float> m0(R), r0(R);
      vit::cuda::layernorm_fwd<T>(dx_, dw_, db_, y0, m0, r0, R, C, 1e-6f, nullptr);
      const auto y0h = y0.download(), m0h = m0.download(), r0h = r0.download();
      for (int v = 0; v < int(LayerNormFwdVariant::kCount); ++v) {
        const std::string tag = std::string(" ") + vit::cuda::layernorm_fwd_variant_name(LayerNormFwdVariant(v)) +
                                " R=" + std::to_string(R) + " C=" + std::to_string(C);
        DevBuf<T> y(size_t(R) * C);
        DevBuf<float> mean(R), rstd(R);
        vit::cuda::layernorm_fwd_variant<T>(LayerNormFwdVariant(v), dx_, dw_, db_, y, mean, rstd, R, C, 1e-6f, nullptr);
        const auto yh = y.download(), mh = mean.download(), rh = rstd.download();
        expect_close(yh, ry, Tol<T>::atol, Tol<T>::rtol, "layernorm y" + tag);
        expect_close(mh, rm, 1e-5, 1e-5, "layernorm mean" + tag);
        expect_close(rh, rr, 1e-5, 1e-5, "layernorm rstd" + tag);
        EXPECT_TRUE(yh == y0h && mh == m0h && rh == r0h) << "not bitwise the library default's output:" << tag;
        // inference (no statistics) writes the same y
        DevBuf<T> y2(size_t(R) * C);
        vit::cuda::layernorm_fwd_variant<T>(LayerNormFwdVariant(v), dx_, dw_, db_, y2, nullptr, nullptr, R, C, 1e-6f,
                                            nullptr);
        EXPECT_TRUE(y2.download() == yh) << "y without mean/rstd differs:" << tag;
      }
    }
  }
}

TYPED_TEST(OpsCuda, LayerNorm) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  for (int C : {768, 128}) {
    const int R = 67;
    auto x = representable<T>(rng.normal(size_t(R) * C, 2.f, 0.5f));
    auto w = rng.normal(C, 0.2f, 1.f), b = rng.normal(C, 0.1f);
    auto dy = representable<T>(rng.normal(size_t(R) * C));
    auto res = representable<T>(rng.normal(size_t(R) * C));
    auto dw0 = rng.normal(C), db0 = rng.normal(C);
    DevBuf<T> dx_(x), y(size_t(R) * C), ddy(dy), dx(size_t(R) * C), dxr(res);
    DevBuf<float> dw_(w), db_(b), mean(R), rstd(R), gw(dw0), gb(db0);
    DevBuf<float> scratch(vit::cuda::layernorm_bwd_scratch_floats(R, C));
    vit::cuda::layernorm_fwd<T>(dx_, dw_, db_, y, mean, rstd, R, C, 1e-6f, nullptr);
    vit::cuda::layernorm_bwd<T>(dx_, dw_, mean, rstd, ddy, dx, gw, gb, scratch, R, C, nullptr);
    std::vector<float> ry(size_t(R) * C), rm(R), rr(R), rdx(size_t(R) * C), rdw = dw0, rdb = db0;
    vit::cpu::layernorm_fwd<float>(x.data(), w.data(), b.data(), ry.data(), rm.data(), rr.data(), R, C, 1e-6f);
    vit::cpu::layernorm_bwd<float>(x.data(), w.data(), rm.data(), rr.data(), dy.data(), rdx.data(), rdw.data(),
                                   rdb.data(), R, C);
    const std::string tag = " C=" + std::to_string(C);
    expect_close(y.download(), ry, Tol<T>::atol, Tol<T>::rtol, "layernorm y" + tag);
    expect_close(mean.download(), rm, 1e-5, 1e-5, "layernorm mean (fp32)" + tag);
    expect_close(rstd.download(), rr, 1e-5, 1e-5, "layernorm rstd (fp32)" + tag);
    expect_close(dx.download(), rdx, Tol<T>::atol, Tol<T>::rtol, "layernorm dx" + tag);
    // dw/db: fp32 sums over R = 67 rows of (bf16-rounded) products.
    expect_close(gw.download(), rdw, 1e-4, 1e-4, "layernorm dw (accumulated)" + tag);
    expect_close(gb.download(), rdb, 1e-4, 1e-4, "layernorm db (accumulated)" + tag);
    // the fused residual: dx = LN-backward + residual, in place on the residual buffer
    DevBuf<float> gw2(dw0), gb2(db0);
    vit::cuda::layernorm_bwd<T>(dx_, dw_, mean, rstd, ddy, dxr, gw2, gb2, scratch, R, C, nullptr, dxr.p);
    expect_close(dxr.download(), plus(rdx, res), Tol<T>::atol, Tol<T>::rtol, "layernorm dx + residual" + tag);
  }
}

TYPED_TEST(OpsCuda, Gelu) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  const size_t n = 10007;
  auto x = representable<T>(rng.normal(n, 2.f));
  auto dy = representable<T>(rng.normal(n));
  const uint64_t seed = rng.r();
  DevBuf<T> dx_(x), y(n), ddy(dy), dx(n), dxd(n);
  vit::cuda::gelu_fwd<T>(dx_, y, n, nullptr);
  vit::cuda::gelu_bwd<T>(dx_, ddy, dx, n, nullptr);
  vit::cuda::gelu_bwd<T>(dx_, ddy, dxd, n, nullptr, 0.25f, seed);  // with the MLP's dropout folded in
  std::vector<float> ry(n), rdx(n), tmp(n), rdxd(n);
  vit::cpu::gelu_fwd<float>(x.data(), ry.data(), n);
  vit::cpu::gelu_bwd<float>(x.data(), dy.data(), rdx.data(), n);
  vit::cpu::dropout_bwd<float>(dy.data(), tmp.data(), n, 0.25f, seed);
  vit::cpu::gelu_bwd<float>(x.data(), tmp.data(), rdxd.data(), n);
  // erff/expf are within 2 ulp of the libm values: float stays at ~1e-6.
  expect_close(y.download(), ry, Tol<T>::atol, Tol<T>::rtol, "gelu y");
  expect_close(dx.download(), rdx, Tol<T>::atol, Tol<T>::rtol, "gelu dx");
  expect_close(dxd.download(), rdxd, Tol<T>::atol, Tol<T>::rtol, "gelu dx with dropout");
}

TYPED_TEST(OpsCuda, DropoutAndResidual) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  const size_t n = 30011;
  const float p = 0.3f;
  const uint64_t seed = rng.r();
  auto a = representable<T>(rng.normal(n)), b = representable<T>(rng.normal(n));
  DevBuf<T> da(a), db(b), y(n), dx(n), sum(n), rd(n), rd2(n);
  DevBuf<uint64_t> dseed(1);
  VIT_CHECK(cudaMemcpy(dseed.p, &seed, sizeof(seed), cudaMemcpyHostToDevice));
  vit::cuda::dropout_fwd<T>(da, y, n, p, seed, nullptr);
  vit::cuda::dropout_bwd<T>(db, dx, n, p, 0, nullptr, dseed.p);  // the seed read on the device
  vit::cuda::add_fwd<T>(da, db, sum, n, nullptr);
  vit::cuda::residual_dropout_fwd<T>(da, db, rd, n, p, seed, nullptr);
  vit::cuda::residual_dropout_fwd<T>(da, db, rd2, n, 0.f, seed, nullptr);
  std::vector<float> ry(n), rdx(n), rsum(n), rrd(n);
  vit::cpu::dropout_fwd<float>(a.data(), ry.data(), n, p, seed);
  vit::cpu::dropout_bwd<float>(b.data(), rdx.data(), n, p, seed);
  vit::cpu::add_fwd<float>(a.data(), b.data(), rsum.data(), n);
  std::vector<float> bd(n);
  vit::cpu::dropout_fwd<float>(b.data(), bd.data(), n, p, seed);
  vit::cpu::add_fwd<float>(a.data(), bd.data(), rrd.data(), n);
  // The masks must be identical (shared hash); values differ only by T's rounding.
  auto gy = y.download();
  size_t mask_diff = 0;
  for (size_t i = 0; i < n; ++i) mask_diff += (gy[i] == 0.f) != (ry[i] == 0.f);
  EXPECT_EQ(mask_diff, 0u) << "dropout masks differ from vit::cpu::dropout_keep";
  expect_close(gy, ry, Tol<T>::atol, Tol<T>::rtol, "dropout fwd");
  expect_close(dx.download(), rdx, Tol<T>::atol, Tol<T>::rtol, "dropout bwd (device seed)");
  expect_close(sum.download(), rsum, Tol<T>::atol, Tol<T>::rtol, "add");
  expect_close(rd.download(), rrd, Tol<T>::atol, Tol<T>::rtol, "residual + dropout");
  expect_close(rd2.download(), rsum, Tol<T>::atol, Tol<T>::rtol, "residual, p = 0");
}

TYPED_TEST(OpsCuda, DropPath) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  const int B = 301;
  const size_t per = 197 * 8 + 3;  // odd: samples straddle the 16-byte vectors
  const float p = 0.4f;
  const uint64_t seed = rng.r();
  auto x = representable<T>(rng.normal(size_t(B) * per));
  DevBuf<T> dx(x), y(x.size());  // y starts poisoned (NaN): every element must be written
  vit::cuda::drop_path<T>(dx, y, B, per, p, seed, nullptr);
  vit::cuda::drop_path<T>(dx, dx, B, per, p, seed, nullptr);  // in place
  std::vector<float> ry(x.size());
  vit::cpu::drop_path<float>(x.data(), ry.data(), B, per, p, seed);
  // same samples dropped (shared hash), kept ones scaled by 1/(1-p), rounded to T
  expect_close(y.download(), ry, Tol<T>::atol, Tol<T>::rtol, "drop_path");
  expect_close(dx.download(), ry, Tol<T>::atol, Tol<T>::rtol, "drop_path in place");
}

TYPED_TEST(OpsCuda, SoftmaxXent) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  for (int C : {14, 1000}) {
    for (float s : {0.f, 0.1f}) {
      const int B = 37;
      auto z = representable<T>(rng.normal(size_t(B) * C, 3.f));
      auto y = rng.labels(B, C);
      DevBuf<T> dz(z), dl(size_t(B) * C);
      DevBuf<float> losses(B), mean(1);
      int* dy = nullptr;
      VIT_CHECK(cudaMalloc(&dy, sizeof(int) * B));
      VIT_CHECK(cudaMemcpy(dy, y.data(), sizeof(int) * B, cudaMemcpyHostToDevice));
      vit::cuda::softmax_xent_fwd_bwd<T>(dz, dy, losses, mean, dl, B, C, s, nullptr);
      std::vector<float> rl(B), rdl(size_t(B) * C);
      const float rmean = vit::cpu::softmax_xent_fwd<float>(z.data(), y.data(), rl.data(), B, C, s);
      vit::cpu::softmax_xent_bwd<float>(z.data(), y.data(), rdl.data(), B, C, s);
      const std::string tag = " C=" + std::to_string(C) + " s=" + std::to_string(s);
      // the loss is fp32 from identical inputs (the CPU works in double): 1e-5
      expect_close(losses.download(), rl, 1e-5, 1e-5, "xent row losses" + tag);
      expect_close(mean.download(), {rmean}, 1e-5, 1e-5, "xent mean" + tag);
      // dlogits are (p - t) / B, rounded to T: absolute floor scaled by 1/B
      expect_close(dl.download(), rdl, Tol<T>::atol / B, Tol<T>::rtol, "xent dlogits" + tag);
      VIT_CHECK(cudaFree(dy));
    }
  }
}

TEST(OpsCudaAdamW, ArenaStepAndClip) {
  VIT_REQUIRE_GPU();
  Rng rng(fresh_seed());
  const size_t n = 100003, nd = 40000;
  auto p = rng.normal(n, 0.1f), g = rng.normal(n, 0.01f), m = rng.normal(n, 0.001f), v = rng.uniform(n, 0.f, 1e-4f);
  vit::cpu::AdamWParams hp;
  hp.lr = 1e-3f, hp.weight_decay = 0.05f, hp.step = 7, hp.grad_scale = 0.5f;
  for (float clip : {0.f, 0.5f}) {
    DevBuf<float> dp(p), dg(g), dm(m), dv(v);
    DevBuf<bf16> shadow(n);
    DevBuf<double> sq(1), sq_scratch(vit::cuda::kSumSqBlocks);
    vit::cuda::sum_squares(dg, n, sq, sq_scratch, nullptr);
    vit::cuda::adamw_step(dp, dg, dm, dv, n, nd, hp, nullptr, shadow, nullptr, sq, clip);
    std::vector<float> rp = p, rm = m, rv = v;
    const double rsq = vit::cpu::sum_squares<float>(g.data(), n);
    vit::cpu::AdamWParams h2 = hp;
    const double norm = std::sqrt(rsq);
    if (clip > 0 && norm > clip) h2.grad_scale *= float(clip / (norm + 1e-6));
    vit::cpu::adamw_step<float>(rp.data(), g.data(), rm.data(), rv.data(), n, nd, h2);
    double gsq = 0;
    VIT_CHECK(cudaMemcpy(&gsq, sq.p, sizeof(double), cudaMemcpyDeviceToHost));
    EXPECT_NEAR(gsq, rsq, 1e-9 * rsq) << "sum of squares (fp64, different order)";
    const std::string tag = clip > 0 ? " (clipped)" : "";
    // Same fp32 formula and constants: differences are a few ulp.
    expect_close(dp.download(), rp, 1e-7, 1e-6, "adamw p" + tag);
    expect_close(dm.download(), rm, 1e-9, 1e-6, "adamw m" + tag);
    expect_close(dv.download(), rv, 1e-12, 1e-6, "adamw v" + tag);
    // the bf16 shadow is the rounded master weight
    expect_close(shadow.download(), representable<bf16>(rp), 1e-7, 1e-2, "adamw bf16 shadow" + tag);
  }
}

// P = 8 and 16 take im2col's 16-byte loads; P = 5 (W not a multiple of 4) the scalar path.
TYPED_TEST(OpsCuda, PatchEmbed) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  for (auto [B, H, W, P] : {std::array<int, 4>{3, 32, 32, 8}, {2, 48, 32, 16}, {2, 20, 15, 5}}) {
    SCOPED_TRACE("P=" + std::to_string(P) + " " + std::to_string(H) + "x" + std::to_string(W));
    const int C = 3, D = 64, Np = (H / P) * (W / P), K = C * P * P;
    auto img = representable<T>(rng.normal(size_t(B) * C * H * W));  // im2col rounds the image to T
    auto w = representable<T>(rng.normal(size_t(D) * K, 0.05f));
    auto b = representable<T>(rng.normal(D, 0.1f));
    auto dout = representable<T>(rng.normal(size_t(B) * Np * D));
    auto dw0 = rng.normal(size_t(D) * K), db0 = rng.normal(D);
    DevBuf<float> dimg(img), gw(dw0), gb(db0), scratch(vit::cuda::bias_grad_scratch_floats(B * Np, D));
    DevBuf<T> dww(w), dbb(b), cols(size_t(B) * Np * K), out(size_t(B) * Np * D), ddout(dout);
    vit::cuda::GemmContext ctx;
    vit::cuda::patch_embed_fwd<T>(ctx, dimg, dww, dbb, cols, out, vit::PatchShape{B, C, H, W, P, D}, nullptr);
    vit::cuda::patch_embed_bwd<T>(ctx, cols, ddout, gw, gb, scratch, vit::PatchShape{B, C, H, W, P, D}, nullptr);
    std::vector<float> rout(size_t(B) * Np * D), rdw = dw0, rdb = db0;
    vit::cpu::patch_embed_fwd<float>(img.data(), w.data(), b.data(), rout.data(), vit::PatchShape{B, C, H, W, P, D});
    vit::cpu::patch_embed_bwd<float>(img.data(), dout.data(), rdw.data(), rdb.data(),
                                     vit::PatchShape{B, C, H, W, P, D});
    expect_close(out.download(), rout, Tol<T>::sum_atol, Tol<T>::sum_rtol, "patch_embed out");
    expect_close(gw.download(), rdw, 1e-4, 1e-4, "patch_embed dw (fp32, accumulated)");
    expect_close(gb.download(), rdb, 1e-4, 1e-4, "patch_embed db (fp32, accumulated)");
  }
}

TYPED_TEST(OpsCuda, EmbedTokens) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  const int B = 5, Np = 16, D = 64, N = Np + 1;
  for (float p : {0.f, 0.2f}) {
    const uint64_t seed = rng.r();
    auto patches = representable<T>(rng.normal(size_t(B) * Np * D));
    auto cls = rng.normal(D), pos = rng.normal(size_t(N) * D);
    auto dout = representable<T>(rng.normal(size_t(B) * N * D));
    auto dcls0 = rng.normal(D), dpos0 = rng.normal(size_t(N) * D);
    DevBuf<T> dp(patches), out(size_t(B) * N * D), ddout(dout), dpatch(size_t(B) * Np * D);
    DevBuf<float> dcls(cls), dpos(pos), gcls(dcls0), gpos(dpos0);
    vit::cuda::embed_tokens_fwd<T>(dp, dcls, dpos, out, B, Np, D, nullptr, p, seed);
    vit::cuda::embed_tokens_bwd<T>(ddout, dpatch, gcls, gpos, B, Np, D, nullptr, p, seed);
    std::vector<float> rout(size_t(B) * N * D), rdp(size_t(B) * Np * D), rcls = dcls0, rpos = dpos0,
                                                                         tmp(size_t(B) * N * D);
    vit::cpu::embed_tokens_fwd<float>(patches.data(), cls.data(), pos.data(), tmp.data(), B, Np, D);
    vit::cpu::dropout_fwd<float>(tmp.data(), rout.data(), tmp.size(), p, seed);
    vit::cpu::dropout_bwd<float>(dout.data(), tmp.data(), tmp.size(), p, seed);
    vit::cpu::embed_tokens_bwd<float>(tmp.data(), rdp.data(), rcls.data(), rpos.data(), B, Np, D);
    const std::string tag = " p=" + std::to_string(p);
    expect_close(out.download(), rout, Tol<T>::atol, Tol<T>::rtol, "embed_tokens out" + tag);
    expect_close(dpatch.download(), rdp, Tol<T>::atol, Tol<T>::rtol, "embed_tokens dpatches" + tag);
    expect_close(gcls.download(), rcls, 1e-5, 1e-5, "embed_tokens dcls (fp32)" + tag);
    expect_close(gpos.download(), rpos, 1e-5, 1e-5, "embed_tokens dpos (fp32)" + tag);
  }
}

TYPED_TEST(OpsCuda, ClassTokenGatherScatter) {
  VIT_REQUIRE_GPU();
  using T = TypeParam;
  Rng rng(fresh_seed());
  const int B = 4, N = 17, D = 64;
  auto x = representable<T>(rng.normal(size_t(B) * N * D));
  auto dc = representable<T>(rng.normal(size_t(B) * D));
  DevBuf<T> dx_(x), cls(size_t(B) * D), ddc(dc), dx(size_t(B) * N * D);
  vit::cuda::gather_cls<T>(dx_, cls, B, N, D, nullptr);
  vit::cuda::scatter_cls_grad<T>(ddc, dx, B, N, D, nullptr);
  std::vector<float> rc(size_t(B) * D), rdx(size_t(B) * N * D, 0.f);
  for (int b = 0; b < B; ++b)
    for (int d = 0; d < D; ++d) {
      rc[size_t(b) * D + d] = x[size_t(b) * N * D + d];
      rdx[size_t(b) * N * D + d] = dc[size_t(b) * D + d];
    }
  expect_close(cls.download(), rc, 0, 0, "gather_cls (a copy)");
  expect_close(dx.download(), rdx, 0, 0, "scatter_cls_grad (a copy, zeros elsewhere)");
}

TEST(OpsCudaImages, NormalizeU8) {
  VIT_REQUIRE_GPU();
  Rng rng(fresh_seed());
  const int B = 2, S = 16;
  std::vector<uint8_t> u8(size_t(B) * S * S * 3);
  for (auto& v : u8) v = uint8_t(rng.r() & 255);
  uint8_t* du8 = nullptr;
  VIT_CHECK(cudaMalloc(&du8, u8.size()));
  VIT_CHECK(cudaMemcpy(du8, u8.data(), u8.size(), cudaMemcpyHostToDevice));
  DevBuf<float> img(size_t(B) * 3 * S * S);
  vit::cuda::ImageNorm norm;
  vit::cuda::normalize_images(du8, img, B, S, norm, nullptr);
  std::vector<float> ref(img.n);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < S; ++y)
        for (int x = 0; x < S; ++x)
          ref[((size_t(b) * 3 + c) * S + y) * S + x] =
              (u8[((size_t(b) * S + y) * S + x) * 3 + c] / 255.f - norm.mean[c]) / norm.std[c];
  expect_close(img.download(), ref, 1e-6, 1e-6, "normalize_images (HWC u8 -> CHW float)");
  VIT_CHECK(cudaFree(du8));
}

TEST(OpsCudaConvert, Bf16RoundTrip) {
  VIT_REQUIRE_GPU();
  Rng rng(fresh_seed());
  const size_t n = 5003;
  auto x = rng.normal(n, 10.f);
  DevBuf<float> dx_(x), back(n);
  DevBuf<bf16> h(n);
  vit::cuda::convert<float, bf16>(dx_, h, n, nullptr);
  vit::cuda::convert<bf16, float>(h, back, n, nullptr);
  // round to nearest even on an 8-bit mantissa: exactly the host conversion
  expect_close(back.download(), representable<bf16>(x), 0, 0, "fp32 -> bf16 -> fp32");
}
