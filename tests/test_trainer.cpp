// The training workflow on a tiny model and the committed fixture
// (tests/fixtures/quickstart): NaN stop, refusal of a foreign checkpoint, the
// kill-and-resume test (SIGKILL mid-epoch, --resume, same loss curve), and eval.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "engine/data/cell_size.h"
#include "engine/data/dataset.h"
#include "engine/data/labels.h"
#include "engine/data/prepare.h"
#include "engine/eval/evaluate.h"
#include "engine/data/pack.h"
#include "engine/wbc/app.h"
#include "engine/wbc/taxonomy.h"
#include "engine/train/train_config.h"
#include "engine/train/trainer.h"
#include "weights/checkpoint.h"
#include "tests/train_test_util.h"

namespace fs = std::filesystem;
using namespace vit;
using namespace train_test;

namespace {

// A model small enough that a step takes milliseconds on one core.
std::vector<std::string> tiny() {
  return {"image_size=32", "patch=8",  "dim=32",  "depth=1",   "heads=2",        "mlp_dim=64",
          "batch_size=8",  "epochs=3", "lr=1e-3", "threads=1", "log_every=1000", "calibrate=false"};
}

TrainRequest request(const fs::path& out, std::vector<std::string> extra = {}) {
  auto sets = tiny();
  sets.insert(sets.end(), extra.begin(), extra.end());
  TrainRequest r;
  r.config = TrainConfig::load("", sets);
  r.data = small_data();
  r.out = out.string();
  r.log = [](const std::string&) {};
  r.groups = wbc::class_groups();  // as the CLI passes them
  return r;
}

std::vector<std::string> cli_train(const fs::path& out, std::vector<std::string> extra) {
  std::vector<std::string> a = {"train", "--data", small_data(), "--out", out.string(), "--set"};
  auto sets = tiny();
  sets.insert(sets.end(), extra.begin(), extra.end());
  for (auto& s : sets) a.push_back(s);
  return a;
}

}  // namespace

TEST(Trainer, NanLossStopsNamingTheStepAndKeepsTheLastCheckpoint) {
  auto out = tmpdir("nan");
  auto req = request(out, {"checkpoint_every=5"});
  req.hooks.nan_at_step = 7;
  try {
    train(req);
    FAIL() << "expected TrainingDiverged";
  } catch (const TrainingDiverged& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("NaN"), std::string::npos) << m;
    EXPECT_NE(m.find("at step 7"), std::string::npos) << m;
    EXPECT_NE(m.find("last.vit"), std::string::npos) << m;
    EXPECT_NE(m.find("(step 5)"), std::string::npos) << m;
  }
  LoadedModel lm = load_model((out / "last.vit").string());
  EXPECT_EQ(lm.train_state.at("step").get<int64_t>(), 5);
  // nothing after the bad step was logged
  auto rows = csv_rows(out / "steps.csv");
  EXPECT_EQ(rows.size(), 1u + 6u);  // header + steps 1..6
  fs::remove_all(out);
}

TEST(Trainer, TimeBudgetShrinksTheEpochCountAfterEpochOne) {
  // A budget far below one epoch's time leaves warmup_epochs + 1 = 1 epoch; a budget far
  // above leaves the configured 3. metrics.csv has one row per epoch run.
  auto out = tmpdir("budget");
  train(request(out / "tight", {"time_budget_s=1e-6"}));
  EXPECT_EQ(csv_rows(out / "tight" / "metrics.csv").size(), 1u + 1u);
  train(request(out / "loose", {"time_budget_s=1e6"}));
  EXPECT_EQ(csv_rows(out / "loose" / "metrics.csv").size(), 1u + 3u);
  EXPECT_THROW(TrainConfig::load("", {"time_budget_s=-1"}), std::exception);
  fs::remove_all(out);
}

