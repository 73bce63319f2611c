// TrainConfig: defaults, JSON and --set parsing, and validation errors that name the field.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "engine/train/train_config.h"
#include "engine/train/run_state.h"
#include "engine/train/trainer.h"

using namespace vit;

namespace {
// Expects `f` to throw ConfigError whose message contains `needle`.
template <typename F>
void expect_config_error(F f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no ConfigError; expected one mentioning '" << needle << "'";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}
std::string write_tmp(const std::string& name, const std::string& text) {
  auto p = std::filesystem::temp_directory_path() / ("vit_cfg_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p) << text;
  return p.string();
}
}  // namespace

TEST(TrainConfig, DefaultsFollowTheSeedAndValidate) {
  TrainConfig c;
  EXPECT_FLOAT_EQ(c.lr, 3e-4f);
  EXPECT_FLOAT_EQ(c.weight_decay, 1e-2f);
  EXPECT_EQ(c.batch_size, 32);
  EXPECT_EQ(c.model_config(14).image_size, 224);
  EXPECT_FLOAT_EQ(c.label_smoothing, 0.0f);  // plain cross-entropy
  EXPECT_NO_THROW(c.validate());
  // every field is documented
  for (const auto& d : TrainConfig::docs()) EXPECT_FALSE(d.doc.empty()) << d.name;
  EXPECT_EQ(TrainConfig::docs().size(), c.to_json().size());
}

TEST(TrainConfig, JsonRoundTripAndOverrides) {
  std::string p = write_tmp("a.json", R"({"lr": 0.001, "epochs": 3, "schedule": "cosine", "_comment": "ignored"})");
  TrainConfig c = TrainConfig::load(p, {"batch_size=8", "label_smoothing=0.1", "calibrate=false", "device=cpu"});
  EXPECT_FLOAT_EQ(c.lr, 1e-3f);
  EXPECT_EQ(c.epochs, 3);
  EXPECT_EQ(c.batch_size, 8);
  EXPECT_FLOAT_EQ(c.label_smoothing, 0.1f);
  EXPECT_FALSE(c.calibrate);
  TrainConfig d;
  d.update_from_json(c.to_json());
  EXPECT_EQ(d.to_json(), c.to_json());
  EXPECT_TRUE(TrainConfig::differing_fields(c.to_json(), d.to_json(), false).empty());
  std::remove(p.c_str());
}

TEST(TrainConfig, ErrorsNameTheField) {
  expect_config_error([] { TrainConfig::load("", {"lr=-1"}); }, "'lr'");
  expect_config_error([] { TrainConfig::load("", {"subset=50"}); }, "'subset'");
  expect_config_error([] { TrainConfig::load("", {"device=tpu"}); }, "'device'");
  expect_config_error([] { TrainConfig::load("", {"schedule=linear"}); }, "'schedule'");
  expect_config_error([] { TrainConfig::load("", {"drop_path=1"}); }, "'drop_path'");
  expect_config_error([] { TrainConfig::load("", {"epochs=0"}); }, "'epochs'");
  expect_config_error([] { TrainConfig::load("", {"warmup_epochs=20"}); }, "'warmup_epochs'");
  expect_config_error([] { TrainConfig::load("", {"freeze_backbone_epochs=2"}); }, "'freeze_backbone_epochs'");
  expect_config_error([] { TrainConfig::load("", {"augment=extreme"}); }, "'augment'");
  expect_config_error([] { TrainConfig::load("", {"translate=0.6"}); }, "'translate'");
  expect_config_error([] { TrainConfig::load("", {"augment=none", "translate=0.03"}); }, "'translate' only acts");
  expect_config_error([] { TrainConfig::load("", {"augment=none", "reflect_border=true"}); }, "'reflect_border'");
  expect_config_error([] { TrainConfig::load("", {"batch_size=abc"}); }, "batch_size");
  expect_config_error([] { TrainConfig::load("", {"nosuchfield=1"}); }, "'nosuchfield'");
  expect_config_error([] { TrainConfig::load("", {"lr"}); }, "key=value");
  expect_config_error([] { TrainConfig::load("", {"heads=5"}); }, "ViT");  // 192 % 5 != 0
  std::string p = write_tmp("b.json", R"({"epochs": "ten"})");
  expect_config_error([&] { TrainConfig::load(p); }, "'epochs'");
  std::string q = write_tmp("c.json", R"({"learning_rate": 0.1})");
  expect_config_error([&] { TrainConfig::load(q); }, "'learning_rate'");
  std::string r = write_tmp("d.json", R"({"epochs": 2.5})");
  expect_config_error([&] { TrainConfig::load(r); }, "'epochs'");
  expect_config_error([] { TrainConfig::load("/nonexistent/x.json"); }, "/nonexistent/x.json");
  for (auto* s : {&p, &q, &r}) std::remove(s->c_str());
}

// JSON keeps only the last of two equal keys, so {"epochs": 3, "epochs": 4} trained for 4 epochs
// without a word; the config is refused, naming the key and the file.
TEST(TrainConfig, AKeyGivenTwiceIsRefusedNamingKeyAndFile) {
  const std::string p = write_tmp("dup.json", R"({"epochs": 3, "lr": 0.001, "epochs": 4})");
  for (const std::string& needle : {std::string("'epochs'"), std::string("twice"), p})
    expect_config_error([&] { TrainConfig::load(p); }, needle);
  std::remove(p.c_str());
}

// 3000000000 is an integer, only too large for an int field: the message said "expected an
// integer, got 3000000000". It says out of range and gives the range, from a file and from --set.
TEST(TrainConfig, AnIntegerOutOfRangeIsCalledSoWithTheRange) {
  const std::string p = write_tmp("big.json", R"({"epochs": 3000000000})");
  auto message_of = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no ConfigError");
  };
  for (const std::string& m :
       {message_of([&] { TrainConfig::load(p); }), message_of([] { TrainConfig::load("", {"epochs=3000000000"}); }),
        message_of([] { TrainConfig::load("", {"seed=-99999999999999999999"}); })}) {
    EXPECT_NE(m.find("out of range"), std::string::npos) << m;
    EXPECT_NE(m.find("[-2000000000, 2000000000]"), std::string::npos) << m;
    EXPECT_EQ(m.find("expected an integer"), std::string::npos) << m;
  }
  // Not an integer at all is still called so.
  EXPECT_NE(message_of([] { TrainConfig::load("", {"epochs=3.5"}); }).find("expected an integer"), std::string::npos);
  std::remove(p.c_str());
}

// data_on_device keeps the train images in GPU memory and augments there: cuda only, and
// without augment=strong's blur (the kernel does geometry and colour only).
TEST(TrainConfig, DataOnDeviceNeedsCudaAndNoBlur) {
  expect_config_error([] { TrainConfig::load("", {"data_on_device=true"}); }, "'data_on_device' needs device=cuda");
  expect_config_error(
      [] {
        TrainConfig::load("", {"data_on_device=true", "device=cuda", "augment=strong"});
      },
      "'data_on_device' supports augment none or light");
  for (const char* a : {"augment=none", "augment=light"})
    EXPECT_TRUE(TrainConfig::load("", {"data_on_device=true", "device=cuda", a}).data_on_device) << a;
  // HED jitter: the CPU loader only; off by default; a share of a concentration, so under 1.
  expect_config_error([] { TrainConfig::load("", {"data_on_device=true", "device=cuda", "hed_jitter=0.05"}); },
                      "'data_on_device' does not apply hed_jitter");
  expect_config_error([] { TrainConfig::load("", {"hed_jitter=-0.1"}); }, "'hed_jitter' must be in [0, 1)");
  expect_config_error([] { TrainConfig::load("", {"augment=none", "hed_jitter=0.05"}); }, "'hed_jitter' only acts");
  EXPECT_FLOAT_EQ(train_augment(TrainConfig::load("", {"hed_jitter=0.05"})).hed, 0.05f);
  EXPECT_EQ(TrainConfig{}.hed_jitter, 0.0f);
  // cell-size normalisation: the CPU loader only; none by default; a view changes, so no resume across it
  expect_config_error([] { TrainConfig::load("", {"data_on_device=true", "device=cuda", "cell_size=normalize"}); },
                      "'data_on_device' does not apply cell_size");
  expect_config_error([] { TrainConfig::load("", {"cell_size=normalise"}); },
                      "'cell_size' must be none or normalize, got 'normalise'");
  EXPECT_EQ(TrainConfig{}.cell_size, "none");
  EXPECT_FALSE(TrainConfig::resume_safe("cell_size"));
  EXPECT_FALSE(TrainConfig{}.data_on_device);               // off by default
  EXPECT_TRUE(TrainConfig::resume_safe("data_on_device"));  // same pixels either way
}

TEST(TrainConfig, ModelOverrides) {
  TrainConfig c = TrainConfig::load("", {"image_size=64", "patch=8", "dim=96", "depth=3", "heads=3", "mlp_dim=192"});
  ViTConfig m = c.model_config(14);
  EXPECT_EQ(m.image_size, 64);
  EXPECT_EQ(m.patch, 8);
  EXPECT_EQ(m.dim, 96);
  EXPECT_EQ(m.depth, 3);
  EXPECT_EQ(m.num_classes, 14);
  EXPECT_NE(m.name, "vit_ti16");  // marked as custom
}

TEST(TrainConfig, ResumeSafeFields) {
  TrainConfig a, b;
  b.device = "cuda";
  b.log_every = 3;
  b.lr = 1e-3f;
  auto d = TrainConfig::differing_fields(a.to_json(), b.to_json(), true);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0], "lr");
}

