// Per-kernel throughput at ViT-B/16 training shapes, batch 256 (M = 256 * 197 = 50,432 token
// rows, D = 768, MLP 3072), bf16 activations. Each benchmark validates its output against
// a CPU computation on sampled rows/elements before timing (SkipWithError on mismatch), then
// times every repeat with cudaEvents after an L2 flush (UseManualTime).
// Reported next to the card's ceiling: memory-bound ops in TB/s, GEMMs in TFLOP/s.
// Run: bench_ops_cuda --benchmark_out=ops.json --benchmark_out_format=json
// Targets (../shared/ANCHORS.md): LayerNorm forward >= 2.5 TB/s (PyTorch 1.36 TB/s).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/bench_cuda_util.cuh"
#include "engine/model/vit.h"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/gelu.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/layernorm.cuh"
#include "kernels/cuda/patch_embed.cuh"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/softmax_xent.cuh"

using namespace vit::bench;
using bf16 = __nv_bfloat16;

namespace {
constexpr int kRows = 256 * 197, kD = 768, kMlp = 3072;

// variant < 0: the library entry point (kLayerNormFwdDefault); else that launch shape.
void BM_LayerNormFwd_impl(benchmark::State& st, int variant) {
  using vit::cuda::LayerNormFwdVariant;
  const int R = int(st.range(0)), C = int(st.range(1));
  Buf<bf16> x(size_t(R) * C), y(size_t(R) * C);
  Buf<float> w(C), b(C), mean(R), rstd(R);
  fill_uniform(x.p, x.n, 1, 2.f, 0.3f);
  fill_uniform(w.p, w.n, 2, 0.2f, 1.f);
  fill_uniform(b.p, b.n, 3, 0.1f);
  auto run = [&] {
    if (variant < 0)
      vit::cuda::layernorm_fwd<bf16>(x, w, b, y, mean, rstd, R, C, 1e-6f, nullptr);
    else
      vit::cuda::layernorm_fwd_variant<bf16>(LayerNormFwdVariant(variant), x, w, b, y, mean, rstd, R, C, 1e-6f,
                                             nullptr);
  };
  VIT_CHECK(cudaMemset(y.p, 0xFF, y.n * sizeof(bf16)));  // NaN: an unwritten row fails below
  run();
  // validate rows (first, middle, last, and two that end a 4-row group) against vit::cpu::layernorm_fwd
  auto hw = fetch(w.p, 0, C), hb = fetch(b.p, 0, C);
  for (int r : {0, 3, R / 2, R - 2, R - 1}) {
    auto hx = fetch(x.p, size_t(r) * C, C), hy = fetch(y.p, size_t(r) * C, C);
    std::vector<float> ref(C), m(1), rs(1);
    vit::cpu::layernorm_fwd<float>(hx.data(), hw.data(), hb.data(), ref.data(), m.data(), rs.data(), 1, C, 1e-6f);
    for (int c = 0; c < C; ++c)
      if (!close(hy[c], ref[c], 2e-2, 1e-2)) return st.SkipWithError("layernorm_fwd validation failed (y)");
    if (!close(fetch(mean.p, r, 1)[0], m[0], 1e-5, 1e-5) || !close(fetch(rstd.p, r, 1)[0], rs[0], 1e-5, 1e-4))
      return st.SkipWithError("layernorm_fwd validation failed (mean/rstd)");
  }
  if (variant >= 0) {
    // Every variant should write bitwise the reference kernel's output (same arithmetic, other launch
    // shape). Reported as a counter, not an error, so that a mismatch does not cost the timing;
    // the GPU test OpsCuda*LayerNormFwdVariants asserts it.
    std::vector<uint16_t> got(y.n), want(y.n);
    VIT_CHECK(cudaMemcpy(got.data(), y.p, y.n * 2, cudaMemcpyDeviceToHost));
    vit::cuda::layernorm_fwd_variant<bf16>(LayerNormFwdVariant::kReference, x, w, b, y, mean, rstd, R, C, 1e-6f,
                                           nullptr);
    VIT_CHECK(cudaMemcpy(want.data(), y.p, y.n * 2, cudaMemcpyDeviceToHost));
    st.counters["same_bits_as_legacy"] = got == want ? 1 : 0;
    const auto v = LayerNormFwdVariant(variant);
    st.SetLabel(std::string(vit::cuda::layernorm_fwd_variant_name(v)) +
                (v == vit::cuda::kLayerNormFwdDefault ? " (library default)" : ""));
  } else {
    st.SetLabel(std::string("library default: ") +
                vit::cuda::layernorm_fwd_variant_name(vit::cuda::kLayerNormFwdDefault));
  }
  double t = time_loop(st, nullptr, run);
  // read x, write y (bf16), write mean/rstd (fp32); w/b are cache-resident
  report_bandwidth(st, double(R) * C * 2 * 2 + double(R) * 8, t);
}
void BM_LayerNormFwd(benchmark::State& st) {
  guard(st, [](benchmark::State& s) { BM_LayerNormFwd_impl(s, -1); });
}
BENCHMARK(BM_LayerNormFwd)->Args({kRows, kD})->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(50);

// The library's two launch shapes, BM_LayerNormFwdVariant/<name>/50432/768 (the label marks the
// default). The other shapes under study are timed by bench/sandbox/bench_layernorm_shapes.
const bool kLayerNormFwdVariantsRegistered = [] {
  for (int v = 0; v < int(vit::cuda::LayerNormFwdVariant::kCount); ++v) {
    const std::string name = std::string("BM_LayerNormFwdVariant/") +
                             vit::cuda::layernorm_fwd_variant_name(vit::cuda::LayerNormFwdVariant(v));
    benchmark::RegisterBenchmark(
        name.c_str(),
        [v](benchmark::State& st) { guard(st, [v](benchmark::State& s) { BM_LayerNormFwd_impl(s, v); }); })
        ->Args({kRows, kD})
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->Iterations(50);
  }
  return true;
}();

void BM_LayerNormBwd_impl(benchmark::State& st) {
  const int R = int(st.range(0)), C = int(st.range(1));
  Buf<bf16> x(size_t(R) * C), y(size_t(R) * C), dy(size_t(R) * C), dx(size_t(R) * C);
  Buf<float> w(C), b(C), mean(R), rstd(R), dw(C), db(C), scratch(vit::cuda::layernorm_bwd_scratch_floats(R, C));
  fill_uniform(x.p, x.n, 1, 2.f, 0.3f);
  fill_uniform(dy.p, dy.n, 4, 1.f);
  fill_uniform(w.p, w.n, 2, 0.2f, 1.f);
  fill_uniform(b.p, b.n, 3, 0.1f);
  VIT_CHECK(cudaMemset(dw.p, 0, C * 4));
  VIT_CHECK(cudaMemset(db.p, 0, C * 4));
  vit::cuda::layernorm_fwd<bf16>(x, w, b, y, mean, rstd, R, C, 1e-6f, nullptr);
  vit::cuda::layernorm_bwd<bf16>(x, w, mean, rstd, dy, dx, dw, db, scratch, R, C, nullptr);
  auto hw = fetch(w.p, 0, C);
  for (int r : {0, R - 1}) {
    auto hx = fetch(x.p, size_t(r) * C, C), hdy = fetch(dy.p, size_t(r) * C, C), hdx = fetch(dx.p, size_t(r) * C, C);
    std::vector<float> m(1), rs(1), yy(C), ref(C), gw(C, 0.f), gb(C, 0.f), hb(C, 0.f);
    vit::cpu::layernorm_fwd<float>(hx.data(), hw.data(), hb.data(), yy.data(), m.data(), rs.data(), 1, C, 1e-6f);
    vit::cpu::layernorm_bwd<float>(hx.data(), hw.data(), m.data(), rs.data(), hdy.data(), ref.data(), gw.data(),
                                   gb.data(), 1, C);
    for (int c = 0; c < C; ++c)
      if (!close(hdx[c], ref[c], 2e-2, 2e-2)) return st.SkipWithError("layernorm_bwd validation failed");
  }
  double t = time_loop(
      st, nullptr, [&] { vit::cuda::layernorm_bwd<bf16>(x, w, mean, rstd, dy, dx, dw, db, scratch, R, C, nullptr); });
  report_bandwidth(st, double(R) * C * 2 * 3 + double(R) * 8, t);  // read x, dy; write dx
}
void BM_LayerNormBwd(benchmark::State& st) { guard(st, BM_LayerNormBwd_impl); }
BENCHMARK(BM_LayerNormBwd)->Args({kRows, kD})->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(30);

void BM_Gelu_impl(benchmark::State& st) {
  const bool bwd = st.range(0) != 0;
  const size_t n = size_t(kRows) * kMlp;
  Buf<bf16> x(n), dy(n), y(n);
  fill_uniform(x.p, n, 5, 3.f);
  fill_uniform(dy.p, n, 6, 1.f);
  if (bwd)
    vit::cuda::gelu_bwd<bf16>(x, dy, y, n, nullptr);
  else
    vit::cuda::gelu_fwd<bf16>(x, y, n, nullptr);
  const size_t idx[3] = {0, n / 3, n - 1};
  for (size_t i : idx) {
    auto hx = fetch(x.p, i, 1), hd = fetch(dy.p, i, 1), hy = fetch(y.p, i, 1);
    float ref = 0;
    if (bwd)
      vit::cpu::gelu_bwd<float>(hx.data(), hd.data(), &ref, 1);
    else
      vit::cpu::gelu_fwd<float>(hx.data(), &ref, 1);
    if (!close(hy[0], ref, 1e-2, 1e-2)) return st.SkipWithError("gelu validation failed");
  }
  double t = time_loop(st, nullptr, [&] {
    if (bwd)
      vit::cuda::gelu_bwd<bf16>(x, dy, y, n, nullptr);
    else
      vit::cuda::gelu_fwd<bf16>(x, y, n, nullptr);
  });
  report_bandwidth(st, double(n) * 2 * (bwd ? 3 : 2), t);
  st.SetLabel(bwd ? "backward" : "forward");
}
void BM_Gelu(benchmark::State& st) { guard(st, BM_Gelu_impl); }
BENCHMARK(BM_Gelu)->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(30);

// GEMMs of one ViT-B/16 block at batch 256. kind: 0 qkv fwd, 1 out_proj fwd, 2 fc1 fwd,
// 3 fc2 fwd, 4 fc1 dx, 5 fc1 dw (fp32 grad, +=), 6 the 8192^3 ceiling (no bias), and the other
// weight gradients 7 fc2 dw, 8 qkv dw, 9 out_proj dw: inside the training step these four ran at
// 150-200 TFLOP/s (VIT_PROFILE=1, H200), so their isolated speed is worth seeing side by side.
void BM_Gemm_impl(benchmark::State& st) {
  const int kind = int(st.range(0));
  int M = kRows, K = kD, N = kD;
  const char* label = "";
  const bool is_dw = kind == 5 || kind >= 7;
  switch (kind) {
    case 0:
      N = 3 * kD, label = "qkv fwd (M,768)x(2304,768)^T";
      break;
    case 1:
      label = "out_proj fwd (M,768)x(768,768)^T";
      break;
    case 2:
      N = kMlp, label = "fc1 fwd (M,768)x(3072,768)^T";
      break;
    case 3:
      K = kMlp, label = "fc2 fwd (M,3072)x(768,3072)^T";
      break;
    case 4:
      N = kMlp, label = "fc1 dx (M,3072)x(3072,768)";
      break;
    case 5:
      N = kMlp, label = "fc1 dw (3072,M)x(M,768) fp32 += and db (bias_grad)";
      break;
    case 7:
      K = kMlp, label = "fc2 dw (768,M)x(M,3072) fp32 += and db (bias_grad)";
      break;
    case 8:
      N = 3 * kD, label = "qkv dw (2304,M)x(M,768) fp32 += and db (bias_grad)";
      break;
    case 9:
      label = "out_proj dw (768,M)x(M,768) fp32 += and db (bias_grad)";
      break;
    default:
      M = N = K = 8192, label = "8192^3 (ceiling)";
      break;
  }
  Buf<bf16> x(size_t(M) * K), w(size_t(N) * K), b(N), y(size_t(M) * N), dy(size_t(M) * N), dx(size_t(M) * K);
  Buf<float> dw(size_t(N) * K), db(N), scratch(vit::cuda::bias_grad_scratch_floats(M, N));
  fill_uniform(x.p, x.n, 7, 1.f);
  fill_uniform(w.p, w.n, 8, 0.05f);
  fill_uniform(b.p, b.n, 9, 0.1f);
  fill_uniform(dy.p, dy.n, 10, 1.f);
  VIT_CHECK(cudaMemset(dw.p, 0, dw.n * 4));
  vit::cuda::GemmContext ctx;
  const bf16* bias = kind <= 3 ? b.p : nullptr;
  auto run = [&] {
    if (kind == 4)
      vit::cuda::linear_bwd_dx<bf16>(ctx, dy, w, dx, M, K, N, nullptr);
    else if (is_dw)
      vit::cuda::linear_bwd_dw_db<bf16>(ctx, x, dy, dw, db, scratch, M, K, N, nullptr);
    else
      vit::cuda::linear_fwd<bf16, bf16>(ctx, x, w, bias, y, M, K, N, nullptr);
  };
  run();
  // validate 8 sampled output elements with a double dot product on the host
  for (int s = 0; s < 8; ++s) {
    double ref = 0, got = 0;
    if (kind == 4) {  // dx[i,k] = sum_n dy[i,n] w[n,k]
      const size_t i = (size_t(s) * 7919) % M, k = (size_t(s) * 104729) % K;
      auto r = fetch(dy.p, i * N, N);
      for (int n = 0; n < N; ++n) ref += double(r[n]) * fetch(w.p, size_t(n) * K + k, 1)[0];
      got = fetch(dx.p, i * K + k, 1)[0];
    } else if (is_dw) {  // dw[n,k] = sum_i dy[i,n] x[i,k]; sample with a strided host sum
      if (s >= 2) break;
      const size_t n = (size_t(s) * 7919) % N, k = (size_t(s) * 104729) % K;
      std::vector<bf16> col_dy(M), col_x(M);
      VIT_CHECK(cudaMemcpy2D(col_dy.data(), 2, dy.p + n, size_t(N) * 2, 2, M, cudaMemcpyDeviceToHost));
      VIT_CHECK(cudaMemcpy2D(col_x.data(), 2, x.p + k, size_t(K) * 2, 2, M, cudaMemcpyDeviceToHost));
      for (int i = 0; i < M; ++i) ref += double(float(col_dy[i])) * double(float(col_x[i]));
      got = fetch(dw.p, n * K + k, 1)[0];
    } else {  // y[i,n] = x[i,:] . w[n,:] + b[n]
      const size_t i = (size_t(s) * 7919) % M, n = (size_t(s) * 104729) % N;
      auto xr = fetch(x.p, i * K, K), wr = fetch(w.p, n * K, K);
      for (int k = 0; k < K; ++k) ref += double(xr[k]) * wr[k];
      if (bias) ref += fetch(b.p, n, 1)[0];
      got = fetch(y.p, i * N + n, 1)[0];
    }
    // bf16 output rounding (2^-9) on sums of magnitude ~sqrt(K)
    if (!close(got, ref, 5e-2, 2e-2)) return st.SkipWithError("gemm validation failed");
  }
  if (is_dw) VIT_CHECK(cudaMemset(dw.p, 0, dw.n * 4));
  double t = time_loop(st, nullptr, run);
  report_flops(st, 2.0 * M * N * K, t);
  st.SetLabel(label);
}
void BM_Gemm(benchmark::State& st) { guard(st, BM_Gemm_impl); }
BENCHMARK(BM_Gemm)->DenseRange(0, 9)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(20);

void BM_SoftmaxXent_impl(benchmark::State& st) {
  const int B = int(st.range(0)), C = int(st.range(1));
  Buf<float> z(size_t(B) * C), losses(B), mean(1), dz(size_t(B) * C);
  Buf<int> y(B);
  fill_uniform(z.p, z.n, 11, 4.f);
  std::vector<int> hy(B);
  for (int i = 0; i < B; ++i) hy[i] = (i * 7) % C;
  VIT_CHECK(cudaMemcpy(y.p, hy.data(), B * 4, cudaMemcpyHostToDevice));
  vit::cuda::softmax_xent_fwd_bwd<float>(z, y, losses, mean, dz, B, C, 0.1f, nullptr);
  auto hz = fetch(z.p, 0, size_t(B) * C);
  const float ref = vit::cpu::softmax_xent_fwd<float>(hz.data(), hy.data(), nullptr, B, C, 0.1f);
  if (!close(fetch(mean.p, 0, 1)[0], ref, 1e-5, 1e-5)) return st.SkipWithError("xent validation failed");
  double t = time_loop(st, nullptr,
                       [&] { vit::cuda::softmax_xent_fwd_bwd<float>(z, y, losses, mean, dz, B, C, 0.1f, nullptr); });
  report_bandwidth(st, double(B) * C * 8, t);  // read logits, write dlogits (fp32)
}
void BM_SoftmaxXent(benchmark::State& st) { guard(st, BM_SoftmaxXent_impl); }
BENCHMARK(BM_SoftmaxXent)
    ->Args({256, 14})
    ->Args({256, 1000})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(50);

void BM_AdamW_impl(benchmark::State& st) {
  const vit::ViTConfig cfg = vit::ViTConfig::preset("vit_b16");
  size_t n = 0, nd = 0;
  for (auto& p : vit::param_table(cfg)) n += p.numel, nd += p.decay ? p.numel : 0;
  Buf<float> p(n), g(n), m(n), v(n);
  Buf<bf16> shadow(n);
  fill_uniform(p.p, n, 12, 0.05f);
  fill_uniform(g.p, n, 13, 0.01f);
  fill_uniform(m.p, n, 14, 0.001f);
  fill_uniform(v.p, n, 15, 1e-5f, 1e-5f);
  vit::cpu::AdamWParams hp;
  hp.step = 3;
  // validate a few elements (decayed and not) against vit::cpu::adamw_step
  const size_t idx[3] = {0, nd - 1, n - 1};
  std::vector<float> before[4];
  for (size_t i : idx) {
    before[0].push_back(fetch(p.p, i, 1)[0]), before[1].push_back(fetch(g.p, i, 1)[0]);
    before[2].push_back(fetch(m.p, i, 1)[0]), before[3].push_back(fetch(v.p, i, 1)[0]);
  }
  vit::cuda::adamw_step(p, g, m, v, n, nd, hp, nullptr, shadow);
  for (int k = 0; k < 3; ++k) {
    float rp = before[0][k], rg = before[1][k], rm = before[2][k], rv = before[3][k];
    vit::cpu::adamw_step<float>(&rp, &rg, &rm, &rv, 1, idx[k] < nd ? 1 : 0, hp);
    if (!close(fetch(p.p, idx[k], 1)[0], rp, 1e-7, 1e-5)) return st.SkipWithError("adamw validation failed");
  }
  double t = time_loop(st, nullptr, [&] { vit::cuda::adamw_step(p, g, m, v, n, nd, hp, nullptr, shadow); });
  // read p, g, m, v; write p, m, v (fp32) and the bf16 shadow: 30 bytes per parameter
  report_bandwidth(st, double(n) * 30, t);
  st.counters["params"] = double(n);
}
void BM_AdamW(benchmark::State& st) { guard(st, BM_AdamW_impl); }
BENCHMARK(BM_AdamW)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(20);

void BM_BiasGrad_impl(benchmark::State& st) {
  const int M = kRows, N = int(st.range(0));
  Buf<bf16> dy(size_t(M) * N);
  Buf<float> db(N), scratch(vit::cuda::bias_grad_scratch_floats(M, N));
  fill_uniform(dy.p, dy.n, 16, 1.f);
  VIT_CHECK(cudaMemset(db.p, 0, N * 4));
  vit::cuda::bias_grad<bf16>(dy, db, scratch, M, N, nullptr);
  std::vector<bf16> col(M);
  VIT_CHECK(cudaMemcpy2D(col.data(), 2, dy.p + 5, size_t(N) * 2, 2, M, cudaMemcpyDeviceToHost));
  double ref = 0;
  for (auto c : col) ref += float(c);
  if (!close(fetch(db.p, 5, 1)[0], ref, 1e-2, 1e-4)) return st.SkipWithError("bias_grad validation failed");
  double t = time_loop(st, nullptr, [&] { vit::cuda::bias_grad<bf16>(dy, db, scratch, M, N, nullptr); });
  report_bandwidth(st, double(M) * N * 2, t);
}
void BM_BiasGrad(benchmark::State& st) { guard(st, BM_BiasGrad_impl); }
BENCHMARK(BM_BiasGrad)->Arg(kD)->Arg(kMlp)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(30);

// The patch embedding at ViT-B/16 batch 256: 0 im2col (fp32 image -> bf16 columns), 1 the whole
// patch_embed_fwd (im2col + the 50,176 x 768 x 768 GEMM with bias), 2 the token embedding
// (class token + position, no dropout). The step profile's "fwd patch embed" row (7.7 ms on an
// H200) is these three; this shows which of them, in isolation, is slow.
void BM_PatchEmbed_impl(benchmark::State& st) {
  const int kind = int(st.range(0));
  const int B = 256, C = 3, S = 224, P = 16, G = S / P, Np = G * G, K = C * P * P;
  const size_t rows = size_t(B) * Np;
  Buf<float> img(size_t(B) * C * S * S), cls(kD), pos(size_t(Np + 1) * kD);
  Buf<bf16> cols(rows * K), w(size_t(kD) * K), b(kD), patches(rows * kD), tokens(size_t(B) * (Np + 1) * kD);
  fill_uniform(img.p, img.n, 21, 2.f);
  fill_uniform(w.p, w.n, 22, 0.05f);
  fill_uniform(b.p, b.n, 23, 0.1f);
  fill_uniform(cls.p, cls.n, 24, 1.f);
  fill_uniform(pos.p, pos.n, 25, 1.f);
  vit::cuda::GemmContext ctx;
  auto run = [&] {
    if (kind == 0)
      vit::cuda::im2col<float, bf16>(img, cols, B, C, S, S, P, nullptr);
    else if (kind == 1)
      vit::cuda::patch_embed_fwd<bf16>(ctx, img, w, b, cols, patches, vit::PatchShape{B, C, S, S, P, kD}, nullptr);
    else
      vit::cuda::embed_tokens_fwd<bf16>(patches, cls, pos, tokens, B, Np, kD, nullptr);
  };
  if (kind == 2)
    vit::cuda::patch_embed_fwd<bf16>(ctx, img, w, b, cols, patches, vit::PatchShape{B, C, S, S, P, kD}, nullptr);
  run();
  // Validate sampled elements against the definitions before timing.
  const size_t r = rows - 7;  // a late row: image 255, patch 189
  const int bb = int(r / Np), py = int(r % Np) / G, px = int(r % Np) % G;
  if (kind == 0) {
    auto got = fetch(cols.p, r * K, K);
    for (int col : {0, 17, K - 1}) {
      const int c = col / (P * P), ky = (col / P) % P, kx = col % P;
      const size_t src = ((size_t(bb) * C + c) * S + py * P + ky) * S + px * P + kx;
      if (!close(got[col], fetch(img.p, src, 1)[0], 1e-2, 1e-2)) return st.SkipWithError("im2col validation failed");
    }
  } else if (kind == 1) {
    auto x = fetch(cols.p, r * K, K), wr = fetch(w.p, size_t(5) * K, K);
    double ref = fetch(b.p, 5, 1)[0];
    for (int k = 0; k < K; ++k) ref += double(x[k]) * wr[k];
    if (!close(fetch(patches.p, r * kD + 5, 1)[0], ref, 5e-2, 2e-2))
      return st.SkipWithError("patch_embed validation failed");
  } else {
    const size_t t = 1 + size_t(r % Np), row = size_t(bb) * (Np + 1) + t;
    const double ref = double(fetch(patches.p, r * kD + 3, 1)[0]) + fetch(pos.p, t * kD + 3, 1)[0];
    if (!close(fetch(tokens.p, row * kD + 3, 1)[0], ref, 2e-2, 1e-2))
      return st.SkipWithError("embed_tokens validation failed");
  }
  double t = time_loop(st, nullptr, run);
  if (kind == 1) {
    report_flops(st, 2.0 * double(rows) * K * kD, t);
  } else {
    const double bytes =
        kind == 0 ? double(img.n) * 4 + double(cols.n) * 2 : double(patches.n) * 2 + double(tokens.n) * 2;
    report_bandwidth(st, bytes, t);
  }
  st.SetLabel(kind == 0 ? "im2col" : kind == 1 ? "im2col + GEMM + bias" : "embed tokens");
}
void BM_PatchEmbed(benchmark::State& st) { guard(st, BM_PatchEmbed_impl); }
BENCHMARK(BM_PatchEmbed)->DenseRange(0, 2)->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(20);

}  // namespace

int main(int argc, char** argv) { return vit::bench::run_main(argc, argv); }
