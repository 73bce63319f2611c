// Model-level weights tests: torchvision checkpoints -> vitengine logits against the
// logits PyTorch computed (tools/gen_torchvision_ckpts.py), position-embedding
// interpolation against torchvision's interpolate_embeddings, head replacement, the
// .vit format (round trip, bf16, every refusal) and load_init for fine-tuning.
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "engine/model/vit.h"
#include "tests/weights_test_util.h"
#include "weights/checkpoint.h"
#include "weights/torch_pth.h"
#include "weights/torchvision.h"

using namespace vit;
using namespace vit::testutil;

namespace {

// fp32 logits through a different summation order than PyTorch's (Eigen GEMM vs MKL /
// ATen): errors are a few ulps of the running sums; 1e-4 relative + 1e-5 absolute is
// ~100x that, and far below any mapping mistake (those change logits by O(1)).
void expect_close(const float* got, const std::vector<float>& ref, double rtol = 1e-4, double atol = 1e-5) {
  double maxdiff = 0, maxabs = 0;
  size_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double d = std::abs(double(got[i]) - ref[i]);
    maxdiff = std::max(maxdiff, d);
    maxabs = std::max(maxabs, std::abs(double(got[i])));
    if (d > atol + rtol * std::abs(ref[i])) {
      if (bad < 5) ADD_FAILURE() << "element " << i << ": got " << got[i] << " expected " << ref[i];
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0u) << "max |diff| " << maxdiff;
  std::printf("    max |diff| %.3g over %zu values (max |value| %.3g)\n", maxdiff, ref.size(), maxabs);
  EXPECT_GT(maxabs, 1e-3) << "output is all (near) zero";  // an unwritten buffer must not pass
}

ViTConfig ref_config(const nlohmann::json& r) {
  ViTConfig c;
  c.name = "tv_ref";
  c.image_size = r["image_size"];
  c.patch = r["patch_size"];
  c.dim = r["hidden_dim"];
  c.depth = r["num_layers"];
  c.heads = r["num_heads"];
  c.mlp_dim = r["mlp_dim"];
  c.num_classes = r["num_classes"];
  return c;
}

std::vector<float> params_of(const ViT& m) {
  return std::vector<float>(m.param_data(), m.param_data() + m.num_params());
}

nlohmann::json refs() { return read_json(data_path("torchvision_refs.json")); }

}  // namespace

TEST(Torchvision, ConvertedCheckpointsMatchPyTorchLogits) {
  for (const char* name : {"tv_a", "tv_b"}) {
    for (const char* ext : {".pth", ".safetensors"}) {
      SCOPED_TRACE(std::string(name) + ext);
      auto r = refs()[name];
      ImportOptions opt;
      opt.heads = r["num_heads"];
      ViTConfig src;
      auto m = import_torchvision(data_path(std::string(name) + ext), opt, &src);
      ViTConfig want = ref_config(r);
      EXPECT_TRUE(src.same_architecture(want)) << src.to_string() << " vs " << want.to_string();
      auto x = read_f32(data_path(r["inputs"]));
      auto y = read_f32(data_path(r["logits"]));
      const int B = r["batch"];
      ASSERT_EQ(y.size(), size_t(B) * want.num_classes);
      expect_close(m->forward(x.data(), B), y);
    }
  }
}

TEST(Torchvision, InferredConfigAndDefaultHeads) {
  StateDict sd = read_pth(data_path("tv_b.pth"));
  ViTConfig c = infer_torchvision_config(sd);  // dim 64 -> 64-wide heads -> 1 head
  EXPECT_EQ(c.heads, 1);
  EXPECT_EQ(c.image_size, 48);
  EXPECT_EQ(c.patch, 16);
  EXPECT_EQ(c.mlp_dim, 128);
  EXPECT_EQ(c.num_classes, 14);
  EXPECT_EQ(c.depth, 1);
  StateDict a = read_pth(data_path("tv_a.pth"));
  std::string e = error_of([&] { infer_torchvision_config(a); });  // dim 48: no default
  EXPECT_NE(e.find("--heads"), std::string::npos) << e;
}

