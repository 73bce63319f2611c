// vitengine stain-calibrate end to end: stain-ref stores the home smears' anchors, stain-calibrate
// fits the map of another "lab" (the same smears through a known Lab map) from a folder of its
// images, the weights come back byte for byte, and predict --stain-norm calibrated on the other
// lab's images gives the home images' predictions. Bad input (too few images, a corrupt one, a model
// without anchors or without a calibration) is refused by name, and nothing is written.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "engine/data/image.h"
#include "serve_test_util.h"
#include "stain_test_util.h"
#include "weights/checkpoint.h"

namespace fs = std::filesystem;

namespace {

const std::string kBin = VITENGINE_BINARY;

// The other lab: paler, greyer, bluer.
const double kS[3] = {0.8, 0.85, 0.8}, kT[3] = {18, -2, -8};

struct Labs {
  std::string dir = vt::temp_dir("calibrate");
  std::string home = dir + "/home", other = dir + "/other", tiny = dir + "/tiny.vit", ref = dir + "/ref.vit";
  static constexpr int kImages = 24;
  Labs() {
    fs::create_directories(home + "/Lymphocyte"), fs::create_directories(other + "/Lymphocyte");
    std::string csv = "path,label,split,sha256\n";
    for (int i = 0; i < kImages; ++i) {
      // Cells large enough to be found in the tiny model's 32 x 32 view.
      const vit::Image h = vt::smear(i % 3, 40 + (i % 6) * 2);
      const std::string name = "Lymphocyte/s" + std::to_string(i) + ".png";
      vt::write_file(home + "/" + name, bytes(h));
      vt::write_file(other + "/" + name, bytes(vt::other_lab(h, kS, kT)));
      csv += name + ",Lymphocyte,train," + std::to_string(i) + "\n";
    }
    vt::write_file(home + "/manifest.csv", csv);
    vt::write_tiny_model(tiny);
  }
  ~Labs() { fs::remove_all(dir); }
  static std::string bytes(const vit::Image& im) {
    const auto v = vit::encode_png(im);
    return std::string(v.begin(), v.end());
  }
};

std::vector<float> params_of(const std::string& path) {
  vit::LoadedModel lm = vit::load_model(path);
  return std::vector<float>(lm.model->param_data(), lm.model->param_data() + lm.model->num_params());
}

nlohmann::json predict_json(const std::string& model, const std::string& image, const std::string& stain) {
  std::string out, err;
  EXPECT_EQ(vt::run(kBin + " predict --model " + model + " --format json --stain-norm " + stain + " " + image, &out, &err),
            0)
      << err;
  return nlohmann::json::parse(out);
}

}  // namespace

