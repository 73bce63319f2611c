// Calibrated probabilities, top-k, overlays and encoders (engine/eval/inference.h,
// engine/eval/overlay.h), against values worked out by hand.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "engine/eval/overlay.h"
#include "engine/model/vit.h"
#include "engine/data/image.h"
#include "weights/checkpoint.h"

namespace {

TEST(CalibratedSoftmax, TemperatureOneAndTwo) {
  // logits 0, ln 2, ln 4: T=1 gives 1:2:4 / 7; T=2 gives 1 : sqrt2 : 2 / (3 + sqrt2).
  const float logits[3] = {0.0f, std::log(2.0f), std::log(4.0f)};
  float p[3];
  vit::calibrated_softmax(logits, 3, 1.0f, p);
  EXPECT_NEAR(p[0], 1.0 / 7, 1e-6);  // float exp/log: ~1 ulp each, 1e-6 is ample
  EXPECT_NEAR(p[1], 2.0 / 7, 1e-6);
  EXPECT_NEAR(p[2], 4.0 / 7, 1e-6);
  vit::calibrated_softmax(logits, 3, 2.0f, p);
  const double z = 3 + std::sqrt(2.0);
  EXPECT_NEAR(p[0], 1 / z, 1e-6);
  EXPECT_NEAR(p[1], std::sqrt(2.0) / z, 1e-6);
  EXPECT_NEAR(p[2], 2 / z, 1e-6);
}

TEST(CalibratedSoftmax, LargeLogitsStayFinite) {
  const float logits[2] = {1000.0f, 999.0f};  // exp(1000) overflows without the max shift
  float p[2];
  vit::calibrated_softmax(logits, 2, 1.0f, p);
  EXPECT_NEAR(p[0], 1 / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_THROW(vit::calibrated_softmax(logits, 2, 0.0f, p), std::invalid_argument);
}

TEST(TopK, OrderAndTies) {
  std::vector<float> v = {0.1f, 0.4f, 0.1f, 0.4f, 0.0f};
  EXPECT_EQ(vit::top_k(v, 3), (std::vector<int>{1, 3, 0}));
  EXPECT_EQ(vit::top_k(v, 9).size(), 5u);
}

TEST(Overlay, HeatColormapEnds) {
  uint8_t c[3];
  vit::heat_color(0, c);
  EXPECT_EQ(c[0] + c[1] + c[2], 0);
  vit::heat_color(1, c);
  EXPECT_EQ(c[0] + c[1] + c[2], 3 * 255);
}

TEST(Overlay, HotCornerLandsOnTheRightPixels) {
  // Black 8x8 base, 2x2 grid with only the bottom-right cell hot: after min-max scaling
  // that cell is 1 (white), the rest 0 (black). alpha .5 -> bottom-right pixel 128 in
  // every channel, top-left pixel 0.
  vit::Image base;
  base.width = base.height = 8;
  base.rgb.assign(8 * 8 * 3, 0);
  vit::Image o = vit::heat_overlay(base, {0, 0, 0, 1}, 2, 0.5f);
  auto px = [&](int x, int y, int c) { return int(o.rgb[(y * 8 + x) * 3 + c]); };
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(px(7, 7, c), 128);
    EXPECT_EQ(px(0, 0, c), 0);
  }
  EXPECT_GT(px(5, 5, 0), px(2, 2, 0));
}

TEST(Encode, Base64KnownVectors) {
  // RFC 4648 section 10 test vectors.
  auto b = [](const std::string& s) { return vit::base64(std::vector<uint8_t>(s.begin(), s.end())); };
  EXPECT_EQ(b(""), "");
  EXPECT_EQ(b("f"), "Zg==");
  EXPECT_EQ(b("fo"), "Zm8=");
  EXPECT_EQ(b("foobar"), "Zm9vYmFy");
}

TEST(Encode, PngRoundTrip) {
  vit::Image img;
  img.width = 3;
  img.height = 2;
  img.rgb = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90};
  std::vector<uint8_t> png = vit::encode_png(img);
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png[1], 'P');
  vit::Image back = vit::decode_image(png.data(), png.size(), "roundtrip.png");
  EXPECT_EQ(back.width, 3);
  EXPECT_EQ(back.height, 2);
  EXPECT_EQ(back.rgb, img.rgb);
}

}  // namespace

