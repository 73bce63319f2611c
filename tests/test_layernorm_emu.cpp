// The LayerNorm CUDA kernels (kernels/cuda/layernorm.cu), every forward launch shape
// (vit::cuda::LayerNormFwdVariant) and the backward, run on the CPU through the CUDA emulator
// (tests/emu/cuda_emu.h) against the fp64 CPU reference vit::cpu::layernorm_fwd/bwd. This is what
// checks the row-group indexing, the ragged last group, the persistent grid stride and its prefetch
// buffers, the interleaved butterflies and the per-lane statistics stores on machines without a GPU;
// tests/gpu/test_ops_cuda.cu (OpsCuda*LayerNorm*) runs the same variants on the real instructions.
// Also checked: every variant writes bitwise the same y, mean and rstd (the variants differ only in
// launch shape, so changing kLayerNormFwdDefault must not change a bit of any result).
// Compiles to nothing where the emulator cannot be built (tests/emu/cuda_emu.h).
#include "tests/emu/cuda_emu.h"
#ifdef VIT_CUDA_EMULATE
// the kernel source itself, compiled for the emulator (its code lands in namespace vit::cuda_emu)
#include "kernels/cuda/layernorm.cu"
// the launch shapes under study, instantiated from the same source
#include "bench/sandbox/layernorm_fwd_shapes.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/emu/expect_close.h"
#include "tests/op_tolerance.h"