TEST(StainCalibrateCli, FitsTheLabsMapAndPredictMapsItsImagesBack) {
  Labs L;
  std::string out, err;
  ASSERT_EQ(vt::run(kBin + " stain-ref --model " + L.tiny + " --data " + L.home + " --out " + L.ref, &out, &err), 0)
      << err;
  const std::string cal = L.dir + "/cal.vit";
  ASSERT_EQ(vt::run(kBin + " stain-calibrate --model " + L.ref + " --data " + L.other + " --out " + cal, &out, &err), 0)
      << err;
  EXPECT_NE(out.find("--stain-norm calibrated"), std::string::npos) << out;
  const vit::LoadedModel lm = vit::load_model(cal);
  const nlohmann::json& k = lm.meta.extra.at("stain_calibration");
  EXPECT_EQ(k.at("data").get<std::string>(), L.other);
  EXPECT_EQ(k.at("anchors").at("images").get<int>(), Labs::kImages);
  // The inverse of the lab's map, within what the 32-pixel views' resampling blurs.
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(k.at("scale").at(size_t(c)).get<double>(), 1 / kS[c], 0.1 / kS[c]) << c;
  EXPECT_EQ(params_of(cal), params_of(L.tiny));  // the weights, bit for bit
  // The other lab's cell, calibrated, is called as the home lab's own cell is.
  for (int i : {0, 7, 20}) {
    const std::string name = "/Lymphocyte/s" + std::to_string(i) + ".png";
    const nlohmann::json home = predict_json(L.ref, L.home + name, "none");
    const nlohmann::json raw = predict_json(cal, L.other + name, "none");
    const nlohmann::json back = predict_json(cal, L.other + name, "calibrated");
    ASSERT_TRUE(home.contains("probabilities")) << home.dump();
    double d_back = 0, d_raw = 0;
    for (const auto& [cls, p] : home["probabilities"].items()) {
      d_back = std::max(d_back, std::fabs(back["probabilities"][cls].get<double>() - p.get<double>()));
      d_raw = std::max(d_raw, std::fabs(raw["probabilities"][cls].get<double>() - p.get<double>()));
    }
    EXPECT_LT(d_back, 0.02) << "image " << i;
    EXPECT_LT(d_back, d_raw) << "image " << i;  // and the calibration is what brought it back
  }
  // eval records which lab's map it applied.
  ASSERT_EQ(vt::run(kBin + " eval --model " + cal + " --data " + L.other + " --stain-norm calibrated --out " + L.dir +
                        "/ev",
                    &out, &err),
            0)
      << err;
  const nlohmann::json m = nlohmann::json::parse(vt::read_file(L.dir + "/ev/metrics.json"));
  EXPECT_EQ(m.at("stain_norm").get<std::string>(), "calibrated");
  EXPECT_EQ(m.at("stain_calibration").at("data").get<std::string>(), L.other);
  EXPECT_EQ(m.at("stain_calibration").at("scale"), k.at("scale"));
}

// --preview: the first eight images by name, before and after the map, a row each. The "after"
// column is the home lab's image (what the other lab's was made from), the "before" one is not.
TEST(StainCalibrateCli, PreviewShowsTheLabsImagesMappedBackToTheHomeColours) {
  Labs L;
  std::string out, err;
  ASSERT_EQ(vt::run(kBin + " stain-ref --model " + L.tiny + " --data " + L.home + " --out " + L.ref, &out, &err), 0)
      << err;
  const std::string png = L.dir + "/preview.png";
  ASSERT_EQ(vt::run(kBin + " stain-calibrate --model " + L.ref + " --data " + L.other + " --out " + L.dir +
                        "/cal.vit --preview " + png,
                    &out, &err),
            0)
      << err;
  const vit::Image p = vit::load_image(png);
  const int T = 160, pad = 4;
  ASSERT_EQ(p.width, 2 * T + 3 * pad);
  ASSERT_EQ(p.height, 8 * T + 9 * pad);
  auto tile = [&](int row, int col) {
    vit::Image t;
    t.width = t.height = T;
    for (int y = 0; y < T; ++y)
      for (int x = 0; x < T * 3; ++x)
        t.rgb.push_back(p.rgb[(size_t(pad + row * (T + pad) + y) * size_t(p.width) + size_t(pad + col * (T + pad))) * 3 +
                              size_t(x)]);
    return t;
  };
  auto mean_diff = [](const vit::Image& a, const vit::Image& b) {
    double s = 0;
    for (size_t i = 0; i < a.rgb.size(); ++i) s += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
    return s / double(a.rgb.size());
  };
  int row = 0;
  for (const int i : {0, 1, 10, 11, 12, 13, 14, 15}) {  // the first eight names: s0, s1, s10, ...
    const vit::Image home = vit::resize_aa(vit::preprocess(vt::smear(i % 3, 40 + (i % 6) * 2), 32), T, T);
    const double before = mean_diff(tile(row, 0), home), after = mean_diff(tile(row, 1), home);
    EXPECT_LT(after, 4.0) << "row " << row << " (s" << i << ")";
    EXPECT_LT(after, before / 2) << "row " << row << " (s" << i << ")";
    ++row;
  }
}

