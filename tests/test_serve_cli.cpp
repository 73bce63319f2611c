// `vitengine predict`, `explain` and `differential` run as the user runs them, on a
// tiny random model and synthetic images; and the Batcher's queue bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/serve/batcher.h"
#include "engine/eval/rollout.h"
#include "serve_test_util.h"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = vt::temp_dir("cli");
    model_ = dir_ + "/tiny.vit";
    vt::write_tiny_model(model_);
    fs::create_directories(dir_ + "/smear/sub");
    vt::write_file(dir_ + "/smear/a.png", vt::png_bytes(40, 40, 1));
    vt::write_file(dir_ + "/smear/b.jpg", vt::jpeg_bytes(50, 60, 2));
    vt::write_file(dir_ + "/smear/sub/c.PNG", vt::png_bytes(30, 30, 3));
    vt::write_file(dir_ + "/smear/notes.txt", "ignored: not an image extension");
    vt::write_file(dir_ + "/smear/.DS_1.jpg", "Bud1 macOS metadata, not a JPEG");  // like the data set's fault
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string bin() { return std::string(VITENGINE_BINARY); }
  static std::string dir_, model_;
};
std::string Cli::dir_, Cli::model_;

TEST_F(Cli, PredictJsonReportsBadFileAndGoesOn) {
  std::string out, err;
  int rc = vt::run(bin() + " predict --model " + model_ + " --format json --top-k 2 " + dir_ + "/smear", &out, &err);
  EXPECT_EQ(rc, 1) << "a file failed, so the exit code must be 1\n" << err;
  std::istringstream lines(out);
  std::string line;
  int good = 0, bad = 0;
  while (std::getline(lines, line)) {
    json j = json::parse(line);
    if (j.contains("error")) {
      ++bad;
      EXPECT_NE(j["file"].get<std::string>().find(".DS_1.jpg"), std::string::npos);
    } else {
      ++good;
      EXPECT_EQ(j["top"].size(), 2u);
      double s = 0;
      for (auto& [k, v] : j["probabilities"].items()) s += v.get<double>();
      EXPECT_NEAR(s, 1.0, 1e-4);
    }
  }
  EXPECT_EQ(good, 3);  // a.png, b.jpg, sub/c.PNG; notes.txt is not looked at
  EXPECT_EQ(bad, 1);
  EXPECT_NE(err.find(".DS_1.jpg"), std::string::npos) << err;
}

TEST_F(Cli, PredictTableCsvAndAllGood) {
  std::string out, err;
  EXPECT_EQ(vt::run(bin() + " predict --model " + model_ + " " + dir_ + "/smear/a.png", &out, &err), 0) << err;
  EXPECT_NE(out.find("1. "), std::string::npos) << out;
  EXPECT_NE(out.find("3. "), std::string::npos) << out;
  EXPECT_EQ(vt::run(bin() + " predict --model " + model_ + " --format csv --batch 1 " + dir_ + "/smear/a.png " + dir_ +
                        "/smear/b.jpg",
                    &out, &err),
            0)
      << err;
  std::istringstream lines(out);
  std::string header, l1, l2;
  std::getline(lines, header);
  std::getline(lines, l1);
  std::getline(lines, l2);
  EXPECT_EQ(header.rfind("file,prediction,confidence,review,class_1,prob_1", 0), 0u) << header;
  EXPECT_NE(l1.find("a.png,"), std::string::npos);
  EXPECT_NE(l2.find("b.jpg,"), std::string::npos);
}

// A folder of images in formats predict does not read said only "no image files found": it names
// how many files it skipped, one of them with its extension, and the extensions it reads.
// A mistyped command is named with the commands there are (the argument parser said only "A
// subcommand is required"); exit 2, as any argument error.
TEST_F(Cli, AMistypedCommandIsNamedWithTheCommandsThereAre) {
  std::string err;
  EXPECT_EQ(vt::run(bin() + " trian --data x", nullptr, &err), 2);
  EXPECT_NE(err.find("'trian' is not a command"), std::string::npos) << err;
  EXPECT_NE(err.find("train, eval, predict"), std::string::npos) << err;
  EXPECT_EQ(vt::run(bin() + " train --bogus", nullptr, &err), 2);  // an option error stays the parser's
  EXPECT_NE(err.find("--bogus"), std::string::npos) << err;
}