TEST(Torchvision, KeyAndShapeErrorsNameTheKey) {
  const StateDict base = read_pth(data_path("tv_a.pth"));
  const ViTConfig cfg = infer_torchvision_config(base, 3);
  {
    StateDict sd = base;
    sd.erase("encoder.layers.encoder_layer_1.ln_2.bias");
    std::string e = error_of([&] { vit_from_state_dict(sd, cfg, "f.pth"); });
    EXPECT_NE(e.find("missing keys: encoder.layers.encoder_layer_1.ln_2.bias"), std::string::npos) << e;
  }
  {
    StateDict sd = base;
    sd["heads.pre_logits.weight"] = HostTensor{{48, 48}, std::vector<float>(48 * 48)};
    std::string e = error_of([&] { vit_from_state_dict(sd, cfg, "f.pth"); });
    EXPECT_NE(e.find("unexpected keys: heads.pre_logits.weight"), std::string::npos) << e;
  }
  {
    StateDict sd = base;
    sd["encoder.ln.bias"] = HostTensor{{47}, std::vector<float>(47)};
    std::string e = error_of([&] { vit_from_state_dict(sd, cfg, "f.pth"); });
    EXPECT_NE(e.find("encoder.ln.bias (47,) (expected (48,))"), std::string::npos) << e;
  }
  {
    StateDict sd = base;
    sd.erase("conv_proj.weight");
    std::string e = error_of([&] { infer_torchvision_config(sd, 3); });
    EXPECT_NE(e.find("conv_proj.weight"), std::string::npos) << e;
  }
}

// A checkpoint with a NaN (a diverged run's) converted without a word, and every prediction of the
// model was "nan%". Import refuses it, naming the tensor, the value and its place; an infinity too.
TEST(Torchvision, NonFiniteWeightsAreRefusedNamingTheTensor) {
  const StateDict base = read_pth(data_path("tv_a.pth"));
  const std::string path = temp_path("nonfinite.safetensors");
  ImportOptions opt;
  opt.heads = 3;
  for (const auto& [value, said] : {std::pair{std::nanf(""), "NaN"}, {-INFINITY, "an infinity"}}) {
    StateDict sd = base;
    sd.at("encoder.layers.encoder_layer_1.mlp.3.weight").data.at(17) = value;
    write_safetensors(path, sd);
    const std::string e = error_of([&] { import_torchvision(path, opt); });
    EXPECT_NE(e.find("'encoder.layers.encoder_layer_1.mlp.3.weight' holds " + std::string(said) + " at element 17"),
              std::string::npos)
        << e;
    EXPECT_NE(e.find(path), std::string::npos) << e;
  }
  std::remove(path.c_str());
}

TEST(Torchvision, LegacyMlpNamesAreAccepted) {
  // torchvision < 0.13 called the MLP layers mlp.linear_1 / mlp.linear_2.
  StateDict sd = read_pth(data_path("tv_a.pth"));
  StateDict old;
  for (auto& [k, v] : sd) {
    std::string key = k;
    for (auto [a, b] :
         {std::pair<std::string, std::string>{".mlp.0.", ".mlp.linear_1."}, {".mlp.3.", ".mlp.linear_2."}}) {
      size_t p = key.find(a);
      if (p != std::string::npos) key.replace(p, a.size(), b);
    }
    old[key] = v;
  }
  ASSERT_TRUE(old.count("encoder.layers.encoder_layer_0.mlp.linear_1.weight"));
  normalize_torchvision_keys(old);
  ViTConfig cfg = infer_torchvision_config(old, 3);
  auto m = vit_from_state_dict(old, cfg, "old");
  auto ref = vit_from_state_dict(sd, cfg, "new");
  EXPECT_EQ(params_of(*m), params_of(*ref));
}

