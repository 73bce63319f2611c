// Converted torchvision checkpoints on the GPU (label gpu): the logits of vit::ViTCuda
// with imported weights against the logits PyTorch recorded, so that the importer and
// the CUDA model are checked against an independent reference, not against each other.
// Skips without a device. tools/gpu_check.sh sets VIT_TEST_DATA (the build folder is made
// on another machine). The full-size vit_b_16 case runs when VITENGINE_VITB16_DIR holds
// the files tools/check_vit_b16_import.py writes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/model/vit_cuda.h"
#include "weights/checkpoint.h"
#include "weights/state_dict.h"
#include "weights/torchvision.h"

namespace {

std::string data_dir() {
  const char* e = std::getenv("VIT_TEST_DATA");
  return e ? e : VITENGINE_TEST_DATA;
}

std::vector<float> read_f32(const std::string& path) {
  auto b = vit::read_file_bytes(path);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

// Worst |diff| relative to the logit scale; the caller states its tolerance.
double rel_err(const float* got, const std::vector<float>& ref) {
  double d = 0, s = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    d = std::max(d, std::abs(double(got[i]) - ref[i]));
    s = std::max(s, std::abs(double(ref[i])));
  }
  return d / std::max(s, 1e-12);
}

}  // namespace

TEST(WeightsCuda, ConvertedTorchvisionLogitsOnGpu) {
  if (!vit::cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  std::ifstream f(data_dir() + "/torchvision_refs.json");
  auto refs = nlohmann::json::parse(f);
  int ran = 0;
  for (const char* name : {"tv_a", "tv_b"}) {
    auto r = refs[name];
    vit::ImportOptions opt;
    opt.heads = r["num_heads"];
    auto host = vit::import_torchvision(data_dir() + "/" + r["pth"].get<std::string>(), opt);
    const int dh = host->config().head_dim();
    if (dh != 32 && dh != 64) {  // the fused attention kernel takes head dim 32 or 64 only
      std::printf("    %s: head dim %d is not supported on the GPU path, not checked\n", name, dh);
      continue;
    }
    ran++;
    auto x = read_f32(data_dir() + "/" + r["inputs"].get<std::string>());
    auto y = read_f32(data_dir() + "/" + r["logits"].get<std::string>());
    const int B = r["batch"];
    for (auto prec : {vit::Precision::FP32, vit::Precision::BF16}) {
      vit::ViTCuda m(host->config(), prec, B);
      m.upload(*host);
      double e = rel_err(m.forward(x.data(), B), y);
      // FP32 (no TF32): summation order only, ~1e-6 of the scale; 1e-4 leaves margin.
      // BF16 weights and activations: 2^-8 per rounding through 1-2 small blocks; 5e-2.
      double tol = prec == vit::Precision::FP32 ? 1e-4 : 5e-2;
      std::printf("    %s %s: max |diff| / max |logit| = %.3g\n", name, prec == vit::Precision::FP32 ? "fp32" : "bf16",
                  e);
      EXPECT_LE(e, tol) << name;
    }
  }
  if (ran == 0) GTEST_SKIP() << "every reference model has a head dim the GPU attention does not take";
}

TEST(WeightsCuda, FullSizeVitB16GpuAndCpuMatchPyTorch) {
  if (!vit::cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const char* dir = std::getenv("VITENGINE_VITB16_DIR");
  if (!dir) GTEST_SKIP() << "driven by tools/check_vit_b16_import.py";
  std::string d = dir;
  auto host = vit::import_torchvision(d + "/vit_b_16_random.pth", vit::ImportOptions{});
  auto x = read_f32(d + "/inputs.f32");
  auto y = read_f32(d + "/logits.f32");
  const int B = int(x.size() / (3 * 224 * 224));
  double ecpu = rel_err(host->forward(x.data(), B), y);
  vit::ViTCuda m(host->config(), vit::Precision::FP32, B);
  m.upload(*host);
  double egpu = rel_err(m.forward(x.data(), B), y);
  std::printf("    vit_b_16: cpu %.3g, gpu fp32 %.3g (max |diff| / max |logit|)\n", ecpu, egpu);
  // 12 layers of fp32 in another summation order: ~1e-5 of the scale; 1e-4 leaves margin.
  EXPECT_LE(ecpu, 1e-4);
  EXPECT_LE(egpu, 1e-4);
}