TEST(TrainSchedule, WarmupThenCosine) {
  // 10 steps per epoch, 10 epochs, warmup 2 epochs = 20 steps, floor 0.1.
  TrainConfig c =
      TrainConfig::load("", {"epochs=10", "lr=1", "warmup_epochs=2", "schedule=cosine", "min_lr_ratio=0.1"});
  EXPECT_FLOAT_EQ(lr_at(c, 0, 10), 1.0f / 20);           // (0 + 1) / 20
  EXPECT_FLOAT_EQ(lr_at(c, 19, 10), 1.0f);               // end of warmup
  EXPECT_FLOAT_EQ(lr_at(c, 20, 10), 1.0f);               // cosine t = 0
  EXPECT_NEAR(lr_at(c, 60, 10), 0.1 + 0.9 * 0.5, 1e-6);  // t = 40/80 = 1/2: cos = 0
  EXPECT_NEAR(lr_at(c, 100, 10), 0.1, 1e-6);             // t = 1: the floor
  TrainConfig k = TrainConfig::load("", {"lr=0.5"});
  EXPECT_FLOAT_EQ(lr_at(k, 0, 10), 0.5f);  // constant (the seed's)
  EXPECT_FLOAT_EQ(lr_at(k, 99, 10), 0.5f);
  // dropout seeds differ per step and are a pure function of (seed, step)
  EXPECT_EQ(dropout_seed(1, 5), dropout_seed(1, 5));
  EXPECT_NE(dropout_seed(1, 5), dropout_seed(1, 6));
  EXPECT_NE(dropout_seed(1, 5), dropout_seed(2, 5));
}