TEST(Trainer, GroupLabelLevelLearnsTheNineGroups) {
  auto out = tmpdir("groups");
  train(request(out, {"label_level=group", "max_steps=2"}));
  LoadedModel lm = load_model((out / "last.vit").string());
  EXPECT_EQ(lm.model->config().num_classes, 9);
  EXPECT_EQ(lm.meta.class_names, groups());
  EXPECT_THROW(TrainConfig::load("", {"label_level=subtype"}), std::exception);
  // eval scores a group model against the groups of the true classes: a 9 x 9 confusion
  // matrix holding every one of the fixture's 70 test images (14 classes x 5)
  ASSERT_EQ(run_cli({"eval", "--model", (out / "last.vit").string(), "--data", kFixture, "--split", "test", "--out",
                     (out / "ev").string()},
                    out / "eval.txt"),
            0)
      << slurp(out / "eval.txt");
  nlohmann::json j = nlohmann::json::parse(slurp(out / "ev/metrics.json"));
  ASSERT_EQ(j["confusion"].size(), 9u);
  int64_t total = 0;
  for (const auto& row : j["confusion"])
    for (const auto& v : row) total += v.get<int64_t>();
  EXPECT_EQ(total, 70);
  fs::remove_all(out);
}

TEST(Trainer, AbsurdLearningRateIsCaughtNotSaved) {
  // No hook: lr 1e30 must blow up the loss or the gradients within the first epoch,
  // and the run must stop with TrainingDiverged rather than write a NaN checkpoint.
  auto out = tmpdir("lr");
  auto req = request(out, {"lr=1e30", "checkpoint_every=1"});
  EXPECT_THROW(train(req), TrainingDiverged);
  if (fs::exists(out / "last.vit")) {
    LoadedModel lm = load_model((out / "last.vit").string());
    const float* p = lm.model->param_data();
    for (size_t i = 0; i < lm.model->num_params(); ++i) ASSERT_TRUE(std::isfinite(p[i])) << "parameter " << i;
  }
  fs::remove_all(out);
}

TEST(Trainer, RefusesACheckpointFromAnotherModelOrConfig) {
  auto out = tmpdir("refuse");
  auto first = request(out, {"max_steps=2"});
  TrainSummary s = train(first);
  EXPECT_FALSE(s.finished);
  ASSERT_TRUE(fs::exists(out / "last.vit"));

  // another architecture: the message names both models
  auto other_model = request(out, {"dim=48", "max_steps=4"});
  other_model.resume = true;
  try {
    train(other_model);
    FAIL() << "expected CheckpointMismatch";
  } catch (const CheckpointMismatch& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("dim 32"), std::string::npos) << m;
    EXPECT_NE(m.find("dim 48"), std::string::npos) << m;
  }
  // another recipe: the message names the field and both values
  auto other_lr = request(out, {"lr=2e-3", "max_steps=4"});
  other_lr.resume = true;
  try {
    train(other_lr);
    FAIL() << "expected CheckpointMismatch";
  } catch (const CheckpointMismatch& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("lr"), std::string::npos) << m;
    EXPECT_NE(m.find("0.001"), std::string::npos) << m;
    EXPECT_NE(m.find("0.002"), std::string::npos) << m;
  }
  // a fresh run over an existing one is refused too
  EXPECT_THROW(train(request(out, {"max_steps=4"})), std::runtime_error);
  // resume-safe changes (max_steps, log_every) are accepted
  auto ok = request(out, {"max_steps=4", "log_every=2"});
  ok.resume = true;
  EXPECT_EQ(train(ok).steps, 4);
  fs::remove_all(out);
}

TEST(Trainer, RefusesToResumeOnADataSetWithOtherClasses) {
  // The same 14 classes in another order (a re-prepared set, an edited classes.txt): every label
  // index would change meaning mid-run while the class count, and so the model, stays the same.
  auto out = tmpdir("classes");
  ASSERT_FALSE(train(request(out, {"max_steps=2"})).finished);
  const fs::path other = tmpdir("classes_data");
  for (const char* f : {"manifest.csv", "report.json"}) fs::copy_file(fs::path(small_data()) / f, other / f);
  std::vector<std::string> names = wbc::class_names();
  std::reverse(names.begin(), names.end());
  std::ofstream(other / "classes.txt") << [&] {
    std::string s;
    for (const auto& n : names) s += n + "\n";
    return s;
  }();
  auto resumed = request(out, {"max_steps=4"});
  resumed.data = other.string();
  resumed.resume = true;
  try {
    train(resumed);
    FAIL() << "expected CheckpointMismatch";
  } catch (const CheckpointMismatch& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'" + wbc::class_names().front() + "'"), std::string::npos) << m;
    EXPECT_NE(m.find("'" + names.front() + "'"), std::string::npos) << m;
  }
  // nothing after step 2 was written: the checkpoint is the first run's
  EXPECT_EQ(load_model((out / "last.vit").string()).train_state.value("step", -1), 2);
  fs::remove_all(out);
  fs::remove_all(other);
}

