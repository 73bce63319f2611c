// `vitengine pretrain` (engine/train/pretrain.h) on a tiny model and the committed fixture: the
// loss falls and every file is written; a stopped run resumes onto the same losses and weights;
// bad data, a foreign or changed checkpoint and a NaN loss are refused by name; a plain folder of
// images works; and fine-tuning from the encoder with layer-wise lr decay scales each layer's step.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/data/image.h"
#include "engine/train/pretrain.h"
#include "engine/train/trainer.h"
#include "engine/wbc/app.h"
#include "tests/train_test_util.h"
#include "weights/checkpoint.h"

using namespace vit;
using namespace train_test;

namespace {

std::vector<std::string> tiny_mae() {
  return {"image_size=32", "patch=8",       "dim=32",          "depth=2",          "heads=2",
          "mlp_dim=64",    "batch_size=8",  "epochs=3",        "lr=2e-3",          "threads=1",
          "log_every=1000", "decoder_dim=16", "decoder_depth=1", "decoder_heads=2", "decoder_mlp_dim=32"};
}

PretrainRequest mae_request(const fs::path& out, std::vector<std::string> extra = {}, const std::string& data = "") {
  auto sets = tiny_mae();
  sets.insert(sets.end(), extra.begin(), extra.end());
  PretrainRequest r;
  r.config = TrainConfig::load("", sets);
  r.data = data.empty() ? small_data() : data;
  r.out = out.string();
  r.log = [](const std::string&) {};
  return r;
}

template <class E>
std::string refusal(const PretrainRequest& r) {
  try {
    pretrain(r);
  } catch (const E& e) {
    return e.what();
  }
  return "(no refusal)";
}

}  // namespace

TEST(Pretrain, LossFallsAndEveryFileIsWritten) {
  auto out = tmpdir("mae_files");
  const PretrainSummary s = pretrain(mae_request(out / "run", {"epochs=4", "pictures_every=2"}));
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.epochs_done, 4);
  EXPECT_EQ(s.steps, 4 * 7);  // 56 train images, batches of 8
  auto m = csv_rows(out / "run/metrics.csv");
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0][2], "train_loss");
  EXPECT_LT(std::stod(m[4][2]), std::stod(m[1][2]));  // the reconstruction improves
  EXPECT_EQ(csv_rows(out / "run/steps.csv").size(), 1u + 28u);
  EXPECT_NE(slurp(out / "run/loss.svg").find("<svg"), std::string::npos);
  for (const char* p : {"pictures/epoch_002.png", "pictures/epoch_004.png"}) {
    const Image im = load_image((out / "run" / p).string());  // a real PNG decoder reads it
    EXPECT_EQ(im.width, 3 * 96 + 16) << p;                    // three 96 px columns and four gaps
    EXPECT_EQ(im.height, 8 * 96 + 9 * 4) << p;
  }
  // encoder.vit is a plain ViT file; last.vit also carries the decoder and both optimisers
  LoadedModel enc = load_model((out / "run/encoder.vit").string());
  EXPECT_EQ(enc.model->config().dim, 32);
  EXPECT_FALSE(enc.has_optimizer);
  EXPECT_TRUE(enc.extras.empty());
  LoadedModel last = load_model((out / "run/last.vit").string());
  EXPECT_TRUE(last.has_optimizer);
  EXPECT_EQ(last.extras.count("mae/mask_token"), 1u);
  EXPECT_EQ(last.extras.count("mae/optimizer.adam_v"), 1u);
  EXPECT_EQ(last.extras.at("mae/decoder_pred.weight").shape, (std::vector<int64_t>{3 * 8 * 8, 16}));
  fs::remove_all(out);
}

TEST(Pretrain, StoppedRunResumesOntoTheSameLossesAndWeights) {
  auto out = tmpdir("mae_resume");
  pretrain(mae_request(out / "ref"));
  const PretrainSummary cut = pretrain(mae_request(out / "cut", {"max_steps=10"}));  // mid-epoch 2
  EXPECT_FALSE(cut.finished);
  auto again = mae_request(out / "cut");
  again.resume = true;
  EXPECT_TRUE(pretrain(again).finished);
  auto a = csv_rows(out / "ref/steps.csv"), b = csv_rows(out / "cut/steps.csv");
  ASSERT_EQ(a.size(), 1u + 21u);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 1; i < a.size(); ++i) EXPECT_EQ(a[i][2], b[i][2]) << "loss of step " << a[i][0];
  LoadedModel wa = load_model((out / "ref/last.vit").string()), wb = load_model((out / "cut/last.vit").string());
  size_t diff = 0;
  for (size_t i = 0; i < wa.model->num_params(); ++i) diff += wa.model->param_data()[i] != wb.model->param_data()[i];
  EXPECT_EQ(diff, 0u);
  EXPECT_EQ(wa.extras.at("mae/decoder_embed.weight").data, wb.extras.at("mae/decoder_embed.weight").data);
  // a resume with another recipe is refused, naming the field
  auto changed = mae_request(out / "cut", {"mask_ratio=0.5"});
  changed.resume = true;
  EXPECT_NE(refusal<CheckpointMismatch>(changed).find("mask_ratio"), std::string::npos);
  fs::remove_all(out);
}