// A 1x1 or 300x17 image still gets a confident call: predict warns on stderr, naming it and its
// size, and leaves its output as it is; a normal image gets no warning.
TEST_F(Cli, PredictWarnsOfAnImageTooSmallToTrust) {
  const std::string d = dir_ + "/small";
  fs::create_directories(d);
  vt::write_file(d + "/dot.png", vt::png_bytes(1, 1, 4));
  vt::write_file(d + "/strip.png", vt::png_bytes(300, 17, 5));
  std::string out, err;
  ASSERT_EQ(vt::run(bin() + " predict --model " + model_ + " --format csv " + d + " " + dir_ + "/smear/a.png", &out,
                    &err),
            0)
      << err;
  EXPECT_NE(err.find("dot.png is 1x1, under 32 px a side"), std::string::npos) << err;
  EXPECT_NE(err.find("strip.png is 300x17, under 32 px a side"), std::string::npos) << err;
  EXPECT_EQ(err.find("a.png is"), std::string::npos) << err;  // 40x40: no warning
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 4) << out;  // the header and three calls
  fs::remove_all(d);
}

TEST_F(Cli, PredictOnAFolderOfUnreadFormatsNamesWhatItSkipped) {
  const std::string d = dir_ + "/webp_only";
  fs::create_directories(d + "/sub");
  vt::write_file(d + "/a.webp", "RIFF....WEBP");
  vt::write_file(d + "/sub/b.gif", "GIF89a");
  std::string err;
  EXPECT_EQ(vt::run(bin() + " predict --model " + model_ + " " + d, nullptr, &err), 1) << err;
  for (const char* needle : {"skipped 2 files", "a.webp", "'.webp'", ".jpg", ".jpeg", ".png", ".bmp", ".tif"})
    EXPECT_NE(err.find(needle), std::string::npos) << needle << " in: " << err;
  fs::remove_all(d);
}

// The table padded class names with printf's %-22s, which counts bytes: "细胞" (6 bytes, 4
// columns on a terminal) and "Ångström" (9 bytes, 8 columns) pushed the percentages left.
// Every name now takes 22 columns, wide East Asian characters counting 2.
TEST_F(Cli, PredictTableAlignsClassNamesInUtf8) {
  const std::map<std::string, int> columns = {{"细胞", 4}, {"Ångström", 8}, {"ｆｕｌｌ", 8}, {"plain", 5}};
  vit::LoadedModel lm = vit::load_model(model_);
  auto it = columns.begin();
  for (size_t c = 0; c < 4; ++c, ++it) lm.meta.class_names[c] = it->first;
  const std::string m = dir_ + "/utf8.vit";
  vit::save_model(m, *lm.model, lm.meta);
  std::string out, err;
  ASSERT_EQ(vt::run(bin() + " predict --top-k 14 --model " + m + " " + dir_ + "/smear/a.png", &out, &err), 0) << err;
  std::istringstream lines(out);
  int checked = 0;
  for (std::string line; std::getline(lines, line);)
    for (const auto& [name, width] : columns) {
      const size_t at = line.find(". " + name + " ");
      if (at == std::string::npos) continue;
      const std::string rest = line.substr(at + 2 + name.size());  // the padding, " ", "%6.2f", "%"
      const size_t pct = rest.find('%');
      ASSERT_NE(pct, std::string::npos) << line;
      EXPECT_EQ(width + int(pct) - 7, 22) << line;
      ++checked;
    }
  EXPECT_EQ(checked, 4) << out;
  fs::remove(m);
}

TEST_F(Cli, PredictMissingModelIsAClearError) {
  std::string err;
  EXPECT_EQ(vt::run(bin() + " predict --model " + dir_ + "/nope.vit " + dir_ + "/smear/a.png", nullptr, &err), 1);
  EXPECT_NE(err.find("nope.vit"), std::string::npos) << err;
  EXPECT_EQ(vt::run(bin() + " predict --model " + model_ + " --format xml " + dir_ + "/smear/a.png", nullptr, &err), 2);
}