// A model trained under DistributedDataParallel saves every key as "module.<key>", a Lightning module
// as "model.<key>" (its attribute's name), or both; convert said "missing key 'conv_proj.weight'".
// timm's load_checkpoint drops "module.", and import drops any such path: the torchvision model gives
// PyTorch's logits, the timm one holds the file's tensors under their names.
TEST(Torchvision, WrapperPrefixIsDropped) {
  const std::string path = temp_path("ddp.safetensors");
  ImportOptions opt;
  opt.heads = 3;
  auto with_prefix = [&](const std::string& file, const std::string& prefix) {
    StateDict wrapped;
    for (const auto& [k, t] : read_safetensors(data_path(file))) wrapped.emplace(prefix + k, t);
    write_safetensors(path, wrapped);
    return import_torchvision(path, opt);
  };
  const auto r = refs()["tv_a"];
  auto x = read_f32(data_path(r["inputs"]));
  const StateDict timm = read_safetensors(data_path("timm_a.safetensors"));
  for (const char* prefix : {"module.", "model.", "model.module."}) {
    SCOPED_TRACE(prefix);
    expect_close(with_prefix("tv_a.safetensors", prefix)->forward(x.data(), r["batch"]),
                 read_f32(data_path(r["logits"])));
    const StateDict got = timm_state_dict_from_vit(*with_prefix("timm_a.safetensors", prefix));
    ASSERT_EQ(got.size(), timm.size());
    for (const auto& [k, t] : timm) EXPECT_EQ(got.at(k).data, t.data) << k;
  }
  std::remove(path.c_str());
}

TEST(Torchvision, PosEmbeddingInterpolationMatchesTorchvision) {
  // tv_a (32 px, grid 4) fine-tuned at 48 px (grid 6): torchvision's own bicubic
  // interpolate_embeddings wrote the expected embedding and logits.
  auto r = refs()["tv_a_img48"];
  ViTConfig target = ref_config(r);
  LoadedModel lm = load_init(data_path("tv_a.pth"), target);
  ASSERT_TRUE(lm.model->config().same_architecture(target));
  auto pos = read_f32(data_path(r["pos"]));
  // float32 bicubic in ATen vs double weights here: 1e-5 covers the rounding of a
  // 16-tap sum of O(1) values; a wrong tap or weight is off by >1e-2.
  expect_close(lm.model->param_ptr("encoder.pos_embedding"), pos, 1e-5, 1e-5);
  auto x = read_f32(data_path(r["inputs"]));
  expect_close(lm.model->forward(x.data(), r["batch"]), read_f32(data_path(r["logits"])));
  // Same grid: interpolation is the identity (align_corners maps grid points onto themselves).
  std::vector<float> src(17 * 5), dst(17 * 5);
  for (size_t i = 0; i < src.size(); ++i) src[i] = float(std::sin(double(i)));
  interpolate_pos_embedding(src.data(), 4, dst.data(), 4, 5);
  for (size_t i = 0; i < src.size(); ++i) EXPECT_NEAR(dst[i], src[i], 1e-6);
}

TEST(Torchvision, HeadReplacementIsZeroAndKeepsBackbone) {
  auto r = refs()["tv_a"];
  ViTConfig target = ref_config(r);
  target.num_classes = 14;
  LoadedModel lm = load_init(data_path("tv_a.pth"), target);
  ViT& m = *lm.model;
  EXPECT_EQ(m.config().num_classes, 14);
  EXPECT_TRUE(lm.meta.class_names.empty());
  const auto& hw = m.param("heads.head.weight");
  for (size_t i = 0; i < hw.numel; ++i) ASSERT_EQ(m.param_data()[hw.offset + i], 0.0f);
  ImportOptions opt;
  opt.heads = 3;
  auto ref = import_torchvision(data_path("tv_a.pth"), opt);
  for (const auto& p : ref->params()) {
    if (p.name.rfind("heads.", 0) == 0) continue;
    const float* a = ref->param_data() + p.offset;
    const float* b = m.param_data() + m.param(p.name).offset;
    ASSERT_EQ(0, std::memcmp(a, b, p.numel * 4)) << p.name;
  }
  // Same through the CLI-facing import with --num-classes.
  opt.num_classes = 14;
  auto viaimport = import_torchvision(data_path("tv_a.pth"), opt);
  EXPECT_EQ(params_of(*viaimport), params_of(m));
}