// Test hooks are not config fields: a run's config.json never carries them, and a config.json
// written when they were (the shipped run's) still loads, with them dropped.
TEST(TrainConfig, OldTestHookFieldsLoadAndAreDropped) {
  TrainConfig c;
  c.update_from_json(nlohmann::json{{"epochs", 3}, {"debug_nan_at_step", 0}, {"debug_sleep_ms", 0}});
  EXPECT_EQ(c.epochs, 3);
  const nlohmann::json j = c.to_json();
  EXPECT_FALSE(j.contains("debug_nan_at_step"));
  EXPECT_FALSE(j.contains("debug_sleep_ms"));
  EXPECT_THROW(c.set("debug_sleep_ms=5"), ConfigError);
  const std::string shipped = std::string(VITENGINE_SOURCE_DIR) + "/weights/shipped/run/config.json";
  std::ifstream f(shipped);
  ASSERT_TRUE(f) << shipped;
  TrainConfig s;
  EXPECT_NO_THROW(s.update_from_json(nlohmann::json::parse(f).at("train")));
}

// The checkpoint's train_state: every field written is read back, NaN epoch numbers as null.
TEST(RunState, JsonRoundTrip) {
  RunState a;
  a.step = 17, a.epoch = 2, a.batch_in_epoch = 3, a.epoch_loss_sum = 4.25, a.epoch_correct = 9, a.epoch_seen = 12;
  a.epoch_batches = 3, a.best_val_macro_f1 = 0.5, a.best_epoch = 2;
  EpochRow r;
  r.epoch = 1, r.step = 7, r.train_loss = 1.5, r.train_acc = 0.25, r.lr = 1e-3, r.img_s = 10, r.elapsed_s = 2;
  a.history = {r};
  const nlohmann::json j = a.to_json(7, 12.5, 42, nlohmann::json{{"epochs", 3}});
  EXPECT_EQ(j.at("steps_per_epoch").get<int64_t>(), 7);
  EXPECT_EQ(j.at("rng").at("seed").get<uint64_t>(), 42u);
  EXPECT_TRUE(j.at("history")[0].at("val_loss").is_null());
  const RunState b = RunState::from_json(j);
  EXPECT_EQ(b.step, 17);
  EXPECT_EQ(b.epoch, 2);
  EXPECT_EQ(b.batch_in_epoch, 3);
  EXPECT_EQ(b.epoch_loss_sum, 4.25);
  EXPECT_EQ(b.epoch_correct, 9);
  EXPECT_EQ(b.epoch_seen, 12);
  EXPECT_EQ(b.epoch_batches, 3);
  EXPECT_EQ(b.best_val_macro_f1, 0.5);
  EXPECT_EQ(b.best_epoch, 2);
  EXPECT_EQ(b.elapsed_s, 12.5);  // the time so far, this process included
  ASSERT_EQ(b.history.size(), 1u);
  EXPECT_EQ(b.history[0].step, 7);
  EXPECT_EQ(b.history[0].train_loss, 1.5);
  EXPECT_TRUE(std::isnan(b.history[0].val_loss));
  EXPECT_THROW(RunState::from_json(nlohmann::json{{"step", 1}}), std::exception);
}

