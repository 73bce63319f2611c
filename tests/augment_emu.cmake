# tests/test_augment_emu.cpp compiles kernels/augment.cu with the host compiler (CUDA emulation); like
# engine/augment.cpp (see CMakeLists.txt), without fused multiply-add, so that it rounds as the CPU path.
set_source_files_properties(${CMAKE_SOURCE_DIR}/tests/test_augment_emu.cpp PROPERTIES
  COMPILE_OPTIONS "-Wno-unknown-pragmas;-ffp-contract=off")