TEST(Torchvision, LoadInitRefusesOtherBackbones) {
  ViTConfig target = ref_config(refs()["tv_a"]);
  target.dim = 96;
  target.heads = 3;
  std::string e = error_of([&] { load_init(data_path("tv_a.pth"), target); });
  EXPECT_NE(e.find("backbone does not match"), std::string::npos) << e;
  EXPECT_NE(e.find("dim 48"), std::string::npos) << e;
  EXPECT_NE(e.find("dim 96"), std::string::npos) << e;
  e = error_of([&] { load_init(data_path("tiny_misc.pth"), target); });
  EXPECT_NE(e.find("conv_proj.weight"), std::string::npos) << e;
}

// ---- the .vit format ----

namespace {

std::unique_ptr<ViT> tv_a_model() {
  ImportOptions opt;
  opt.heads = 3;
  return import_torchvision(data_path("tv_a.pth"), opt);
}

ModelMeta some_meta() {
  ModelMeta meta;
  meta.class_names = {"a", "b", "c", "d", "e"};
  meta.mean[1] = 0.25f;
  meta.std[2] = 0.125f;
  meta.temperature = 1.5f;
  meta.extra = {{"run", "test"}};
  return meta;
}

void patch_file(const std::string& path, size_t at, const std::vector<uint8_t>& bytes) {
  auto b = read_file_bytes(path);
  ASSERT_LE(at + bytes.size(), b.size());
  std::memcpy(b.data() + at, bytes.data(), bytes.size());
  write_file_atomic(path, {{b.data(), b.size()}});
}

}  // namespace

TEST(VitFormat, RoundTripIsExact) {
  auto m = tv_a_model();
  // Moments with distinct values so that a swap of m and v would show.
  for (size_t i = 0; i < m->num_params(); ++i) m->adam_m()[i] = float(i) * 1e-3f, m->adam_v()[i] = float(i) * 2e-3f;
  std::string path = temp_path("rt.vit");
  nlohmann::json ts = {{"step", 42}, {"rng", "abc"}};
  save_model(path, *m, some_meta(), true, ts);
  LoadedModel lm = load_model(path);
  EXPECT_TRUE(lm.model->config().same_architecture(m->config()));
  EXPECT_EQ(params_of(*lm.model), params_of(*m));
  EXPECT_EQ(0, std::memcmp(lm.model->adam_m(), m->adam_m(), m->num_params() * 4));
  EXPECT_EQ(0, std::memcmp(lm.model->adam_v(), m->adam_v(), m->num_params() * 4));
  EXPECT_TRUE(lm.has_optimizer);
  EXPECT_EQ(lm.train_state, ts);
  EXPECT_EQ(lm.meta.class_names, some_meta().class_names);
  EXPECT_EQ(lm.meta.mean[1], 0.25f);
  EXPECT_EQ(lm.meta.std[2], 0.125f);
  EXPECT_EQ(lm.meta.temperature, 1.5f);
  EXPECT_EQ(lm.meta.extra["run"], "test");
  // load_weights_into: same weights and moments into a fresh model.
  ViT fresh(m->config());
  load_weights_into(fresh, lm, true);
  EXPECT_EQ(params_of(fresh), params_of(*m));
  EXPECT_EQ(0, std::memcmp(fresh.adam_v(), m->adam_v(), m->num_params() * 4));
  // Without the optimizer: smaller, and has_optimizer false.
  save_model(path, *m, some_meta());
  LoadedModel lm2 = load_model(path);
  EXPECT_FALSE(lm2.has_optimizer);
  EXPECT_EQ(params_of(*lm2.model), params_of(*m));
  std::remove(path.c_str());
}

// `convert modèle.pth` on a Latin-1 file system ("mod\xe8le.pth") stored the name in the meta
// (converted_from) and save_model ended in nlohmann's "invalid UTF-8 byte", nothing written. The
// model is saved, the name with U+FFFD for the bad byte.
TEST(VitFormat, SavesAMetaWhosePathIsNotUtf8) {
  ModelMeta meta = some_meta();
  meta.extra["converted_from"] = "/data/mod\xe8le.pth";
  const std::string path = temp_path("latin1.vit");
  save_model(path, *tv_a_model(), meta);
  EXPECT_EQ(load_model(path).meta.extra.at("converted_from"), "/data/mod\xEF\xBF\xBDle.pth");
  std::remove(path.c_str());
}