TEST(StainCalibrateCli, BadInputIsRefusedByNameAndNothingIsWritten) {
  Labs L;
  std::string out, err;
  const std::string cal = L.dir + "/cal.vit";
  // A model whose stain reference has no anchors: stain-ref is the way to add them.
  ASSERT_NE(vt::run(kBin + " stain-calibrate --model " + L.tiny + " --data " + L.other + " --out " + cal, &out, &err), 0);
  EXPECT_NE(err.find("stain-ref"), std::string::npos) << err;
  ASSERT_EQ(vt::run(kBin + " stain-ref --model " + L.tiny + " --data " + L.home + " --out " + L.ref, &out, &err), 0)
      << err;
  // Too few images to average a lab's colours over.
  const std::string few = L.dir + "/few";
  fs::create_directories(few);
  for (int i = 0; i < 5; ++i) fs::copy_file(L.other + "/Lymphocyte/s" + std::to_string(i) + ".png", few + "/" + std::to_string(i) + ".png");
  ASSERT_NE(vt::run(kBin + " stain-calibrate --model " + L.ref + " --data " + few + " --out " + cal, &out, &err), 0);
  EXPECT_NE(err.find("holds 5 images"), std::string::npos) << err;
  // A corrupt image, named.
  vt::write_file(L.other + "/Lymphocyte/broken.png", "not a png at all");
  ASSERT_NE(vt::run(kBin + " stain-calibrate --model " + L.ref + " --data " + L.other + " --out " + cal, &out, &err), 0);
  EXPECT_NE(err.find("broken.png"), std::string::npos) << err;
  fs::remove(L.other + "/Lymphocyte/broken.png");
  // Blank images: no cell to anchor on.
  const std::string blank = L.dir + "/blank";
  fs::create_directories(blank);
  vit::Image b;
  b.width = b.height = 40;
  b.rgb.assign(40 * 40 * 3, 235);
  for (int i = 0; i < 20; ++i) vt::write_file(blank + "/" + std::to_string(i) + ".png", Labs::bytes(b));
  ASSERT_NE(vt::run(kBin + " stain-calibrate --model " + L.ref + " --data " + blank + " --out " + cal, &out, &err), 0);
  EXPECT_NE(err.find("no white cell"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(cal));
  // A model with no calibration asked to apply one: stain-calibrate is the way.
  ASSERT_NE(vt::run(kBin + " predict --model " + L.ref + " --stain-norm calibrated " + L.other + "/Lymphocyte/s0.png", &out,
                    &err),
            0);
  EXPECT_NE(err.find("stain-calibrate"), std::string::npos) << err;
}

// --out may be --model itself (the docs' way to add a calibration in place), but a model made
// read-only (chmod a-w, as a lab protects its shipped model) was replaced all the same: the
// atomic rename needs only the folder's permission. It is refused by name, its bytes as the test
// read them before; a writable one is still updated in place.
TEST(StainCalibrateCli, AReadOnlyModelIsNeverReplacedInPlace) {
  Labs L;
  std::string out, err;
  ASSERT_EQ(vt::run(kBin + " stain-ref --model " + L.tiny + " --data " + L.home + " --out " + L.ref, &out, &err), 0)
      << err;
  const std::string before = vt::read_file(L.ref);
  fs::permissions(L.ref, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  EXPECT_NE(vt::run(kBin + " stain-calibrate --model " + L.ref + " --data " + L.other + " --out " + L.ref, &out, &err),
            0);
  EXPECT_NE(err.find(L.ref + ": the file is read-only"), std::string::npos) << err;
  EXPECT_EQ(vt::read_file(L.ref), before);
  fs::permissions(L.ref, fs::perms::owner_write, fs::perm_options::add);
  ASSERT_EQ(vt::run(kBin + " stain-calibrate --model " + L.ref + " --data " + L.other + " --out " + L.ref, &out, &err), 0)
      << err;
  EXPECT_NE(vt::read_file(L.ref), before);
}
