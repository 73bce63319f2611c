// How close a CUDA op must come to the CPU reference, |got - ref| <= atol + rtol |ref|, one
// definition for the GPU op test (tests/gpu/test_ops_cuda.cu) and the CUDA-emulator tests, so that
// a kernel checked on the emulator meets the bound it is held to on a GPU.
//  - float: the GPU and the CPU do the same fp32 arithmetic in a different order (and with
//    fused multiply-adds); one reordering of a k-term sum moves the result by ~k * 2^-24
//    relative to the terms, so 1e-5 relative (1e-4 for sums over hundreds of terms) is tight.
//  - bf16: every stored activation is rounded to an 8-bit mantissa, i.e. a relative error of
//    up to 2^-9 ~ 0.2% per rounding; a value computed from rounded inputs and rounded again
//    can be ~0.5% off, so 1e-2 relative (with a matching absolute floor) is the bound.
// What an op keeps in fp32 whatever T is (LayerNorm's statistics, accumulated weight gradients)
// is held to Tol<float>.
#pragma once
#include <cuda_bf16.h>

namespace vit::test {

template <typename T>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double atol = 1e-5, rtol = 1e-5, sum_atol = 1e-4, sum_rtol = 1e-4;
};
template <>
struct Tol<__nv_bfloat16> {
  static constexpr double atol = 1e-2, rtol = 1e-2, sum_atol = 2e-2, sum_rtol = 1e-2;
};

}  // namespace vit::test