TEST(Pretrain, RefusesBadDataForeignCheckpointsAndNaNByName) {
  auto out = tmpdir("mae_refuse");
  EXPECT_NE(refusal<std::runtime_error>(mae_request(out / "a", {}, (out / "nowhere").string())).find("nowhere"),
            std::string::npos);
  fs::create_directories(out / "empty");
  EXPECT_NE(refusal<std::runtime_error>(mae_request(out / "b", {}, (out / "empty").string())).find("no images"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(out / "a"));  // a run that cannot start leaves no folder
  // a classifier's checkpoint is not a pretraining one
  fs::create_directories(out / "c");
  TrainRequest t;
  t.config = TrainConfig::load("", {"image_size=32", "patch=8", "dim=32", "depth=2", "heads=2", "mlp_dim=64",
                                    "batch_size=8", "epochs=1", "threads=1", "calibrate=false"});
  t.data = small_data(), t.out = (out / "c").string(), t.log = [](const std::string&) {};
  t.groups = wbc::class_groups();
  train(t);
  auto foreign = mae_request(out / "c");
  foreign.resume = true;
  EXPECT_NE(refusal<CheckpointMismatch>(foreign).find("not a pretraining checkpoint"), std::string::npos);
  // a NaN loss stops the run naming the step, and the checkpoint of epoch 1 stays
  auto nan = mae_request(out / "d");
  nan.nan_at_step = 9;
  const std::string m = refusal<TrainingDiverged>(nan);
  EXPECT_NE(m.find("step 9"), std::string::npos) << m;
  EXPECT_NO_THROW(load_model((out / "d/last.vit").string()));
  fs::remove_all(out);
}

// A second `pretrain --out RUN` without --resume trained from scratch over RUN's checkpoints: the
// first run's last.vit and encoder.vit were overwritten. It is refused, as `train` refuses it, and
// the files stay byte for byte.
TEST(Pretrain, ASecondRunIntoTheSameFolderIsRefused) {
  auto out = tmpdir("mae_twice");
  pretrain(mae_request(out / "run", {"epochs=1"}));
  const std::string last = slurp(out / "run/last.vit"), enc = slurp(out / "run/encoder.vit");
  const std::string m = refusal<std::runtime_error>(mae_request(out / "run", {"epochs=1", "seed=5"}));
  EXPECT_NE(m.find((out / "run/last.vit").string() + "' already exists"), std::string::npos) << m;
  EXPECT_NE(m.find("--resume"), std::string::npos) << m;
  EXPECT_EQ(slurp(out / "run/last.vit"), last);
  EXPECT_EQ(slurp(out / "run/encoder.vit"), enc);
  fs::remove_all(out);
}

// With --out inside the folder of images (pretrain --data photos --out photos/mae), a resumed or a
// later run read the run's reconstruction pictures (RUN/pictures/epoch_NNN.png) as training images:
// 25 images where the folder has 24. Such an --out is refused, before anything is written; beside
// the folder it runs.
TEST(Pretrain, RunFolderInsideTheImageFolderIsRefused) {
  auto out = tmpdir("mae_inside");
  fs::create_directories(out / "photos");
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(kFixture + "/images"))
    if (n < 24) fs::copy_file(e.path(), out / "photos" / e.path().filename()), ++n;
  for (const char* run : {"photos/mae", "photos"}) {
    const std::string m = refusal<std::runtime_error>(mae_request(out / run, {"epochs=1"}, (out / "photos").string()));
    EXPECT_NE(m.find("--out '" + (out / run).string() + "' lies inside"), std::string::npos) << m;
    EXPECT_FALSE(fs::exists(out / "photos/mae")) << run;
    EXPECT_FALSE(fs::exists(out / "photos/last.vit")) << run;
  }
  EXPECT_TRUE(pretrain(mae_request(out / "mae", {"epochs=1"}, (out / "photos").string())).finished);
  fs::remove_all(out);
}

// A folder of anyone's images holds a file that is none (a truncated download, a page saved as .jpg):
// the loader met it mid-epoch and the run stopped there, one such file per try. They are found up
// front now, named in the log and left out; the run trains on the others. None readable: an error.
TEST(Pretrain, UnreadableImagesOfAFolderAreNamedAndLeftOut) {
  auto out = tmpdir("mae_unreadable");
  auto write_file = [](const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; };
  fs::create_directories(out / "photos");
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(kFixture + "/images"))
    if (n < 24) fs::copy_file(e.path(), out / "photos" / e.path().filename()), ++n;
  write_file(out / "photos/page.jpg", "<html>not a picture</html>");
  const std::string jpeg = slurp(kFixture + "/images/BA_100102.jpg");
  write_file(out / "photos/cut.jpg", jpeg.substr(0, jpeg.size() / 2));
  auto r = mae_request(out / "run", {"epochs=1"}, (out / "photos").string());
  std::string said;
  r.log = [&](const std::string& line) { said += line + "\n"; };
  EXPECT_TRUE(pretrain(r).finished);
  EXPECT_NE(said.find(" " + std::to_string(n) + " images: every image under"), std::string::npos) << said;
  for (const char* f : {"page.jpg", "cut.jpg"})
    EXPECT_NE(said.find("skipped, cannot be read: " + (out / "photos" / f).string()), std::string::npos) << said;
  fs::create_directories(out / "junk");
  write_file(out / "junk/a.png", "PNG? no");
  const std::string m = refusal<std::runtime_error>(mae_request(out / "run2", {}, (out / "junk").string()));
  EXPECT_NE(m.find("none of the 1 images"), std::string::npos) << m;
  fs::remove_all(out);
}