TEST(VitFormat, Bf16HalvesTheFileAndRoundsToNearest) {
  auto m = tv_a_model();
  std::string p32 = temp_path("a32.vit"), p16 = temp_path("a16.vit");
  save_model(p32, *m, some_meta());
  save_model_bf16(p16, *m, some_meta());
  size_t s32 = read_file_bytes(p32).size(), s16 = read_file_bytes(p16).size();
  EXPECT_LT(double(s16), 0.6 * double(s32));
  LoadedModel lm = load_model(p16);
  const float* a = m->param_data();
  const float* b = lm.model->param_data();
  for (size_t i = 0; i < m->num_params(); ++i)  // bf16 keeps 8 significant bits: half an ulp <= 2^-8 |x|
    ASSERT_LE(std::abs(a[i] - b[i]), std::ldexp(std::abs(a[i]), -8)) << i;
  // The bf16 model still classifies like the fp32 one (logits within bf16 noise).
  auto r = refs()["tv_a"];
  auto x = read_f32(data_path(r["inputs"]));
  const float* y = m->forward(x.data(), 3);
  std::vector<float> y32(y, y + 15);
  const float* y16 = lm.model->forward(x.data(), 3);
  for (int i = 0; i < 15; ++i) EXPECT_NEAR(y16[i], y32[i], 0.05) << i;  // 2^-8 relative per weight, a few layers
  std::remove(p32.c_str());
  std::remove(p16.c_str());
}

