// The fused attention CUDA kernels (kernels/cuda/attention.cu), run on the CPU through a small CUDA emulator
// (tests/emu/cuda_emu.h), against the same fp64 oracle and tolerances as the GPU test
// (tests/gpu/test_attention_cuda.cu). This is what checks the kernels' indexing, masking, tiling,
// pipelining and online softmax on machines without a GPU (CI); the GPU test then checks the real
// instructions. Small shapes only: every CUDA thread is a fiber, so this is ~1e5 times slower than a GPU.
// Compiles to nothing where the emulator cannot be built (tests/emu/cuda_emu.h).
#include "tests/emu/cuda_emu.h"
#ifdef VIT_CUDA_EMULATE
// the kernel source itself, compiled for the emulator (its code lands in namespace vit::cuda_emu)
#include "kernels/cuda/attention.cu"
#include "tests/attention_oracle.h"

namespace {

using namespace attn_test;

template <typename T>
Outputs run_emulated(const std::vector<float>& qkv, const std::vector<float>& dout, const Shape& sh) {
  const size_t n_qkv = qkv.size(), n_out = dout.size(), n_lse = (size_t)sh.B * sh.H * sh.N;
  std::vector<T> h_qkv(n_qkv), h_dout(n_out), out(n_out), dqkv(n_qkv);
  std::vector<float> lse(n_lse), scratch(n_lse);
  for (size_t i = 0; i < n_qkv; ++i) h_qkv[i] = T(qkv[i]);
  for (size_t i = 0; i < n_out; ++i) h_dout[i] = T(dout[i]);
  emu::poison(out);
  emu::poison(dqkv);
  emu::poison(lse);
  emu::poison(scratch);
  vit::cuda_emu::attention_fwd<T>(h_qkv.data(), out.data(), lse.data(), vit::AttnShape{sh.B, sh.N, sh.H, sh.Dh},
                                  nullptr);
  vit::cuda_emu::attention_bwd<T>(h_qkv.data(), out.data(), h_dout.data(), lse.data(), dqkv.data(), scratch.data(),
                                  vit::AttnShape{sh.B, sh.N, sh.H, sh.Dh}, nullptr);
  return {emu::to_double(out), emu::to_double(lse), emu::to_double(dqkv)};
}

class AttentionEmu : public ::testing::TestWithParam<Shape> {};

TEST_P(AttentionEmu, Fp32MatchesFp64Reference) {
  const Shape sh = GetParam();
  std::vector<float> qkv, dout;
  make_inputs(sh, false, qkv, dout);
  check_fp32("emu fp32", sh, run_emulated<float>(qkv, dout, sh), reference<double>(qkv, dout, sh, false));
}

// Both bf16 variants (kernels/cuda/attention_variant.cuh) on the same inputs.
TEST_P(AttentionEmu, Bf16MatchesFp64Reference) {
  const Shape sh = GetParam();
  std::vector<float> qkv, dout;
  make_inputs(sh, true, qkv, dout);
  const RefResult ref = reference<double>(qkv, dout, sh, false), lowp = reference<float>(qkv, dout, sh, true);
  for (auto v : {vit::cuda::AttentionVariant::kSimple, vit::cuda::AttentionVariant::kFast}) {
    SCOPED_TRACE(vit::cuda::attention_variant_name(v));
    vit::cuda_emu::set_attention_variant(v);
    check_bf16(v == vit::cuda::AttentionVariant::kFast ? "emu fast" : "emu simp", sh,
               run_emulated<__nv_bfloat16>(qkv, dout, sh), ref, lowp);
  }
  vit::cuda_emu::set_attention_variant(vit::cuda::AttentionVariant::kFast);
}

// Ragged N, where the kernels skip padding (kernels/cuda/attention.cu, "Padding"): 1 to 4 tiles of 64 rows,
// the last one holding 1, 5, 17, 63, 64, 1, 5, 1, 2 or 5 rows (N = 1, 5, 17, 63, 64, 65, 69, 129, 130,
// 197; 69 and 197 end like ViT's 197, with one live 8-wide n-tile), so that the live 8-wide n-tiles,
// 16-wide k-steps and 16-row warps of the last tile take every case. B*H >= 2 everywhere, so that the
// per-head rotation of the warps' row groups is exercised; N = 65 with B*H = 4 puts the one busy warp of
// the last 64-row block in each of the four warp slots. Dh = 32: the small-head instantiation.
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionEmu,
                         ::testing::Values(Shape{1, 1, 2, 64}, Shape{2, 5, 1, 64}, Shape{1, 17, 2, 64},
                                           Shape{1, 63, 2, 64}, Shape{2, 64, 1, 64}, Shape{2, 65, 2, 64},
                                           Shape{2, 69, 1, 32}, Shape{1, 129, 2, 64}, Shape{1, 130, 2, 32},
                                           Shape{1, 197, 2, 64}),
                         [](const ::testing::TestParamInfo<Shape>& i) { return shape_name(i.param); });

}  // namespace
#endif
