// Sandbox: every LayerNorm forward launch shape studied, beyond the two the library keeps
// (kernels/cuda/layernorm.cuh: the default and the reference). Include it right after the kernel
// source itself (#include "kernels/cuda/layernorm.cu"): it instantiates the same launch templates
// with other (rows per warp, warps per block, persistent grid) choices. Every shape must give
// bitwise the library's output; bench_layernorm_shapes (GPU) and the emulator test
// (tests/test_layernorm_emu.cpp) check that, and the bench times each one.
#pragma once

namespace vit::VIT_KERNEL_NS {

struct LayerNormShape {
  const char* name;
  int rows, warps;  // rows a warp loads at once; warps per block
  bool persistent;  // grid = the blocks that fit at once; each warp walks row groups with a stride
};
// Each (rows, warps) is capped where a lane would hold more than 12 16-byte vectors of x (no
// spills): bf16 with C = 768 runs every shape as named; fp32 runs "rows4" as 2 rows.
inline constexpr LayerNormShape kLayerNormShapes[] = {
    {"rows1_warps4", 1, 4, false},        {"rows1_warps8", 1, 8, false},          {"rows1_warps16", 1, 16, false},
    {"rows2_warps4", 2, 4, false},        {"rows2_warps8", 2, 8, false},          {"rows2_warps16", 2, 16, false},
    {"rows4_warps4", 4, 4, false},        {"rows4_warps8", 4, 8, false},          {"rows4_warps16", 4, 16, false},
    {"persist_rows1_warps8", 1, 8, true}, {"persist_rows1_warps16", 1, 16, true}, {"persist_rows2_warps4", 2, 4, true},
    {"persist_rows2_warps8", 2, 8, true}, {"persist_rows2_warps16", 2, 16, true},
};
inline constexpr int kNumLayerNormShapes = int(sizeof(kLayerNormShapes) / sizeof(kLayerNormShapes[0]));

namespace sandbox_detail {
template <typename T, int NV, int ROWS, int WARPS>
void launch_rows(bool persistent, const FwdArgs& a) {
  if (persistent)
    launch_fwd_shape<T, NV, ROWS, WARPS, true>(a);
  else
    launch_fwd_shape<T, NV, ROWS, WARPS, false>(a);
}
template <typename T, int NV>
void launch(const LayerNormShape& s, const FwdArgs& a) {
  const int key = s.rows * 100 + s.warps;
  switch (key) {
    case 104:
      return launch_rows<T, NV, 1, 4>(s.persistent, a);
    case 108:
      return launch_rows<T, NV, 1, 8>(s.persistent, a);
    case 116:
      return launch_rows<T, NV, 1, 16>(s.persistent, a);
    case 204:
      return launch_rows<T, NV, 2, 4>(s.persistent, a);
    case 208:
      return launch_rows<T, NV, 2, 8>(s.persistent, a);
    case 216:
      return launch_rows<T, NV, 2, 16>(s.persistent, a);
    case 404:
      return launch_rows<T, NV, 4, 4>(s.persistent, a);
    case 408:
      return launch_rows<T, NV, 4, 8>(s.persistent, a);
    case 416:
      return launch_rows<T, NV, 4, 16>(s.persistent, a);
  }
  throw std::invalid_argument(std::string("layernorm sandbox: no launch for shape ") + s.name);
}
}  // namespace sandbox_detail

// layernorm_fwd with sandbox shape `i` (0 .. kNumLayerNormShapes - 1).
template <typename T>
void layernorm_fwd_shape(int i, const T* x, const float* w, const float* b, T* y, float* mean, float* rstd, int R,
                         int C, float eps, cudaStream_t stream) {
  if (i < 0 || i >= kNumLayerNormShapes)
    throw std::invalid_argument("layernorm sandbox: no shape " + std::to_string(i));
  if (R <= 0) return;
  const FwdArgs a = fwd_args(x, w, b, y, mean, rstd, R, C, eps, stream);
  with_nv(pick_nv<T>(C, "layernorm_fwd"),
          [&](auto nv) { sandbox_detail::launch<T, decltype(nv)::value>(kLayerNormShapes[i], a); });
  VIT_LAUNCH_CHECK();
}

}  // namespace vit::VIT_KERNEL_NS