// A folder whose name is not UTF-8 (Latin-1 "ph\xf6tos") ended the run at its start in nlohmann's
// "invalid UTF-8 byte" (config.json, then the checkpoints name the data), leaving a folder with
// steps.csv alone. It runs; config.json and encoder.vit name it with U+FFFD for the bad byte.
TEST(Pretrain, AFolderWhoseNameIsNotUtf8Works) {
  auto out = tmpdir("mae_latin1");
  const fs::path photos = out / "ph\xf6tos";
  fs::create_directories(photos);
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(kFixture + "/images"))
    if (n < 16) fs::copy_file(e.path(), photos / e.path().filename()), ++n;
  EXPECT_TRUE(pretrain(mae_request(out / "run", {"epochs=1"}, photos.string())).finished);
  const std::string shown = "every image under " + (out / "ph\xEF\xBF\xBDtos").string();
  EXPECT_EQ(nlohmann::json::parse(slurp(out / "run/config.json"))["_data"], shown);
  EXPECT_EQ(load_model((out / "run/encoder.vit").string()).meta.extra["pretrained"]["data"], shown);
  fs::remove_all(out);
}

TEST(Pretrain, AnyFolderOfImagesWorks) {
  auto out = tmpdir("mae_folder");
  const PretrainSummary s = pretrain(mae_request(out / "run", {"epochs=1"}, kFixture + "/images"));
  EXPECT_TRUE(s.finished);
  EXPECT_GT(s.steps, 0);
  EXPECT_TRUE(std::isfinite(s.last_epoch_loss));
  fs::remove_all(out);
}

// The new head starts at zero (torchvision's init), so step 1 moves the head alone; at step 2 Adam
// moves every backbone weight with a gradient by the same multiple of its learning rate (m/sqrt(v)
// after one non-zero gradient is 0.744 g/|g|). So the mean |change| of two tensors compares as
// their layers' scales: layer_decay^(depth + 1 - layer).
TEST(Pretrain, FineTuningFromTheEncoderScalesEachLayersStep) {
  auto out = tmpdir("mae_ft");
  pretrain(mae_request(out / "pt", {"epochs=1"}));
  const std::string enc = (out / "pt/encoder.vit").string();
  TrainRequest t;
  t.config = TrainConfig::load("", {"image_size=32", "patch=8", "dim=32", "depth=2", "heads=2", "mlp_dim=64",
                                    "batch_size=8", "epochs=1", "threads=1", "calibrate=false", "lr=1e-3",
                                    "weight_decay=0", "init=" + enc, "layer_decay=0.5", "max_steps=2"});
  t.data = small_data(), t.out = (out / "ft").string(), t.log = [](const std::string&) {};
  t.groups = wbc::class_groups();
  train(t);
  LoadedModel a = load_model(enc), b = load_model((out / "ft/last.vit").string());
  auto mean_step = [&](const std::string& name) {
    const auto& p = b.model->param(name);
    const float* x = a.model->param_data() + a.model->param(name).offset;
    const float* y = b.model->param_data() + p.offset;
    double s = 0;
    for (size_t i = 0; i < p.numel; ++i) s += std::fabs(double(y[i]) - x[i]);
    return s / double(p.numel);
  };
  const double top = mean_step("encoder.ln.weight");  // layer depth + 1: the full rate
  EXPECT_NEAR(top / 1e-3, 0.744, 0.08);                 // Adam's second step, constant lr 1e-3
  EXPECT_NEAR(mean_step("encoder.layers.encoder_layer_1.mlp.0.weight") / top, 0.5, 0.05);
  EXPECT_NEAR(mean_step("encoder.layers.encoder_layer_0.mlp.0.weight") / top, 0.25, 0.025);
  EXPECT_NEAR(mean_step("conv_proj.weight") / top, 0.125, 0.0125);  // 0.5^3: below block 0
  fs::remove_all(out);
}

TEST(Pretrain, CudaIsRefusedAsNotBuiltYet) {
  auto out = tmpdir("mae_cuda");
  const int rc = run_cli({"pretrain", "--data", small_data(), "--out", (out / "r").string(), "--device", "cuda"},
                         out / "log.txt");
  EXPECT_EQ(rc, 3) << slurp(out / "log.txt");
  EXPECT_NE(slurp(out / "log.txt").find("CPU only"), std::string::npos) << slurp(out / "log.txt");
  fs::remove_all(out);
}
