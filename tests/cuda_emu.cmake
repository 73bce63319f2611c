# The CUDA-emulator tests (tests/emu/cuda_emu.h) compile a kernel's .cu with the host compiler, which
# needs, for every one of them:
#   -Wno-unknown-pragmas   the kernel source has `#pragma unroll`, unknown to GCC;
#   -fno-strict-aliasing   the kernels read and write bf16 and float through 32-bit words, int4 and
#                          float4 registers, as the GPU does.
# and, per kernel, what its source asks for (the extra arguments).
function(vitengine_emu_test_source file)
  set(options -Wno-unknown-pragmas -fno-strict-aliasing ${ARGN})
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/${file} PROPERTIES COMPILE_OPTIONS "${options}")
endfunction()

vitengine_emu_test_source(test_attention_emu.cpp)
vitengine_emu_test_source(test_patch_embed_emu.cpp)
vitengine_emu_test_source(test_mae_emu.cpp)
# The augmentation must round as the CPU path (engine/data/augment.cpp): no fused multiply-add.
vitengine_emu_test_source(test_augment_emu.cpp -ffp-contract=off)
# The backward's per-lane arrays are written and read under the same `vi < nvec` guard, which GCC's
# -Wuninitialized cannot see through.
vitengine_emu_test_source(test_layernorm_emu.cpp -Wno-uninitialized -Wno-maybe-uninitialized)