// --cell-size on the prediction path: refused, naming the model and the fix, when the checkpoint
// stores no cell size; with one, the model view is the cell-size view at the stored fraction.
TEST(PredictorCellSize, RefusedWithoutAReferenceAndAppliedWithOne) {
  auto tiny = [](nlohmann::json extra) {
    vit::ViTConfig c;
    c.name = "tiny";
    c.image_size = 32, c.patch = 8, c.dim = 12, c.depth = 1, c.heads = 3, c.mlp_dim = 24, c.num_classes = 2;
    vit::LoadedModel lm;
    lm.model = std::make_unique<vit::ViT>(c);
    lm.model->init(1);
    lm.meta.class_names = {"a", "b"};
    lm.meta.extra = std::move(extra);
    return vit::Predictor(std::move(lm), "tiny-test");
  };
  vit::Predictor bare = tiny(nlohmann::json::object());
  try {
    bare.set_cell_size("normalize");
    FAIL() << "a model without a cell-size reference was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tiny-test"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("stain-ref"), std::string::npos) << e.what();
  }
  EXPECT_THROW(bare.set_cell_size("huge"), std::invalid_argument);
  vit::Predictor with = tiny({{"cell_size", {{"fraction", 0.6}}}});
  vit::Image img;  // a purple disk of diameter 20 in the middle of a beige 100 x 100 smear
  img.width = img.height = 100;
  img.rgb.resize(100 * 100 * 3);
  for (int i = 0; i < 100 * 100; ++i) {
    const double dx = i % 100 + 0.5 - 50, dy = i / 100 + 0.5 - 50;
    const bool cell = dx * dx + dy * dy <= 100;
    img.rgb[3 * size_t(i)] = cell ? 90 : 240, img.rgb[3 * size_t(i) + 1] = cell ? 40 : 225;
    img.rgb[3 * size_t(i) + 2] = cell ? 150 : 200;
  }
  EXPECT_EQ(with.model_view(img).rgb, vit::preprocess(img, 32).rgb);  // "none" until asked
  with.set_cell_size("normalize");
  EXPECT_EQ(with.model_view(img).rgb, vit::cell_size_view(img, 32, 0.6).rgb);
  EXPECT_NE(with.model_view(img).rgb, vit::preprocess(img, 32).rgb);
}