TEST(VitFormat, RefusesEachFaultByName) {
  auto m = tv_a_model();
  std::string path = temp_path("bad.vit");
  auto fresh = [&] { save_model(path, *m, some_meta()); };
  auto err = [&] { return error_of([&] { load_model(path); }); };
  fresh();
  patch_file(path, 0, {'X'});
  std::string e = err();
  EXPECT_NE(e.find("bad magic"), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
  fresh();
  patch_file(path, 8, {2, 0, 0, 0});
  e = err();
  EXPECT_NE(e.find("version 2 is newer"), std::string::npos) << e;
  fresh();
  patch_file(path, 8, {0, 0, 0, 0});
  e = err();
  EXPECT_NE(e.find("version 0 is older"), std::string::npos) << e;
  fresh();
  auto b = read_file_bytes(path);
  b[b.size() - 70] ^= 0x10;  // inside the last tensor (heads.head.bias is small, so near its data)
  write_file_atomic(path, {{b.data(), b.size()}});
  e = err();
  EXPECT_NE(e.find("checksum mismatch in tensor"), std::string::npos) << e;
  fresh();
  b = read_file_bytes(path);
  write_file_atomic(path, {{b.data(), b.size() - 1}});
  e = err();
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  b.push_back(0);
  write_file_atomic(path, {{b.data(), b.size()}});
  e = err();
  EXPECT_NE(e.find("trailing"), std::string::npos) << e;
  // A header whose config disagrees with the tensors (hash recomputed, as a buggy
  // writer would produce): dim 48 -> mlp_dim changed.
  fresh();
  b = read_file_bytes(path);
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= uint64_t(b[16 + size_t(i)]) << (8 * i);
  std::string hs(reinterpret_cast<const char*>(b.data() + 56), hlen);
  size_t p = hs.find("\"mlp_dim\":96");
  ASSERT_NE(p, std::string::npos);
  hs.replace(p, 12, "\"mlp_dim\":97");
  std::memcpy(b.data() + 56, hs.data(), hlen);
  unsigned int len = 0;
  EVP_Digest(hs.data(), hs.size(), b.data() + 24, &len, EVP_sha256(), nullptr);
  write_file_atomic(path, {{b.data(), b.size()}});
  e = err();
  EXPECT_NE(e.find("needs (97, 48)"), std::string::npos) << e;
  EXPECT_NE(e.find("mlp 97"), std::string::npos) << e;
  // A .pth handed to load_model.
  e = error_of([] { load_model(data_path("tv_a.pth")); });
  EXPECT_NE(e.find("vitengine convert"), std::string::npos) << e;
  std::remove(path.c_str());
}

TEST(VitFormat, RequireSameArchitectureNamesBothConfigs) {
  auto m = tv_a_model();
  ViTConfig other = m->config();
  other.depth = 3;
  std::string e = error_of([&] { require_same_architecture(other, m->config(), "ckpt.vit"); });
  EXPECT_NE(e.find("ckpt.vit"), std::string::npos) << e;
  EXPECT_NE(e.find(other.to_string()), std::string::npos) << e;
  EXPECT_NE(e.find(m->config().to_string()), std::string::npos) << e;
  std::string path = temp_path("arch.vit");
  save_model(path, *m, some_meta());
  ViT wrong(other);
  e = error_of([&] { load_weights_into(wrong, load_model(path)); });
  EXPECT_NE(e.find("depth 3"), std::string::npos) << e;
  std::remove(path.c_str());
}

TEST(VitFormat, LoadInitFromVitReplacesHeadAndInterpolates) {
  auto m = tv_a_model();
  std::string path = temp_path("init.vit");
  save_model(path, *m, some_meta(), true, {{"step", 1}});
  ViTConfig target = m->config();
  target.num_classes = 9;
  target.image_size = 48;
  LoadedModel lm = load_init(path, target);
  EXPECT_TRUE(lm.model->config().same_architecture(target));
  EXPECT_FALSE(lm.has_optimizer);
  EXPECT_TRUE(lm.meta.class_names.empty());  // the old names belong to the old head
  EXPECT_EQ(lm.meta.temperature, 1.5f);
  // The .vit path must give exactly what the .pth path gives.
  ViTConfig t2 = target;
  LoadedModel ref = load_init(data_path("tv_a.pth"), t2);
  EXPECT_EQ(params_of(*lm.model), params_of(*ref.model));
  target.heads = 6;
  std::string e = error_of([&] { load_init(path, target); });
  EXPECT_NE(e.find("heads"), std::string::npos) << e;
  std::remove(path.c_str());
}

// `convert X --out X` and `export M --out M` renamed their output over their input: the
// checkpoint or the only .vit was gone, replaced by the other format. Both are refused as argument
// errors (exit 2), naming the file, and the input is left byte for byte.
TEST(Export, CliRefusesToWriteOverItsInput) {
  const std::string st = temp_path("self.safetensors"), vit = temp_path("self.vit"), log = temp_path("self.log");
  write_safetensors(st, read_pth(data_path("tv_a.pth")));
  save_model(vit, *tv_a_model(), some_meta());
  const std::string bin = VITENGINE_BINARY;
  for (const auto& [cmd, file] :
       {std::pair{" convert " + st + " --heads 3 --out ", st}, {" export " + vit + " --out ", vit}}) {
    const auto before = bytes_of(file);
    EXPECT_EQ(WEXITSTATUS(std::system((bin + cmd + file + " > " + log + " 2>&1").c_str())), 2) << cmd;
    EXPECT_EQ(bytes_of(file), before) << cmd;
    const auto said = bytes_of(log);
    EXPECT_NE(std::string(said.begin(), said.end()).find("--out '" + file + "' is the"), std::string::npos) << cmd;
  }
  for (const auto& p : {st, vit, log}) std::remove(p.c_str());
}

// Asking for more memory than there is (here a 2e9-class head) is said in words: std::bad_alloc's
// own text names no cause. The address space is capped so that the allocation fails on any
// machine, whatever its overcommit policy, instead of the kernel killing the process.
TEST(Export, OutOfMemoryIsSaidInWords) {
  const std::string out = temp_path("oom.vit"), log = temp_path("oom.log");
  const std::string cmd = "ulimit -v 4000000; " + std::string(VITENGINE_BINARY) + " convert " + data_path("tv_a.pth") +
                          " --heads 3 --num-classes 2000000000 --out " + out + " > " + log + " 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(("/bin/sh -c '" + cmd + "'").c_str())), 1);
  const auto said = bytes_of(log);
  EXPECT_NE(std::string(said.begin(), said.end()).find("error: out of memory"), std::string::npos)
      << std::string(said.begin(), said.end());
  EXPECT_FALSE(std::ifstream(out).good());
  std::remove(log.c_str());
}

TEST(Export, SafetensorsHasExactlyTorchvisionKeys) {
  auto m = tv_a_model();
  std::string path = temp_path("exp.safetensors");
  export_safetensors(path, *m, some_meta());
  std::map<std::string, std::string> md;
  StateDict got = read_safetensors(path, &md);
  StateDict orig = read_pth(data_path("tv_a.pth"));  // torchvision's own key set
  ASSERT_EQ(got.size(), orig.size());
  for (const auto& [k, t] : orig) {
    ASSERT_TRUE(got.count(k)) << k;
    EXPECT_EQ(got.at(k).shape, t.shape) << k;
    EXPECT_EQ(got.at(k).data, t.data) << k;  // fp32 all the way: bit-exact
  }
  EXPECT_EQ(md.at("format"), "pt");
  EXPECT_EQ(config_from_json(nlohmann::json::parse(md.at("vitengine_config")), "md").to_string(),
            m->config().to_string());
  std::remove(path.c_str());
}

// Writes a model that only vitengine ever held (its own init, plus a non-zero head) with
// its logits, for tools/check_export_torchvision.py to load into torchvision. Runs only
// when that script sets VITENGINE_EXPORT_CHECK_DIR (ctest weights_export_torchvision).
TEST(Export, WriteVitengineModelForPyTorchCheck) {
  const char* dir = std::getenv("VITENGINE_EXPORT_CHECK_DIR");
  if (!dir) GTEST_SKIP() << "driven by tools/check_export_torchvision.py";
  auto r = refs()["tv_b"];
  ViTConfig cfg = ref_config(r);
  ViT m(cfg);
  m.init(7);
  // init() zeroes the head and the LayerNorm affine (torchvision's init); give them
  // values so that the check covers every tensor.
  MutationRng rng(11);
  for (const auto& p : m.params())
    if (p.name.rfind("heads.", 0) == 0 || p.name.find("ln") != std::string::npos || p.name == "class_token")
      for (size_t i = 0; i < p.numel; ++i)
        m.param_data()[p.offset + i] += float(double(rng.below(2001)) / 1000.0 - 1.0) * 0.3f;
  auto x = read_f32(data_path(r["inputs"]));
  const float* y = m.forward(x.data(), r["batch"]);
  std::vector<float> logits(y, y + size_t(int(r["batch"])) * cfg.num_classes);
  ModelMeta meta;
  std::string d = dir;
  export_safetensors(d + "/vitengine_model.safetensors", m, meta);
  export_safetensors(d + "/vitengine_model_bf16.safetensors", m, meta, SafetensorsDtype::BF16);
  write_file_atomic(d + "/vitengine_logits.f32", {{logits.data(), logits.size() * 4}});
  save_model(d + "/vitengine_model.vit", m, meta);
}

// Full-size torchvision vit_b_16 (86M parameters): driven by
// tools/check_vit_b16_import.py, which writes a random vit_b_16 the way torchvision's
// published file is saved, plus inputs and PyTorch's logits, into VITENGINE_VITB16_DIR.
TEST(Torchvision, FullSizeVitB16FromEnv) {
  const char* dir = std::getenv("VITENGINE_VITB16_DIR");
  if (!dir) GTEST_SKIP() << "driven by tools/check_vit_b16_import.py (writes 330 MB)";
  std::string d = dir;
  ViTConfig src;
  auto m = import_torchvision(d + "/vit_b_16_random.pth", ImportOptions{}, &src);  // heads: 768/64 = 12
  ViTConfig b16 = ViTConfig::preset("vit_b16");
  b16.num_classes = 1000;
  EXPECT_TRUE(src.same_architecture(b16)) << src.to_string();
  auto x = read_f32(d + "/inputs.f32");
  auto y = read_f32(d + "/logits.f32");
  ASSERT_EQ(y.size(), 2000u);
  // Same tolerance as the small models: 12 layers of fp32 with a different summation
  // order stay within ~1e-5 relative of PyTorch in practice; 1e-4 leaves margin.
  expect_close(m->forward(x.data(), 2), y, 1e-4, 1e-4);
  // The converted .vit (if the script wrote it) must hold the same weights.
  LoadedModel lm = load_model(d + "/vit_b_16_random.vit");
  EXPECT_EQ(0, std::memcmp(lm.model->param_data(), m->param_data(), m->num_params() * 4));
}
