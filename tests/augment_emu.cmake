# tests/test_augment_emu.cpp compiles kernels/cuda/augment.cu with the host compiler (CUDA emulation); like
# engine/data/augment.cpp (see CMakeLists.txt), without fused multiply-add, so that it rounds as the CPU path.
set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/test_augment_emu.cpp PROPERTIES
  COMPILE_OPTIONS "-Wno-unknown-pragmas;-ffp-contract=off")