TEST(Trainer, KillMidEpochAndResumeGivesTheSameLossCurve) {
  // Dropout, augmentation, label smoothing, clipping, EMA and a cosine schedule are
  // all on, so every piece of state that must survive a restart is exercised.
  std::vector<std::string> recipe = {"dropout=0.1",   "augment=light",   "label_smoothing=0.1", "grad_clip=1.0",
                                     "ema_decay=0.9", "schedule=cosine", "warmup_epochs=0.5"};
  auto ref = tmpdir("ref"), cut = tmpdir("cut");
  ASSERT_EQ(run_cli(cli_train(ref, recipe), ref / "log.txt"), 0) << slurp(ref / "log.txt");

  // The interrupted run: checkpoint every 4 steps, slowed down so it can be caught
  // mid-epoch; killed once the checkpoint at step 10 (epoch 2 of 3, 7 steps each) is on disk.
  auto slow = recipe;
  slow.push_back("checkpoint_every=5");
  // 11 steps x 100 ms of margin to catch it mid-run (a test hook, read from the environment)
  setenv("VITENGINE_TEST_SLEEP_MS", "100", 1);
  pid_t pid = spawn(cli_train(cut, slow), cut / "log.txt");
  unsetenv("VITENGINE_TEST_SLEEP_MS");
  bool seen = false;
  for (int i = 0; i < 3000 && !seen; ++i) {  // up to 60 s (CI machines can be loaded)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    seen = slurp(cut / "log.txt").find("at step 10\n") != std::string::npos;
  }
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(seen) << "the run never reached step 10: " << slurp(cut / "log.txt");
  ASSERT_TRUE(WIFSIGNALED(st)) << "the child finished before it was killed";
  LoadedModel mid = load_model((cut / "last.vit").string());
  int64_t at = mid.train_state.at("step").get<int64_t>();
  EXPECT_GE(at, 10);
  EXPECT_GT(mid.train_state.at("batch_in_epoch").get<int64_t>(), 0);  // really mid-epoch

  auto resume = cli_train(cut, slow);
  resume.insert(resume.begin() + 1, "--resume");
  ASSERT_EQ(run_cli(resume, cut / "log2.txt"), 0) << slurp(cut / "log2.txt");

  // Every step's loss, and every epoch's train / val numbers, match exactly
  // (printed with 9 significant digits; the arithmetic is the same, so equal).
  auto a = csv_rows(ref / "steps.csv"), b = csv_rows(cut / "steps.csv");
  ASSERT_EQ(a.size(), 1u + 21u);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 1; i < a.size(); ++i) {
    EXPECT_EQ(a[i][0], b[i][0]);
    EXPECT_NEAR(std::stod(a[i][2]), std::stod(b[i][2]), 1e-6) << "step " << a[i][0];
    EXPECT_EQ(a[i][2], b[i][2]) << "step " << a[i][0];
  }
  auto ma = csv_rows(ref / "metrics.csv"), mb = csv_rows(cut / "metrics.csv");
  ASSERT_EQ(ma.size(), 4u);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 1; i < ma.size(); ++i)
    for (size_t c = 0; c < 7; ++c) EXPECT_EQ(ma[i][c], mb[i][c]) << "metrics.csv row " << i << " column " << ma[0][c];
  // and the final weights are bit-identical
  LoadedModel wa = load_model((ref / "last.vit").string()), wb = load_model((cut / "last.vit").string());
  ASSERT_EQ(wa.model->num_params(), wb.model->num_params());
  size_t diff = 0;
  for (size_t i = 0; i < wa.model->num_params(); ++i) diff += wa.model->param_data()[i] != wb.model->param_data()[i];
  EXPECT_EQ(diff, 0u);
  fs::remove_all(ref);
  fs::remove_all(cut);
}