TEST_F(Cli, PredictOnCudaWithoutAGpuSaysSo) {
  // CI has no GPU: --device cuda must end with a clear CUDA error (no device, or a
  // build without CUDA), not a crash and not a silent CPU run.
  std::string err;
  int rc = vt::run(bin() + " predict --device cuda --model " + model_ + " " + dir_ + "/smear/a.png", nullptr, &err);
  if (rc == 0) GTEST_SKIP() << "a CUDA device is present: covered by the GPU runs";
  EXPECT_EQ(rc, 1) << err;
  EXPECT_NE(err.find("CUDA"), std::string::npos) << err;
}

TEST_F(Cli, ExplainWritesEveryMap) {
  std::string out_dir = dir_ + "/explain", err;
  ASSERT_EQ(vt::run(bin() + " explain --model " + model_ + " " + dir_ + "/smear/a.png --out " + out_dir, nullptr, &err),
            0)
      << err;
  // 2 layers x (2 heads + mean) + rollout + grid
  for (const char* f : {"rollout.png", "grid.png", "layer00_head00.png", "layer00_head01.png", "layer00_mean.png",
                        "layer01_head01.png", "layer01_mean.png", "explain.json"})
    EXPECT_TRUE(fs::is_regular_file(out_dir + "/" + f)) << f;
  std::string png = vt::read_file(out_dir + "/rollout.png");
  vit::Image im = vit::decode_image(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "rollout.png");
  EXPECT_EQ(im.width, 32);
  json meta = json::parse(vt::read_file(out_dir + "/explain.json"));
  EXPECT_EQ(meta["files"].size(), 8u);
  EXPECT_EQ(meta["grid"], 4);
}

// explain says what predict says of an image unlike the training data: a map of such an image
// explains a call to distrust. A threshold below every energy flags any image; the score is
// predict's for the same image, and a model without a threshold says null (unknown), not false.
TEST_F(Cli, ExplainFlagsAnImageUnlikeTheTrainingDataAsPredictDoes) {
  vit::LoadedModel lm = vit::load_model(model_);
  lm.meta.extra["ood"] = {{"score", "energy"}, {"threshold", -1e9}, {"fpr", 0.05}};
  const std::string flagged = dir_ + "/flag_all.vit", img = dir_ + "/smear/a.png";
  vit::save_model(flagged, *lm.model, lm.meta);
  std::string out, err;
  ASSERT_EQ(vt::run(bin() + " explain --model " + flagged + " " + img + " --out " + dir_ + "/ex_flag", &out, &err), 0)
      << err;
  EXPECT_NE(out.find("unlike the training data: expect lower accuracy"), std::string::npos) << out;
  const json e = json::parse(vt::read_file(dir_ + "/ex_flag/explain.json"));
  EXPECT_EQ(e["unlike_training_data"], true);
  ASSERT_EQ(vt::run(bin() + " predict --format json --model " + flagged + " " + img, &out, &err), 0) << err;
  const json p = json::parse(out);
  EXPECT_EQ(p["unlike_training_data"], true);
  // explain's forward keeps the attention maps, predict's is the inference path: float rounding apart
  EXPECT_NEAR(e["ood_score"].get<double>(), p["ood_score"].get<double>(), 1e-5 * std::fabs(p["ood_score"].get<double>()));

  ASSERT_EQ(vt::run(bin() + " explain --model " + model_ + " " + img + " --out " + dir_ + "/ex_plain", &out, &err), 0)
      << err;
  EXPECT_EQ(out.find("unlike"), std::string::npos) << out;
  EXPECT_TRUE(json::parse(vt::read_file(dir_ + "/ex_plain/explain.json"))["unlike_training_data"].is_null());
}

// "--alpha nan" passed the [0, 1] check and wrote every overlay black, exit 0; "--tile 100000" ended
// in std::bad_alloc. Both are argument errors now (exit 2) naming the option, and nothing is written.
TEST_F(Cli, ExplainRefusesANanAlphaAndAHugeTile) {
  for (const std::string& opt : {"--alpha nan", "--alpha 1.5", "--tile 100000", "--tile 8"}) {
    const std::string out_dir = dir_ + "/explain_bad";
    std::string err;
    EXPECT_EQ(vt::run(bin() + " explain --model " + model_ + " " + dir_ + "/smear/a.png --out " + out_dir + " " + opt,
                      nullptr, &err),
              2)
        << opt << ": " << err;
    EXPECT_NE(err.find(opt.substr(0, opt.find(' '))), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(out_dir)) << opt;
    fs::remove_all(out_dir);
  }
}

