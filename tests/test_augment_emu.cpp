// The data_on_device augmentation kernel (kernels/cuda/augment.cu), run on the CPU through the CUDA
// emulator (tests/emu/cuda_emu.h), against the CPU training augmentation (tests/augment_cases.h):
// what checks the kernel's indexing (one thread per row, the 32-column tiles, the grey-level
// reduction, the CHW stores) in CI, which has no GPU. The GPU test runs the same cases on the
// device (tests/gpu/test_augment_cuda.cu). Compiles to nothing where the emulator cannot be built.
#include "tests/emu/cuda_emu.h"
#ifdef VIT_CUDA_EMULATE
// the kernel source itself, compiled for the emulator (its code lands in namespace vit::cuda_emu)
#include "kernels/cuda/augment.cu"
#include "tests/augment_cases.h"

namespace {

std::vector<float> run_emulated(const augtest::Case& c) {
  std::vector<float> out(c.items.size() * 3 * size_t(c.S) * c.S);
  emu::poison(out);
  vit::cuda_emu::augment_batch(c.images.data(), c.items.data(), int(c.items.size()), c.S,
                               vit::cuda::augment_norm(c.mean, c.std), out.data(), nullptr);
  return out;
}

// 37: two column tiles, the second ragged, and a block of 64 threads with 27 idle rows;
// 32: exactly one tile and one warp; 5: smaller than a tile.
TEST(AugmentEmu, KernelMatchesCpuAugmentation) {
  for (int S : {37, 32, 5}) {
    SCOPED_TRACE("S=" + std::to_string(S));
    const augtest::Case c = augtest::make_case(S, 3, 10, 1234 + S);
    augtest::expect_same_batch(run_emulated(c), augtest::reference(c), c);
  }
}

}  // namespace
#endif