// Without val images nothing picks a best epoch: train printed "best.vit = epoch -1, val macro-F1
// -1.0000". It says what best.vit is, the weights after the last epoch, and it is that after a
// --resume that extends the run too (it kept the first run's end).
TEST(Trainer, WithoutValImagesBestVitIsTheLastEpochAndSaysSo) {
  auto out = tmpdir("noval");
  ASSERT_EQ(run_cli(cli_train(out / "run", {"epochs=1", "val_split="}), out / "a.txt"), 0) << slurp(out / "a.txt");
  const std::string log = slurp(out / "a.txt");
  EXPECT_EQ(log.find("epoch -1"), std::string::npos) << log;
  EXPECT_NE(log.find("no val images"), std::string::npos) << log;
  EXPECT_NE(log.find("best.vit is the weights after the last epoch"), std::string::npos) << log;
  EXPECT_NE(slurp(out / "run" / "summary.md").find("no val images"), std::string::npos);
  auto resume = cli_train(out / "run", {"epochs=2", "val_split="});
  resume.insert(resume.begin() + 1, "--resume");
  ASSERT_EQ(run_cli(resume, out / "b.txt"), 0) << slurp(out / "b.txt");
  const LoadedModel best = load_model((out / "run" / "best.vit").string());
  const LoadedModel last = load_model((out / "run" / "last.vit").string());
  EXPECT_EQ(best.meta.extra.at("epoch").get<int>(), 2);
  const ViT &b = *best.model, &l = *last.model;
  EXPECT_TRUE(std::equal(b.param_data(), b.param_data() + b.num_params(), l.param_data()));
  fs::remove_all(out);
}

// A SIGKILL during a checkpoint write leaves the atomic writer's last.vit.tmp.<pid>; --resume kept
// it (a model's size each time). Opening the run folder removes the temporaries of the run's own
// files whose process is gone, and nothing else.
TEST(Trainer, ResumeRemovesStaleTemporariesOfTheRunsFilesOnly) {
  auto out = tmpdir("stale");
  train(request(out, {"epochs=1"}));
  const pid_t gone = fork();
  if (gone == 0) _exit(0);
  waitpid(gone, nullptr, 0);  // a pid whose process has ended
  // alive: not this process, whose own writes go through last.vit.tmp.<its pid>
  const std::string dead = std::to_string(gone), alive = std::to_string(::getppid());
  const std::vector<std::string> stale = {"last.vit.tmp." + dead, "best.vit.tmp." + dead};
  const std::vector<std::string> kept = {"last.vit.tmp." + alive, "notes.txt.tmp." + dead, "last.vit.tmp." + dead + "x",
                                         "last.vit.tmp."};
  for (const auto& f : stale) std::ofstream(out / f) << "half a checkpoint";
  for (const auto& f : kept) std::ofstream(out / f) << "not ours to remove";
  auto r = request(out, {"epochs=2"});
  r.resume = true;
  std::string log;
  r.log = [&](const std::string& s) { log += s + "\n"; };
  train(r);
  for (const auto& f : stale) {
    EXPECT_FALSE(fs::exists(out / f)) << f;
    EXPECT_NE(log.find(f), std::string::npos) << log;
  }
  for (const auto& f : kept) EXPECT_TRUE(fs::exists(out / f)) << f;
  fs::remove_all(out);
}

