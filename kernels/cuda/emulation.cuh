// The one switch between the GPU and the CUDA emulator. A kernel source that the emulator tests
// also compile on the host (tests/emu/cuda_emu.h defines VIT_CUDA_EMULATE first) opens
// `namespace vit::VIT_KERNEL_NS` and launches through VIT_LAUNCH: on nvcc that is vit::cuda and
// kernel<<<grid, threads, smem, stream>>>; under the emulator it is vit::cuda_emu and emu::launch,
// which runs every thread as a fiber. Nothing else in the kernel differs.
#pragma once
#include "kernels/cuda/cuda_check.cuh"

#ifdef VIT_CUDA_EMULATE
#define VIT_KERNEL_NS cuda_emu
#define VIT_LAUNCH(kernel, grid, threads, smem, stream, ...) \
  ::emu::launch(                                             \
      dim3(grid), dim3(threads), [&] { kernel(__VA_ARGS__); }, (smem))
#undef VIT_LAUNCH_CHECK
#define VIT_LAUNCH_CHECK() ((void)0)  // the emulator reports errors itself
#else
#define VIT_KERNEL_NS cuda
#define VIT_LAUNCH(kernel, grid, threads, smem, stream, ...) \
  kernel<<<(grid), (threads), (smem), (stream)>>>(__VA_ARGS__)
#endif