TEST_F(Cli, DifferentialWritesHtmlAndJson) {
  std::string out, err;
  std::string html = dir_ + "/out/report.html";
  // --review-below 1.01: every cell is listed for review, so thumbnails must appear.
  ASSERT_EQ(
      vt::run(bin() + " differential " + dir_ + "/smear --out " + html + " --model " + model_ + " --review-below 1.01",
              &out, &err),
      0)
      << err;
  json r = json::parse(vt::read_file(dir_ + "/out/report.json"));
  EXPECT_EQ(r["cells_total"], 3);
  EXPECT_EQ(r["unreadable"].size(), 1u);
  EXPECT_EQ(r["review"].size(), 3u);
  EXPECT_EQ(r["ood"]["score"], "energy");  // the tiny model stores no reference: energy, nothing flagged
  EXPECT_TRUE(r["ood"]["threshold"].is_null());
  std::string h = vt::read_file(html);
  EXPECT_NE(h.find("Research tool, not a diagnosis"), std::string::npos);
  EXPECT_NE(h.find("data:image/jpeg;base64,"), std::string::npos);
  EXPECT_NE(h.find("5-part differential"), std::string::npos);
}

// A file name that is not UTF-8 (Latin-1 "caf\xe9.png", as old cameras and Windows shares write
// them) ended explain, differential and predict --format json with nlohmann's "invalid UTF-8 byte"
// after the work was done, and no report. Each JSON now names it with U+FFFD for the bad byte.
TEST_F(Cli, JsonOutputsNameAFileWhoseNameIsNotUtf8) {
  const std::string d = dir_ + "/latin1", shown = "caf\xEF\xBF\xBD.png";  // U+FFFD in UTF-8
  fs::create_directories(d);
  vt::write_file(d + "/caf\xE9.png", vt::png_bytes(40, 40, 4));
  const std::string q = "'" + d + "/caf\xE9.png'";
  std::string out, err;
  ASSERT_EQ(vt::run(bin() + " explain --model " + model_ + " " + q + " --out " + d + "/ex", nullptr, &err), 0) << err;
  EXPECT_EQ(json::parse(vt::read_file(d + "/ex/explain.json"))["image"], d + "/" + shown);
  ASSERT_EQ(vt::run(bin() + " differential " + d + " --out " + d + "/r/report.html --model " + model_ +
                        " --review-below 0",
                    nullptr, &err),
            0)
      << err;
  EXPECT_EQ(json::parse(vt::read_file(d + "/r/report.json"))["cells"][0]["file"], shown);
  ASSERT_EQ(vt::run(bin() + " predict --format json --model " + model_ + " " + q, &out, &err), 0) << err;
  EXPECT_EQ(json::parse(out)["file"], d + "/" + shown);
  fs::remove_all(d);
}

// `differential DIR --out reports/` (a folder, as explain's --out is) wrote a hidden reports/.json,
// then failed on the HTML after every image was classified; an existing folder got a stray
// "<folder>.json" beside it. Both are refused up front (exit 2), nothing written, the fix named.
TEST_F(Cli, DifferentialRefusesAFolderForItsReportFile) {
  const std::string d = dir_ + "/reports";
  for (const std::string& out : {d + "/new/", d + "/old"}) {
    fs::remove_all(d);
    fs::create_directories(d + "/old");
    std::string err;
    EXPECT_EQ(vt::run(bin() + " differential " + dir_ + "/smear --model " + model_ + " --out " + out, nullptr, &err), 2)
        << err;
    EXPECT_NE(err.find("is a folder"), std::string::npos) << err;
    EXPECT_NE(err.find("/report.html"), std::string::npos) << err;
    size_t files = 0;
    for (const auto& e : fs::recursive_directory_iterator(d)) files += e.is_regular_file();
    EXPECT_EQ(files, 0u) << out;
  }
  fs::remove_all(d);
}

