# tests/test_layernorm_emu.cpp compiles kernels/cuda/layernorm.cu with the host compiler (CUDA emulation):
# `#pragma unroll` is unknown to GCC and the kernel reads bf16 through int4 registers as the GPU does,
# which needs -fno-strict-aliasing on the host. The backward's per-lane arrays are written and read
# under the same `vi < nvec` guard, which GCC's -Wuninitialized cannot see through.
set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/test_layernorm_emu.cpp PROPERTIES
  COMPILE_OPTIONS "-Wno-unknown-pragmas;-fno-strict-aliasing;-Wno-uninitialized;-Wno-maybe-uninitialized")