namespace {

// A folder of one class folder holding an image name, a loop of two links, a link to a missing
// file and a link to a parent folder (which must not be followed).
std::filesystem::path folder_with_broken_links() {
  namespace fs = std::filesystem;
  const fs::path d = fs::temp_directory_path() / ("vit_links_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d / "cls");
  std::ofstream(d / "cls" / "real.png") << "x";
  fs::create_symlink("loopb.png", d / "cls" / "loopa.png");
  fs::create_symlink("loopa.png", d / "cls" / "loopb.png");
  fs::create_symlink(d / "gone.png", d / "cls" / "dangling.png");
  fs::create_symlink("..", d / "cls" / "up");
  return d;
}

}  // namespace

// predict's folder listing: a loop of links or a dangling link was skipped without a word; listed,
// each gets the error row that names it.
TEST(ListImageFiles, LinksThatLeadNowhereAreListedToBeNamed) {
  const auto d = folder_with_broken_links();
  const std::string c = (d / "cls").string() + "/";
  EXPECT_EQ(vit::list_image_files({d.string()}),
            (std::vector<std::string>{c + "dangling.png", c + "loopa.png", c + "loopb.png", c + "real.png"}));
  std::filesystem::remove_all(d);
}

// eval on class folders: a loop of links stopped it with the library's "status: Too many levels
// of symbolic links", a dangling link was skipped; each now stops it naming the link and why.
TEST(LoadEvalSet, ALinkThatLeadsNowhereIsNamed) {
  const auto d = folder_with_broken_links();
  auto error_of = [&] {
    try {
      vit::load_eval_set(d.string(), "test", "", vit::EvalApp{});
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string m = error_of();
  EXPECT_NE(m.find("cls/dangling.png: a link to '"), std::string::npos) << m;
  std::filesystem::remove(d / "cls" / "dangling.png");
  m = error_of();
  EXPECT_NE(m.find("cls/loopa.png: a link that cannot be followed"), std::string::npos) << m;
  std::filesystem::remove_all(d);
}

// A hidden folder beside the class folders (.ipynb_checkpoints, .thumbs) is no class, as prepare's
// folder labeler has it; eval took it for one and stopped ("folder '.thumbs' is not a model class").
TEST(LoadEvalSet, AHiddenFolderIsNoClass) {
  namespace fs = std::filesystem;
  const fs::path d = fs::temp_directory_path() / ("vit_hidden_" + std::to_string(::getpid()));
  fs::remove_all(d);
  for (const char* f : {"cats/a.png", "dogs/b.png", ".thumbs/c.png"}) {
    fs::create_directories((d / f).parent_path());
    std::ofstream(d / f) << "x";
  }
  const vit::EvalSet e = vit::load_eval_set(d.string(), "test", "", vit::EvalApp{});
  EXPECT_EQ(e.truth_names, (std::vector<std::string>{"cats", "dogs"}));
  fs::remove_all(d);
}

// A label map that gives a model class twice in "map" kept the last target without a word; it is
// refused, naming the key, the object and the file.
TEST(ReadLabelMap, AKeyGivenTwiceIsRefused) {
  const std::string p =
      (std::filesystem::temp_directory_path() / ("vit_map_" + std::to_string(::getpid()) + ".json")).string();
  std::ofstream(p) << R"({"targets": ["x", "y"], "map": {"a": "x", "b": "y", "a": "y"}})";
  std::string m = "no error";
  try {
    vit::read_label_map(p, {"a", "b"});
  } catch (const std::runtime_error& e) {
    m = e.what();
  }
  for (const std::string& needle : {std::string("key 'a' is given twice in object 'map'"), p})
    EXPECT_NE(m.find(needle), std::string::npos) << m;
  std::filesystem::remove(p);
}

// A label map's mistakes are refused naming the file and the culprit: a value that is not one name
// ended in nlohmann's "type must be string, but is array" (no file, no key), and a target listed
// twice, an empty target, a "truth" label sent to no target or a map that sends no class anywhere
// (every image "other", accuracy 0) passed silently. Each case: the JSON, and what the message names.
TEST(ReadLabelMap, MistakesAreRefusedNamingTheFileAndTheCulprit) {
  const std::string p =
      (std::filesystem::temp_directory_path() / ("vit_mapbad_" + std::to_string(::getpid()) + ".json")).string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"([1, 2])", "must be a JSON object"},
      {R"({"targets": ["x", "y", "x"], "map": {"a": "x"}})", "target 'x' is listed twice"},
      {R"({"targets": ["x", ""], "map": {"a": "x"}})", "'targets' holds \"\""},
      {R"({"targets": ["x", 3], "map": {"a": "x"}})", "'targets' holds 3"},
      {R"({"targets": ["x", "y"], "map": {"a": ["x", "y"]}})", "class 'a' maps to [\"x\",\"y\"]"},
      {R"({"targets": ["x", "y"], "map": {"a": null, "b": null}})", "sends none of the model's classes"},
      {R"({"targets": ["x", "y"], "map": {"a": "x"}, "truth": {"A": "z"}})", "truth 'A' maps to 'z', which is not"},
      {R"({"targets": ["x", "y"], "map": {"a": "x"}, "truth": {"A": 1}})", "truth 'A' maps to 1"},
      {R"({"targets": ["x", "y"], "map": {"a": "x"}, "truth": ["A"]})", "'truth' must be an object"},
  };
  for (const auto& [json, needle] : cases) {
    std::ofstream(p) << json;
    std::string m = "no error";
    try {
      vit::read_label_map(p, {"a", "b"});
    } catch (const std::runtime_error& e) {
      m = e.what();
    }
    EXPECT_NE(m.find(needle), std::string::npos) << json << " -> " << m;
    EXPECT_NE(m.find(p), std::string::npos) << json << " -> " << m;
  }
  // A sound map with a label left out on purpose (null) still reads: that label is covered by no target.
  std::ofstream(p) << R"({"name": 5, "targets": ["x", "y"], "map": {"a": "x", "b": null}, "truth": {"A": "y", "Z": null}})";
  const vit::LabelMap m = vit::read_label_map(p, {"a", "b"});
  EXPECT_EQ(m.class_to_target, (std::vector<int>{0, -1}));
  EXPECT_EQ(m.truth_target("A"), 1);
  EXPECT_EQ(m.truth_target("Z"), -1);
  std::filesystem::remove(p);
}

// A class named "a|b" split its row of summary.md's table into one cell too many; a name ending in
// a backslash escaped the cell separator after it. Both are escaped for markdown, and the SVG
// pictures escape "<" and "&" for XML.
TEST(Evaluate, ClassNamesWithMarkupCharactersKeepTheTablesWhole) {
  namespace fs = std::filesystem;
  const fs::path d = fs::temp_directory_path() / ("vit_md_" + std::to_string(::getpid()));
  fs::remove_all(d);
  const std::vector<std::string> names = {"a|b", "c\\", "x<&y"};
  vit::ViTConfig cfg;
  cfg.image_size = 16, cfg.patch = 8, cfg.dim = 8, cfg.depth = 1, cfg.heads = 2, cfg.mlp_dim = 16;
  cfg.num_classes = int(names.size()), cfg.dropout = 0;
  vit::ViT model(cfg);
  model.init(1);
  vit::ModelMeta meta;
  meta.class_names = names;
  fs::create_directories(d);
  vit::save_model((d / "m.vit").string(), model, meta);
  vit::Image img;
  img.width = img.height = 16;
  for (size_t i = 0; i < names.size(); ++i) {
    fs::create_directories(d / "data" / names[i]);
    img.rgb.assign(16 * 16 * 3, uint8_t(60 * i));
    vit::write_png((d / "data" / names[i] / "i.png").string(), img);
  }
  vit::EvalRequest r;
  r.model = (d / "m.vit").string(), r.data = (d / "data").string(), r.out = (d / "out").string();
  r.log = [](const std::string&) {};
  vit::evaluate(r);
  std::ifstream md(d / "out" / "summary.md");
  int rows = 0;
  for (std::string line; std::getline(md, line);) {
    if (line.rfind("| class |", 0) == 0) rows = 1;  // the per-class table: 5 columns, 6 separators
    if (rows == 0 || line.rfind("|", 0) != 0) continue;
    int separators = 0;  // GitHub's rule: a backslash makes the next character a literal one
    for (size_t i = 0; i < line.size(); ++i)
      if (line[i] == '\\')
        ++i;
      else
        separators += line[i] == '|';
    EXPECT_EQ(separators, 6) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 1 + 2 + int(names.size()));  // header, rule, one row per class
  std::ifstream svg(d / "out" / "per_class.svg");
  const std::string s((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  EXPECT_NE(s.find("x&lt;&amp;y"), std::string::npos);
  EXPECT_EQ(s.find("x<&y"), std::string::npos);
  fs::remove_all(d);
}
