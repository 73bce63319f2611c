# tests/test_patch_embed_emu.cpp compiles kernels/cuda/patch_embed_kernels.cuh with the host compiler (CUDA
# emulation): `#pragma unroll` is unknown to GCC, and im2col reads the float image through float4,
# which needs -fno-strict-aliasing on the host.
set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/test_patch_embed_emu.cpp PROPERTIES
  COMPILE_OPTIONS "-Wno-unknown-pragmas;-fno-strict-aliasing")
