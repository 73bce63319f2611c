// timm checkpoints: a timm VisionTransformer's state dict (tools/gen_timm_ckpts.py: timm itself,
// random weights) -> vitengine logits against timm's, in .pth and safetensors; export under timm's
// keys round-trips; timm features the engine lacks are refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "engine/model/vit.h"
#include "tests/weights_test_util.h"
#include "weights/safetensors.h"
#include "weights/torch_pth.h"
#include "weights/torchvision.h"

using namespace vit;
using namespace vit::testutil;

namespace {

nlohmann::json ref() { return read_json(data_path("timm_refs.json"))["timm_a"]; }

ViTConfig timm_config(const nlohmann::json& r) {
  ViTConfig c;
  c.name = "timm_ref";
  c.image_size = r["img_size"];
  c.patch = r["patch_size"];
  c.dim = r["embed_dim"];
  c.depth = r["depth"];
  c.heads = r["num_heads"];
  c.mlp_dim = int(std::lround(c.dim * r["mlp_ratio"].get<double>()));
  c.num_classes = r["num_classes"];
  return c;
}

// fp32 logits through another summation order than timm's: a few ulps; 1e-4 relative (the
// issue's bound) + 1e-5 absolute is far below what a wrong key mapping does (O(1)).
void expect_logits_close(const float* got, const std::vector<float>& want) {
  double maxabs = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-5 + 1e-4 * std::abs(want[i])) << "logit " << i;
    maxabs = std::max(maxabs, std::abs(double(got[i])));
  }
  EXPECT_GT(maxabs, 1e-3) << "logits are all (near) zero";
}

}  // namespace

TEST(Timm, CheckpointsMatchTimmLogits) {
  const auto r = ref();
  for (const std::string& file : {r["pth"].get<std::string>(), r["safetensors"].get<std::string>()}) {
    SCOPED_TRACE(file);
    ImportOptions opt;
    opt.heads = r["num_heads"];
    ViTConfig src;
    auto m = import_torchvision(data_path(file), opt, &src);
    EXPECT_TRUE(src.same_architecture(timm_config(r))) << src.to_string();
    const auto x = read_f32(data_path(r["inputs"]));
    const auto y = read_f32(data_path(r["logits"]));
    const int B = r["batch"];
    ASSERT_EQ(y.size(), size_t(B) * src.num_classes);
    expect_logits_close(m->forward(x.data(), B), y);
  }
}

TEST(Timm, ExportRoundTripsUnderTimmKeys) {
  const auto r = ref();
  const StateDict orig = read_safetensors(data_path(r["safetensors"]));  // timm's own key set and values
  ImportOptions opt;
  opt.heads = r["num_heads"];
  auto m = import_torchvision(data_path(r["pth"]), opt);
  const std::string out = (std::filesystem::temp_directory_path() / "vit_timm_export.safetensors").string();
  ModelMeta meta;
  meta.class_names = {"a", "b", "c", "d", "e"};
  export_safetensors(out, *m, meta, SafetensorsDtype::F32, KeyLayout::kTimm);
  std::map<std::string, std::string> md;
  const StateDict back = read_safetensors(out, &md);
  ASSERT_EQ(back.size(), orig.size());
  for (const auto& [k, t] : orig) {
    auto it = back.find(k);
    ASSERT_NE(it, back.end()) << "exported file lacks timm key " << k;
    EXPECT_EQ(it->second.shape, t.shape) << k;
    EXPECT_EQ(it->second.data, t.data) << k << " differs from timm's tensor";
  }
  EXPECT_EQ(nlohmann::json::parse(md.at("class_names")), nlohmann::json(meta.class_names));
  // ... and reads back into the same model.
  auto again = import_torchvision(out, opt);
  ASSERT_EQ(again->num_params(), m->num_params());
  EXPECT_TRUE(std::equal(m->param_data(), m->param_data() + m->num_params(), again->param_data()));
  std::filesystem::remove(out);
}

TEST(Timm, InitForFineTuningReplacesTheHead) {
  const auto r = ref();
  ViTConfig target = timm_config(r);
  target.num_classes = 7;
  LoadedModel lm = load_init(data_path(r["pth"]), target);
  EXPECT_EQ(lm.model->config().num_classes, 7);
  EXPECT_TRUE(lm.meta.class_names.empty());  // the new head's classes come from the data
}

// A backbone saved without a head (timm's num_classes=0; MAE's and DINO's encoders are saved so)
// stopped convert and train --init at "missing key 'heads.head.weight'", --num-classes or not.
// With the classes given it gets a zero head, every backbone tensor the file's; without, the error
// says it is a backbone and what to give.
TEST(Timm, HeadlessBackboneGetsAZeroHeadOfTheGivenClasses) {
  const auto r = ref();
  StateDict sd = read_safetensors(data_path(r["safetensors"]));
  sd.erase("head.weight");
  sd.erase("head.bias");
  const std::string path = (std::filesystem::temp_directory_path() / "vit_timm_headless.safetensors").string();
  write_safetensors(path, sd);
  ImportOptions opt;
  opt.heads = r["num_heads"];
  const std::string e = error_of([&] { import_torchvision(path, opt); });
  EXPECT_NE(e.find("no classification head"), std::string::npos) << e;
  EXPECT_NE(e.find("--num-classes"), std::string::npos) << e;
  opt.num_classes = 4;
  ViTConfig target = timm_config(r);
  target.num_classes = 7;
  LoadedModel init = load_init(path, target);
  EXPECT_TRUE(init.meta.class_names.empty());  // the new head's classes come from the data
  for (const auto& [model, classes] : {std::pair{import_torchvision(path, opt), 4}, {std::move(init.model), 7}}) {
    const StateDict got = timm_state_dict_from_vit(*model);
    ASSERT_EQ(got.size(), sd.size() + 2);
    for (const auto& [k, t] : sd) EXPECT_EQ(got.at(k).data, t.data) << k;
    EXPECT_EQ(got.at("head.weight").shape, (std::vector<int64_t>{classes, r["embed_dim"].get<int64_t>()}));
    EXPECT_EQ(got.at("head.weight").data, std::vector<float>(size_t(classes) * r["embed_dim"].get<size_t>(), 0.0f));
    EXPECT_EQ(got.at("head.bias").data, std::vector<float>(size_t(classes), 0.0f));
  }
  std::filesystem::remove(path);
}

TEST(Timm, FeaturesTheEngineLacksAreRefusedByName) {
  const auto r = ref();
  StateDict sd = read_pth(data_path(r["pth"]));
  sd["fc_norm.weight"] = HostTensor{{48}, std::vector<float>(48, 1.0f)};
  std::string e = error_of([&] { normalize_torchvision_keys(sd); });
  EXPECT_NE(e.find("fc_norm"), std::string::npos) << e;
  EXPECT_NE(e.find("class token"), std::string::npos) << e;
  // An unknown extra key is named by the strict check.
  StateDict sd2 = read_pth(data_path(r["pth"]));
  sd2["blocks.0.attn.extra"] = HostTensor{{1}, {0.0f}};
  normalize_torchvision_keys(sd2);
  ImportOptions opt;
  opt.heads = r["num_heads"];
  e = error_of([&] { check_state_dict(sd2, timm_config(r), "x"); });
  EXPECT_NE(e.find("blocks.0.attn.extra"), std::string::npos) << e;
}
