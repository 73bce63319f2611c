// data_on_device on the GPU: the augmentation kernel (kernels/cuda/augment.cu) against the CPU
// training augmentation (the same cases as its CPU emulation, tests/test_augment_emu.cpp), and a
// short training run that augments on the device against the same run with the CPU loader.
// Run: ctest -L gpu, or vitengine_gpu_tests --gtest_filter='AugmentCuda*'. Skips without a GPU.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/runtime/backend.h"
#include "engine/train/trainer.h"
#include "tests/augment_cases.h"
#include "tests/gpu/gpu_test_util.h"

namespace fs = std::filesystem;
using namespace vit;

namespace {

std::vector<float> run_on_device(const augtest::Case& c) {
  test::DevBuf<uint8_t> images(c.images.size());
  test::DevBuf<cuda::AugmentItem> items(c.items.size());
  test::DevBuf<float> out(c.items.size() * 3 * size_t(c.S) * c.S);  // poisoned: NaN where not written
  VIT_CHECK(cudaMemcpy(images, c.images.data(), c.images.size(), cudaMemcpyHostToDevice));
  VIT_CHECK(cudaMemcpy(items, c.items.data(), c.items.size() * sizeof(cuda::AugmentItem), cudaMemcpyHostToDevice));
  cuda::augment_batch(images, items, int(c.items.size()), c.S, cuda::augment_norm(c.mean, c.std), out, nullptr);
  return out.download();
}

// Random images and random draws of every preset the kernel takes; the batch must be the CPU's
// to the last pixel (tolerance in expect_same_batch: normalisation rounding only). 224: the
// model's size (7 column tiles); 37: a ragged tile and idle threads; 448: the largest side.
TEST(AugmentCuda, KernelMatchesCpuAugmentation) {
  VIT_REQUIRE_GPU();
  const uint64_t seed = test::fresh_seed();
  for (auto [S, B] : {std::pair{224, 20}, {37, 25}, {448, 5}}) {
    SCOPED_TRACE("S=" + std::to_string(S));
    const augtest::Case c = augtest::make_case(S, 4, B, seed + S);
    augtest::expect_same_batch(run_on_device(c), augtest::reference(c), c);
  }
}

// Kernel time for the shipped recipe's batch (256 images at 224 px), printed for the record.
TEST(AugmentCuda, KernelThroughput) {
  VIT_REQUIRE_GPU();
  const augtest::Case c = augtest::make_case(224, 64, 256, 7);
  test::DevBuf<uint8_t> images(c.images.size());
  test::DevBuf<cuda::AugmentItem> items(c.items.size());
  test::DevBuf<float> out(c.items.size() * 3 * 224 * 224);
  VIT_CHECK(cudaMemcpy(images, c.images.data(), c.images.size(), cudaMemcpyHostToDevice));
  VIT_CHECK(cudaMemcpy(items, c.items.data(), c.items.size() * sizeof(cuda::AugmentItem), cudaMemcpyHostToDevice));
  const auto norm = cuda::augment_norm(c.mean, c.std);
  cudaEvent_t a, b;
  VIT_CHECK(cudaEventCreate(&a));
  VIT_CHECK(cudaEventCreate(&b));
  cuda::augment_batch(images, items, 256, 224, norm, out, nullptr);  // warm-up
  VIT_CHECK(cudaEventRecord(a));
  const int reps = 20;
  for (int i = 0; i < reps; ++i) cuda::augment_batch(images, items, 256, 224, norm, out, nullptr);
  VIT_CHECK(cudaEventRecord(b));
  VIT_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  VIT_CHECK(cudaEventElapsedTime(&ms, a, b));
  std::printf("[ augment  ] 256 x 224 px: %.3f ms per batch, %.0f img/s\n", ms / reps, 256.0 * reps / (ms / 1000));
  VIT_CHECK(cudaEventDestroy(a));
  VIT_CHECK(cudaEventDestroy(b));
}

std::vector<double> step_losses(const fs::path& steps_csv) {
  std::ifstream f(steps_csv);
  std::string line;
  std::getline(f, line);  // step,epoch,loss,lr
  std::vector<double> loss;
  while (std::getline(f, line)) {
    std::stringstream ss(line);
    std::string cell;
    for (int k = 0; k < 3; ++k) std::getline(ss, cell, ',');
    loss.push_back(std::stod(cell));
  }
  return loss;
}

// The committed fixture, a tiny model, fp32, augment=light: the first steps with the images
// augmented on the GPU give the losses of the same run fed by the CPU loader. The batches are
// the same (same order, same draws, same pixels), so the losses agree to float rounding; 1e-4
// also admits a last-ulp difference in the normalisation on a -march=native build.
TEST(AugmentCuda, TrainingWithDataOnDeviceFollowsTheHostLoader) {
  VIT_REQUIRE_GPU();
  register_cuda_backend(&make_cuda_train_backend);
  const fs::path root = fs::temp_directory_path() / ("vit_gpu_dod_" + std::to_string(::getpid()));
  fs::remove_all(root);
  std::string log;
  auto run = [&](bool on_device) {
    TrainRequest r;
    // dim 64 / 2 heads: head dim 32, the smallest the fused attention takes
    r.config = TrainConfig::load(
        "", {"image_size=32", "patch=8", "dim=64", "depth=1", "heads=2", "mlp_dim=64", "batch_size=16", "epochs=2",
             "lr=1e-3", "threads=2", "log_every=1", "calibrate=false", "device=cuda", "precision=fp32", "augment=light",
             "max_steps=6", std::string("data_on_device=") + (on_device ? "true" : "false")});
    r.data = std::string(VITENGINE_SOURCE_DIR) + "/tests/fixtures/quickstart";
    r.out = (root / (on_device ? "device" : "host")).string();
    r.log = [&](const std::string& s) { log += s + "\n"; };
    train(r);
    return step_losses(fs::path(r.out) / "steps.csv");
  };
  const auto host = run(false), device = run(true);
  EXPECT_NE(log.find("data_on_device: 168 train images"), std::string::npos) << log;
  EXPECT_NE(log.find("img/s"), std::string::npos) << log;
  ASSERT_EQ(host.size(), 6u);
  ASSERT_EQ(device.size(), host.size());
  for (size_t i = 0; i < host.size(); ++i) {
    std::printf("[ loss     ] step %zu: host loader %.7f, data_on_device %.7f\n", i + 1, host[i], device[i]);
    EXPECT_NEAR(device[i], host[i], 1e-4 * std::max(1.0, std::fabs(host[i]))) << "step " << i + 1;
  }
  fs::remove_all(root);
}

}  // namespace