TEST(Trainer, EvalWritesMetricsAndPictures) {
  auto out = tmpdir("eval");
  ASSERT_EQ(run_cli(cli_train(out / "run", {"epochs=1", "calibrate=true"}), out / "train.txt"), 0)
      << slurp(out / "train.txt");
  for (const char* f : {"config.json", "last.vit", "best.vit", "metrics.csv", "steps.csv", "loss.svg", "accuracy.svg",
                        "summary.md", "report/confusion_counts.svg", "report/reliability.svg"})
    EXPECT_TRUE(fs::exists(out / "run" / f)) << f;
  LoadedModel best = load_model((out / "run/best.vit").string());
  EXPECT_GT(best.meta.temperature, 0.0f);
  EXPECT_NE(best.meta.temperature, 1.0f);  // fitted, not the default

  ASSERT_EQ(run_cli({"eval", "--model", (out / "run/best.vit").string(), "--data", kFixture, "--split", "test", "--out",
                     (out / "ev").string()},
                    out / "eval.txt"),
            0)
      << slurp(out / "eval.txt");
  nlohmann::json j = nlohmann::json::parse(slurp(out / "ev/metrics.json"));
  for (const char* k : {"accuracy", "macro_f1", "balanced_accuracy", "per_class", "confusion", "group9", "ece",
                        "per_source", "hard_classes", "calibration"})
    EXPECT_TRUE(j.contains(k)) << k;
  // internal consistency: the confusion matrix holds every test image (14 classes x 5),
  // and the accuracy is its trace over its sum
  int64_t total = 0, trace = 0;
  for (size_t t = 0; t < j["confusion"].size(); ++t)
    for (size_t p = 0; p < j["confusion"][t].size(); ++p) {
      total += j["confusion"][t][p].get<int64_t>();
      if (t == p) trace += j["confusion"][t][p].get<int64_t>();
    }
  EXPECT_EQ(total, 70);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), double(trace) / 70.0);
  EXPECT_EQ(j["per_class"]["Basophil"]["support"].get<int>(), 5);
  EXPECT_TRUE(j["per_source"].contains("pbc"));
  EXPECT_TRUE(j["per_source"].contains("aml-lmu"));
  for (const char* f :
       {"confusion_counts.svg", "confusion_normalized.svg", "per_class.svg", "reliability.svg", "summary.md"})
    EXPECT_TRUE(fs::exists(out / "ev" / f)) << f;

  // --map onto 5 labels, from a folder of class folders (as bccd-cropped is laid out)
  auto folders = out / "folders";
  for (auto [dir, prefix] : {std::pair{"Neutrophil", "BNE_"}, {"Eosinophil", "EO_"}, {"Basophil", "BA_"}}) {
    fs::create_directories(folders / dir);
    int n = 0;
    for (const auto& f : fs::directory_iterator(kFixture + "/images"))
      if (f.path().filename().string().rfind(prefix, 0) == 0 && n++ < 3)
        fs::copy(f.path(), folders / dir / f.path().filename());
  }
  ASSERT_EQ(run_cli({"eval", "--model", (out / "run/best.vit").string(), "--data", folders.string(), "--map",
                     std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json", "--out", (out / "map").string()},
                    out / "map.txt"),
            0)
      << slurp(out / "map.txt");
  nlohmann::json mj = nlohmann::json::parse(slurp(out / "map/metrics.json"));
  EXPECT_EQ(mj["n"].get<int>(), 9);
  EXPECT_EQ(mj["confusion"].size(), 5u);
  EXPECT_EQ(mj["confusion"][0].size(), 6u);  // 5 targets + "other"
  EXPECT_EQ(mj["confusion_cols"].back().get<std::string>(), "other");
  int64_t other = 0;
  for (const auto& row : mj["confusion"]) other += row[5].get<int64_t>();
  EXPECT_EQ(other, mj["map"]["predicted_other"].get<int64_t>());
  fs::remove_all(out);
}

TEST(Trainer, InitWithFrozenBackboneOnlyMovesTheHead) {
  auto out = tmpdir("init");
  ASSERT_NO_THROW(train(request(out / "src", {"epochs=1"})));
  const std::string src = (out / "src/last.vit").string();
  auto req = request(out / "ft", {"init=" + src, "freeze_backbone_epochs=1", "max_steps=3"});
  train(req);
  LoadedModel a = load_model(src), b = load_model((out / "ft/last.vit").string());
  size_t moved_backbone = 0, moved_head = 0;
  for (const auto& p : b.model->params()) {
    const float* x = a.model->param_data() + a.model->param(p.name).offset;
    const float* y = b.model->param_data() + p.offset;
    size_t d = 0;
    for (size_t i = 0; i < p.numel; ++i) d += x[i] != y[i];
    (p.name.rfind("heads.", 0) == 0 ? moved_head : moved_backbone) += d;
  }
  EXPECT_EQ(moved_backbone, 0u);  // frozen: bit-identical to the init
  EXPECT_GT(moved_head, 0u);      // the head trained
  // an init from another architecture is refused, naming both
  auto bad = request(out / "bad", {"init=" + src, "dim=48"});
  try {
    train(bad);
    FAIL() << "expected a refusal";
  } catch (const std::exception& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("48"), std::string::npos) << m;
    EXPECT_NE(m.find("32"), std::string::npos) << m;
  }
  fs::remove_all(out);
}

