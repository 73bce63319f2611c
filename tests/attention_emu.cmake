# tests/test_attention_emu.cpp compiles kernels/cuda/attention.cu with the host compiler (CUDA emulation):
# the kernel source has `#pragma unroll` (unknown to GCC) and reads/writes bf16 tiles through 32-bit
# words as the GPU does, which needs -fno-strict-aliasing on the host.
set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/test_attention_emu.cpp PROPERTIES
  COMPILE_OPTIONS "-Wno-unknown-pragmas;-fno-strict-aliasing")