// A NaN threshold compared false with every count: "--eos-threshold nan" never raised eosinophilia,
// "--review-below nan" listed no cell, exit 0. Each is an argument error now, naming the option.
TEST_F(Cli, DifferentialRefusesNanThresholds) {
  for (const char* opt :
       {"--review-below", "--ig-threshold", "--band-threshold", "--eos-threshold", "--baso-threshold"}) {
    const std::string html = dir_ + "/nan_rules/report.html";
    std::string err;
    EXPECT_EQ(
        vt::run(bin() + " differential " + dir_ + "/smear --model " + model_ + " --out " + html + " " + opt + " nan",
                nullptr, &err),
        2)
        << opt << ": " << err;
    EXPECT_NE(err.find(opt), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(html)) << opt;
    fs::remove_all(dir_ + "/nan_rules");
  }
}

// ---- the Batcher, in process ----
vit::Predictor tiny_predictor(const std::string& dir) {
  vt::write_tiny_model(dir + "/b.vit");
  return vit::Predictor(dir + "/b.vit");
}

TEST(Batcher, QueueBoundIsAllOrNothing) {
  std::string dir = vt::temp_dir("batcher");
  vit::Predictor p = tiny_predictor(dir);
  // A batching window of 10 s keeps queued images waiting while we probe the bound.
  vit::Batcher b(p, /*max_batch=*/8, /*queue=*/3, /*gather_us=*/10'000'000);
  std::vector<float> x(p.input_floats(), 0.1f);
  auto f2 = b.submit({x, x}, false);
  EXPECT_THROW(b.submit({x, x}, false), vit::QueueFull);  // 2 + 2 > 3: none of them queued
  EXPECT_EQ(b.stats().queue_depth, 2u);
  auto f1 = b.submit({x}, false);  // exactly full
  EXPECT_EQ(b.stats().queue_depth, 3u);
  fs::remove_all(dir);
}

TEST(Batcher, GathersConcurrentImagesIntoOnePass) {
  std::string dir = vt::temp_dir("batcher");
  vit::Predictor p = tiny_predictor(dir);
  std::vector<std::vector<float>> xs;
  std::vector<vit::Prediction> solo;
  std::vector<std::vector<float>> solo_rollout;
  const int H = p.config().heads, N = p.config().seq_len();
  for (int i = 0; i < 4; ++i) {
    vit::Image im = vt::synthetic_cell(40, 40, i);
    xs.emplace_back(p.input_floats());
    p.prepare(im, xs.back().data());
    solo.push_back(p.run(xs.back().data(), 1)[0]);
    solo_rollout.push_back(vit::cls_rollout({p.model().attention_probs(0), p.model().attention_probs(1)}, H, N));
  }
  vit::Batcher b(p, /*max_batch=*/4, /*queue=*/8, /*gather_us=*/2'000'000);
  std::vector<std::future<vit::BatchResult>> futs;
  // Rollout for every image but #1: each must be its own image's map (the batch offset
  // into attention_probs), equal to the solo one.
  for (int i = 0; i < 4; ++i) futs.push_back(std::move(b.submit({xs[i]}, i != 1)[0]));
  for (int i = 0; i < 4; ++i) {
    vit::BatchResult r = futs[i].get();
    EXPECT_EQ(r.batch_size, 4) << "the 4 images should share one forward pass";
    for (size_t c = 0; c < r.pred.probs.size(); ++c) EXPECT_NEAR(r.pred.probs[c], solo[i].probs[c], 1e-5);
    if (i == 1) {
      EXPECT_TRUE(r.rollout.empty());
      continue;
    }
    ASSERT_EQ(r.rollout.size(), 16u);
    // float attention of a batch vs. a single image: same math, different summation
    // blocking in the GEMMs; 1e-5 absolute on values ~1/16 is ample.
    for (size_t k = 0; k < 16; ++k) EXPECT_NEAR(r.rollout[k], solo_rollout[i][k], 1e-5) << "image " << i;
  }
  EXPECT_GT(std::abs(solo_rollout[0][0] - solo_rollout[2][0]) + std::abs(solo_rollout[0][5] - solo_rollout[2][5]), 1e-6)
      << "images 0 and 2 have the same rollout: the check above would prove nothing";
  EXPECT_EQ(b.stats().batches, 1u);
  fs::remove_all(dir);
}

}  // namespace