// cell_size=normalize: the run measures the fraction on the sample stain-ref takes, stores it as
// the model's own, and trains and validates on rescaled views. The views are checked through eval:
// the run's own val loss is the NLL that `eval --cell-size normalize` computes on the saved model,
// not the one of the plain views.
TEST(Trainer, CellSizeNormalizeTrainsAndValidatesOnRescaledViews) {
  auto out = tmpdir("cellsize");
  ASSERT_NO_THROW(train(request(out / "run", {"epochs=1", "cell_size=normalize"})));
  const std::string model = (out / "run/last.vit").string();
  LoadedModel lm = load_model(model);
  ASSERT_TRUE(lm.meta.extra.contains("cell_size"));
  const nlohmann::json& cs = lm.meta.extra["cell_size"];
  EXPECT_TRUE(cs.value("trained", false));
  // the test's own sample: every train row of the data (56 < 300), at the model's 32 px
  const std::vector<Sample> rows = select(read_manifest_resolved(manifest_path(small_data())), "train");
  const CellSizeReference want = cell_size_reference(reference_images(rows, 32));
  EXPECT_EQ(want.images, 56);
  EXPECT_DOUBLE_EQ(cs.at("fraction").get<double>(), want.fraction);

  const auto rows_csv = csv_rows(out / "run/metrics.csv");
  const double val_loss = std::stod(rows_csv.back().at(4));  // epoch,step,train_loss,train_acc,val_loss
  auto eval_nll = [&](const char* mode) {
    EvalRequest e;
    e.model = model, e.data = small_data(), e.split = "val", e.cell_size = mode;
    e.out = (out / (std::string("ev_") + mode)).string();
    e.log = [](const std::string&) {};
    const nlohmann::json j = evaluate(e);
    EXPECT_EQ(j["cell_size"], std::string(mode) == "none" ? "none" : "normalize") << mode;  // what auto meant
    return j["nll"].get<double>();
  };
  const double rescaled = eval_nll("normalize"), plain = eval_nll("none");
  EXPECT_NEAR(rescaled, val_loss, 1e-4 * val_loss);  // the same forward: they agree to ~1e-7
  EXPECT_GT(std::fabs(plain - val_loss), 10 * std::fabs(rescaled - val_loss)) << plain << " " << rescaled;
  // by default (auto) such a model is shown the views it was trained on, by eval and by predict
  EXPECT_EQ(eval_nll("auto"), rescaled);
  const std::string img = rows.front().full_path();
  auto predicted = [&](std::vector<std::string> mode) {
    std::vector<std::string> a = {"predict", "--model", model, "--format", "json", "--top-k", "14", img};
    a.insert(a.end(), mode.begin(), mode.end());
    EXPECT_EQ(run_cli(a, out / "predict.txt"), 0) << slurp(out / "predict.txt");
    return slurp(out / "predict.txt");
  };
  EXPECT_EQ(predicted({}), predicted({"--cell-size", "normalize"}));
  EXPECT_NE(predicted({}), predicted({"--cell-size", "none"}));

  // stain-ref keeps the trained fraction, where a 3-image sample of its own would store another
  const CellSizeReference three = cell_size_reference(reference_images(rows, 32, 3, 7));
  ASSERT_NE(three.fraction, want.fraction);
  ASSERT_EQ(run_cli({"stain-ref", "--model", model, "--data", small_data(), "--images", "3", "--seed", "7", "--out",
                     (out / "ref.vit").string()},
                    out / "ref.txt"),
            0)
      << slurp(out / "ref.txt");
  EXPECT_NE(slurp(out / "ref.txt").find("kept the model's own"), std::string::npos) << slurp(out / "ref.txt");
  EXPECT_EQ(load_model((out / "ref.vit").string()).meta.extra["cell_size"], cs);
  fs::remove_all(out);
}

// cell_size=normalize on images that are not blood cells (no white cell in any): refused before a
// step, saying so and naming the key, and no checkpoint is written.
TEST(Trainer, CellSizeNormalizeOnImagesWithoutCellsIsRefusedBeforeAStep) {
  auto out = tmpdir("cellsize_none");
  for (const auto& [cls, rgb] : {std::pair{"leaves", std::array<uint8_t, 3>{70, 160, 60}},
                                 {"sand", std::array<uint8_t, 3>{200, 180, 120}}})
    for (int i = 0; i < 12; ++i) {
      Image im;
      im.width = im.height = 32;
      im.rgb.resize(32 * 32 * 3);
      for (size_t p = 0; p < im.rgb.size(); ++p) im.rgb[p] = uint8_t(rgb[p % 3] + (p * 7 + size_t(i) * 13) % 9);
      fs::create_directories(out / "src" / cls);
      write_png((out / "src" / cls / (std::to_string(i) + ".png")).string(), im);
    }
  PrepareOptions po;
  po.labeler = folder_labeler({(out / "src").string()});
  po.srcs = {(out / "src").string()};
  po.out = (out / "prep").string();
  po.size = 32;
  po.min_side = 8;
  prepare_dataset(po);
  auto req = request(out / "run", {"cell_size=normalize"});
  req.data = (out / "prep").string();
  try {
    train(req);
    FAIL() << "expected a refusal";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cell_size=normalize"), std::string::npos) << m;
    EXPECT_NE(m.find("no cell found"), std::string::npos) << m;
  }
  EXPECT_FALSE(fs::exists(out / "run/last.vit"));
  fs::remove_all(out);
}