TEST(TrainConfig, ValuesAsTypedAndAutoResolvedByTheData) {
  TrainConfig c = TrainConfig::load("", {"lr=2.5e-6", "weight_decay=1e-7"});
  EXPECT_EQ(c.to_json()["lr"].dump(), "2.5e-06");  // not 3e-06 (std::to_string) nor 2.4999999e-06
  EXPECT_EQ(c.to_json()["weight_decay"].dump(), "1e-07");
  EXPECT_EQ(c.rotate_flip, "auto");
  TrainConfig cells = c, digits = c;
  cells.resolve_auto(true);
  digits.resolve_auto(false);
  EXPECT_EQ(cells.rotate_flip, "on");
  EXPECT_EQ(cells.translate, 0.0f);  // the recipe of every run before the field existed
  EXPECT_EQ(digits.rotate_flip, "off");
  EXPECT_FLOAT_EQ(digits.translate, 0.1f);
  TrainConfig set = TrainConfig::load("", {"rotate_flip=on", "translate=0.03"});
  set.resolve_auto(false);  // what a config sets explicitly stays
  EXPECT_EQ(set.rotate_flip, "on");
  EXPECT_FLOAT_EQ(set.translate, 0.03f);
  EXPECT_THROW(TrainConfig::load("", {"rotate_flip=sometimes"}), ConfigError);
}

TEST(TrainConfig, ACheckpointFromBeforeNewFieldsStillResumes) {
  // A config.json written before rotate_flip/scale_jitter/color_jitter existed, with floats as
  // they were then printed (0.0010000000474974513 for 1e-3), against today's resolved config.
  TrainConfig now = TrainConfig::load("", {"lr=1e-3"});
  now.resolve_auto(true);
  nlohmann::json old = now.to_json();
  for (const char* f : {"rotate_flip", "scale_jitter", "color_jitter"}) old.erase(f);
  old["lr"] = double(1e-3f);
  EXPECT_TRUE(TrainConfig::differing_fields(old, now.to_json(), true).empty());
  // A real difference is still one.
  old["lr"] = 2e-3;
  EXPECT_EQ(TrainConfig::differing_fields(old, now.to_json(), true), std::vector<std::string>{"lr"});
}

// docs/training.md says `train --help-config` prints its field table, and users read the table:
// it must be the help's text, row for row. The init row said "a .vit file" while load_init takes
// torchvision's and timm's .pth and .safetensors too (docs/weights.md; train --init g.safetensors).
TEST(TrainConfig, TrainingMdsFieldTableIsTheHelpConfigText) {
  const std::string md = TrainConfig::docs_markdown();
  std::ifstream in(std::string(VITENGINE_SOURCE_DIR) + "/docs/training.md");
  const std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(doc.find(md), std::string::npos) << "docs/training.md's table differs from:\n" << md;
  const size_t row = md.find("| `init` |");
  ASSERT_NE(row, std::string::npos);
  const std::string init = md.substr(row, md.find('\n', row) - row);
  for (const char* format : {".vit", ".pth", ".safetensors"}) EXPECT_NE(init.find(format), std::string::npos) << init;
}