namespace {

using bf16 = __nv_bfloat16;
using vit::cuda::LayerNormFwdVariant;
using vit::test::Tol;

// Random normals rounded to T, as T and as double (the reference sees exactly the kernel's inputs).
template <typename T>
void make(std::mt19937& g, size_t n, float mean, float sd, std::vector<T>& t, std::vector<double>& d) {
  std::normal_distribution<float> dist(mean, sd);
  t.resize(n);
  d.resize(n);
  for (size_t i = 0; i < n; ++i) {
    t[i] = T(dist(g));
    d[i] = emu::to_double(t[i]);
  }
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

struct Shape {
  int R, C;
};

template <typename T>
void check_layernorm(const Shape& s) {
  const int R = s.R, C = s.C;
  const size_t n = size_t(R) * C;
  std::mt19937 g(1234 + R * 7 + C);
  std::vector<T> x, dy, res;
  std::vector<double> xd, dyd, resd, wd, bd, dw0d, db0d;
  std::vector<float> w(C), b(C), dw0(C), db0(C);
  make(g, n, 2.f, 0.5f, x, xd);
  make(g, n, 0.f, 1.f, dy, dyd);
  make(g, n, 0.f, 1.f, res, resd);
  make(g, C, 0.2f, 1.f, w, wd);
  make(g, C, 0.f, 0.1f, b, bd);
  make(g, C, 0.f, 1.f, dw0, dw0d);
  make(g, C, 0.f, 1.f, db0, db0d);

  // fp64 reference
  std::vector<double> ry(n), rm(R), rr(R), rdx(n), rdw = dw0d, rdb = db0d;
  vit::cpu::layernorm_fwd<double>(xd.data(), wd.data(), bd.data(), ry.data(), rm.data(), rr.data(), R, C, 1e-6);
  vit::cpu::layernorm_bwd<double>(xd.data(), wd.data(), rm.data(), rr.data(), dyd.data(), rdx.data(), rdw.data(),
                                  rdb.data(), R, C);

  // forward, the library's two launch shapes and every sandbox shape; the first one's outputs feed
  // the backward and are the bitwise yardstick
  struct Launch {
    std::string name;
    std::function<void(T* y, float* mean, float* rstd)> run;
  };
  std::vector<Launch> shapes;
  for (int vi = 0; vi < int(LayerNormFwdVariant::kCount); ++vi)
    shapes.push_back({std::string(vit::cuda_emu::layernorm_fwd_variant_name(LayerNormFwdVariant(vi))),
                      [&, vi](T* y, float* m, float* r) {
                        vit::cuda_emu::layernorm_fwd_variant<T>(LayerNormFwdVariant(vi), x.data(), w.data(), b.data(),
                                                                y, m, r, R, C, 1e-6f, nullptr);
                      }});
  for (int si = 0; si < vit::cuda_emu::kNumLayerNormShapes; ++si)
    shapes.push_back(
        {std::string("sandbox ") + vit::cuda_emu::kLayerNormShapes[si].name, [&, si](T* y, float* m, float* r) {
           vit::cuda_emu::layernorm_fwd_shape<T>(si, x.data(), w.data(), b.data(), y, m, r, R, C, 1e-6f, nullptr);
         }});
  std::vector<T> y0;
  std::vector<float> m0, r0;
  for (size_t vi = 0; vi < shapes.size(); ++vi) {
    const std::string tag = shapes[vi].name + " R=" + std::to_string(R) + " C=" + std::to_string(C);
    std::vector<T> y(n);
    std::vector<float> mean(R), rstd(R);
    emu::poison(y), emu::poison(mean), emu::poison(rstd);
    shapes[vi].run(y.data(), mean.data(), rstd.data());
    emu::expect_close(y, ry, Tol<T>::atol, Tol<T>::rtol, "y " + tag);
    emu::expect_close(mean, rm, Tol<float>::atol, Tol<float>::rtol, "mean " + tag);
    emu::expect_close(rstd, rr, Tol<float>::atol, Tol<float>::rtol, "rstd " + tag);
    if (vi == 0) {
      y0 = y, m0 = mean, r0 = rstd;
    } else {
      EXPECT_TRUE(same_bits(y, y0) && same_bits(mean, m0) && same_bits(rstd, r0))
          << tag << ": output differs in bits from " << shapes[0].name;
    }
    // inference: mean/rstd may be null
    std::vector<T> y2(n);
    emu::poison(y2);
    shapes[vi].run(y2.data(), nullptr, nullptr);
    EXPECT_TRUE(same_bits(y2, y)) << tag << ": y without mean/rstd differs";
  }

  // backward, from the kernel's own statistics; dw/db accumulate into dw0/db0
  const std::string tag = " R=" + std::to_string(R) + " C=" + std::to_string(C);
  std::vector<float> scratch(vit::cuda_emu::layernorm_bwd_scratch_floats(R, C)), gw = dw0, gb = db0;
  std::vector<T> dx(n);
  emu::poison(dx), emu::poison(scratch);
  vit::cuda_emu::layernorm_bwd<T>(x.data(), w.data(), m0.data(), r0.data(), dy.data(), dx.data(), gw.data(), gb.data(),
                                  scratch.data(), R, C, nullptr, nullptr);
  emu::expect_close(dx, rdx, Tol<T>::atol, Tol<T>::rtol, "dx" + tag);
  emu::expect_close(gw, rdw, Tol<float>::sum_atol, Tol<float>::sum_rtol, "dw" + tag);
  emu::expect_close(gb, rdb, Tol<float>::sum_atol, Tol<float>::sum_rtol, "db" + tag);
  // the fused residual, in place on the residual buffer
  std::vector<T> dxr = res;
  std::vector<float> gw2 = dw0, gb2 = db0;
  vit::cuda_emu::layernorm_bwd<T>(x.data(), w.data(), m0.data(), r0.data(), dy.data(), dxr.data(), gw2.data(),
                                  gb2.data(), scratch.data(), R, C, nullptr, dxr.data());
  std::vector<double> rdxr(n);
  for (size_t i = 0; i < n; ++i) rdxr[i] = rdx[i] + resd[i];
  emu::expect_close(dxr, rdxr, Tol<T>::atol, Tol<T>::rtol, "dx + residual" + tag);
}

class LayerNormEmu : public ::testing::TestWithParam<Shape> {};

TEST_P(LayerNormEmu, Fp32MatchesFp64Reference) { check_layernorm<float>(GetParam()); }
TEST_P(LayerNormEmu, Bf16MatchesFp64Reference) { check_layernorm<bf16>(GetParam()); }

// C = 768 (ViT-B): full lanes, 3 (bf16) / 6 (fp32) vectors per lane. Rows 1, 7, 33, 197: fewer rows
// than one group, ragged last groups for rows 2 and 4, a partial last block, ViT's 197 tokens.
// C = 200: 25 (bf16) / 50 (fp32) vectors, so some lanes hold no vector of the last slot.
INSTANTIATE_TEST_SUITE_P(Shapes, LayerNormEmu,
                         ::testing::Values(Shape{1, 768}, Shape{7, 768}, Shape{33, 768}, Shape{197, 768},
                                           Shape{7, 200}),
                         [](const ::testing::TestParamInfo<Shape>& i) {
                           return "R" + std::to_string(i.param.R) + "_C" + std::to_string(i.param.C);
                         });

}  // namespace
#endif