// eval without --model takes the model predict, explain, differential and serve take
// ($VITENGINE_MODEL first), as docs/robustness.md's workflow for a new lab writes it.
TEST(Trainer, EvalWithoutAModelTakesTheDefaultOne) {
  auto out = tmpdir("evaldefault");
  ASSERT_NO_THROW(train(request(out / "run", {"epochs=1"})));
  const std::string model = (out / "run/last.vit").string();
  ::setenv("VITENGINE_MODEL", model.c_str(), 1);
  const int rc = run_cli({"eval", "--data", small_data(), "--split", "val", "--out", (out / "ev").string()},
                         out / "eval.txt");
  ::unsetenv("VITENGINE_MODEL");
  ASSERT_EQ(rc, 0) << slurp(out / "eval.txt");
  const nlohmann::json j = nlohmann::json::parse(slurp(out / "ev/metrics.json"));
  EXPECT_EQ(j["model"], model);
  EXPECT_EQ(j["n"].get<int>(), 14);
  // an --out that is a file is named before any image is classified (it was a raw filesystem error
  // after the whole run), and the file is left as it was
  std::ofstream(out / "taken") << "a file";
  ASSERT_EQ(run_cli({"eval", "--model", model, "--data", small_data(), "--split", "val", "--out",
                     (out / "taken").string()},
                    out / "eval2.txt"),
            1);
  EXPECT_NE(slurp(out / "eval2.txt").find("--out '" + (out / "taken").string() + "' is a file"), std::string::npos)
      << slurp(out / "eval2.txt");
  EXPECT_EQ(slurp(out / "eval2.txt").find("[eval] accuracy"), std::string::npos);
  EXPECT_EQ(slurp(out / "taken"), "a file");
  fs::remove_all(out);
}

TEST(Trainer, PackedSplitsGiveTheSameRunAsTheFiles) {
  auto out = tmpdir("pack");
  // a copy of the small data set with train.pack and val.pack at the model's 32 px
  fs::path data = out / "data";
  fs::create_directories(data);
  fs::copy_file(small_data() + "/manifest.csv", data / "manifest.csv");
  fs::copy_file(small_data() + "/report.json", data / "report.json");
  Manifest m = read_manifest_resolved((data / "manifest.csv").string());
  write_pack((data / "train.pack").string(), select(m, "train", 100), m.classes, 32, 1, "train");
  write_pack((data / "val.pack").string(), select(m, "val", 100), m.classes, 32, 1, "val");

  std::string log;
  auto with = request(out / "with", {"augment=light", "dropout=0.1"});
  with.data = data.string();
  with.log = [&](const std::string& s) { log += s + "\n"; };
  train(with);
  EXPECT_NE(log.find("train images from"), std::string::npos) << log;
  EXPECT_NE(log.find("val images from"), std::string::npos) << log;

  auto without = request(out / "without", {"augment=light", "dropout=0.1", "use_packs=false"});
  without.data = data.string();
  train(without);
  EXPECT_EQ(slurp(out / "with/steps.csv"), slurp(out / "without/steps.csv"));
  EXPECT_EQ(csv_rows(out / "with/metrics.csv")[3][6], csv_rows(out / "without/metrics.csv")[3][6]);  // val macro-F1

  // a pack at another size is ignored, with the reason
  std::string log2;
  auto other = request(out / "other", {"image_size=64", "max_steps=1"});
  other.data = data.string();
  other.log = [&](const std::string& s) { log2 += s + "\n"; };
  train(other);
  EXPECT_NE(log2.find("not using"), std::string::npos) << log2;
  EXPECT_NE(log2.find("32 px"), std::string::npos) << log2;
  fs::remove_all(out);
}
