// vitengine adapt (engine/train/adapt.h): the group loss and the entropy against finite
// differences in double, frozen tensors bitwise unchanged (labelled and --unlabelled), --shots
// per class, the new checkpoint loading in the Predictor and the CLI, and bad input refused with
// the original model untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "engine/eval/calibration.h"
#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "engine/train/adapt.h"
#include "serve_test_util.h"
#include "weights/checkpoint.h"

namespace fs = std::filesystem;

namespace {

// -log sum_{c in group} softmax(z)_c in long double, the reference.
long double ref_loss(const std::vector<double>& z, const std::vector<int>& group, int label) {
  long double m = *std::max_element(z.begin(), z.end()), s = 0, in = 0;
  for (size_t c = 0; c < z.size(); ++c) {
    const long double e = std::exp((long double)z[c] - m);
    s += e;
    if (group[c] == label) in += e;
  }
  return -std::log(in / s);
}

TEST(AdaptLoss, GroupCrossEntropyMatchesFiniteDifferences) {
  std::mt19937 rng(3);
  std::normal_distribution<double> nd(0, 2);
  const std::vector<int> group = {0, 0, 1, -1, 2, 1, 0};  // -1: a class no label covers
  for (int label : {0, 1, 2}) {
    std::vector<double> z(group.size());
    for (auto& v : z) v = nd(rng);
    std::vector<float> zf(z.begin(), z.end()), dz(z.size());
    for (size_t c = 0; c < z.size(); ++c) z[c] = zf[c];  // the same numbers on both sides
    const double loss = vit::group_cross_entropy(zf.data(), int(z.size()), group, label, 4.0f, dz.data());
    EXPECT_NEAR(loss, double(ref_loss(z, group, label)), 1e-6);
    for (size_t c = 0; c < z.size(); ++c) {
      const double h = 1e-5;
      auto zp = z, zm = z;
      zp[c] += h, zm[c] -= h;
      const double fd = double(ref_loss(zp, group, label) - ref_loss(zm, group, label)) / (2 * h) / 4.0;
      EXPECT_NEAR(dz[c], fd, 1e-6) << "label " << label << " class " << c;
    }
  }
}

TEST(AdaptLoss, SingletonGroupsAreCrossEntropy) {
  const std::vector<float> z = {1.0f, -0.5f, 2.0f};
  std::vector<float> dz(3);
  const double loss = vit::group_cross_entropy(z.data(), 3, {0, 1, 2}, 2, 1.0f, dz.data());
  const double lse = std::log(std::exp(1.0) + std::exp(-0.5) + std::exp(2.0));
  EXPECT_NEAR(loss, lse - 2.0, 1e-6);
  EXPECT_NEAR(dz[2], std::exp(2.0 - lse) - 1, 1e-6);
}

// H = -sum p log p of softmax(z), in long double.
long double ref_entropy(const std::vector<double>& z) {
  long double m = *std::max_element(z.begin(), z.end()), s = 0, H = 0;
  for (double v : z) s += std::exp((long double)v - m);
  for (double v : z) {
    const long double p = std::exp((long double)v - m) / s;
    H -= p * std::log(p);
  }
  return H;
}

TEST(AdaptLoss, SoftmaxEntropyMatchesFiniteDifferences) {
  std::mt19937 rng(5);
  std::normal_distribution<double> nd(0, 2);
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<double> z(7);
    for (auto& v : z) v = nd(rng);
    if (trial == 3) z[0] += 40;  // one class far ahead: p near one-hot, H near 0
    std::vector<float> zf(z.begin(), z.end()), dz(z.size());
    for (size_t c = 0; c < z.size(); ++c) z[c] = zf[c];
    const double H = vit::softmax_entropy(zf.data(), int(z.size()), 4.0f, dz.data());
    EXPECT_NEAR(H, double(ref_entropy(z)), 1e-6);
    for (size_t c = 0; c < z.size(); ++c) {
      const double h = 1e-5;
      auto zp = z, zm = z;
      zp[c] += h, zm[c] -= h;
      const double fd = double(ref_entropy(zp) - ref_entropy(zm)) / (2 * h) / 4.0;
      EXPECT_NEAR(dz[c], fd, 1e-6) << "trial " << trial << " class " << c;
    }
  }
  std::vector<float> dz(3);  // uniform: log 3
  EXPECT_NEAR(vit::softmax_entropy(std::vector<float>{0, 0, 0}.data(), 3, 1, dz.data()), std::log(3.0), 1e-9);
}

// A folder of class folders named after the tiny model's classes, `n` synthetic cells each.
struct CellFolder {
  std::string dir = vt::temp_dir("adapt");
  std::string model = dir + "/tiny.vit";
  std::string data = dir + "/cells";
  CellFolder() { vt::write_tiny_model(model); }
  ~CellFolder() { fs::remove_all(dir); }
  void add(const std::string& cls, int n, int seed0) {
    fs::create_directories(data + "/" + cls);
    for (int i = 0; i < n; ++i)
      vt::write_file(data + "/" + cls + "/c" + std::to_string(i) + ".png", vt::png_bytes(40, 40, seed0 + i));
  }
};

std::vector<float> params_of(const std::string& path) { 
  vit::LoadedModel lm = vit::load_model(path);
  const vit::ViT& m = *lm.model;
  return std::vector<float>(m.param_data(), m.param_data() + m.num_params());
}

vit::AdaptRequest request(const CellFolder& f, const std::string& out) {
  vit::AdaptRequest r;
  r.model = f.model;
  r.data = f.data;
  r.out = out;
  r.freeze = "all-but-head";  // the fast path; tests that train the encoder say so
  r.epochs = 3;
  r.views = "flip";
  r.holdout = 0.25;
  return r;
}

// Which tensors a freeze mode trains, by name; every other one must come back bitwise equal.
void expect_only_trained_changed(const std::string& before, const std::string& after,
                                 const std::function<bool(const std::string&)>& trained) {
  const std::vector<float> a = params_of(before), b = params_of(after);
  vit::LoadedModel lm = vit::load_model(before);
  int changed = 0;
  for (const auto& p : lm.model->params()) {
    const bool same = std::equal(a.begin() + long(p.offset), a.begin() + long(p.offset + p.numel), b.begin() + long(p.offset));
    if (trained(p.name)) {
      changed += !same;
    } else {
      EXPECT_TRUE(same) << p.name << " is frozen but changed";
    }
  }
  EXPECT_GT(changed, 0) << "nothing trained";
}

TEST(Adapt, AllButHeadLeavesEveryOtherTensorBitwiseUnchanged) {
  CellFolder f;
  f.add("Lymphocyte", 6, 1);
  f.add("Monocyte", 6, 100);
  const std::string out = f.dir + "/a.vit";
  const nlohmann::json card = vit::adapt(request(f, out));
  expect_only_trained_changed(f.model, out, [](const std::string& n) { return n.rfind("heads.", 0) == 0; });
  EXPECT_EQ(card["cells"].get<int>() + card["held_out"]["images"].get<int>(), 12);
  EXPECT_EQ(card["freeze"], "all-but-head");
  EXPECT_EQ(card["augment"], "views");  // auto: the cached features are of the --views views
}

TEST(Adapt, LastKTrainsOnlyTheLastBlocksTheFinalNormAndTheHead) {
  CellFolder f;
  f.add("Lymphocyte", 4, 1);
  f.add("Monocyte", 4, 100);
  // Both kinds of step input: dihedral views of the prepared floats, and the trainer's
  // augmentation drawn anew each step (which must reach the model: the two results differ).
  for (const std::string augment : {"views", "auto"}) {  // auto: train, when the encoder trains
    const std::string out = f.dir + "/a_" + augment + ".vit";
    vit::AdaptRequest r = request(f, out);
    r.freeze = "last-k";
    r.last_k = 1;
    r.lr = 1e-3f;
    r.augment = augment;
    EXPECT_EQ(vit::adapt(r)["augment"], augment == "auto" ? "train" : "views");
    expect_only_trained_changed(f.model, out, [](const std::string& n) {
      return n.rfind("heads.", 0) == 0 || n.rfind("encoder.ln.", 0) == 0 ||
             n.rfind("encoder.layers.encoder_layer_1.", 0) == 0;  // the tiny model has 2 blocks
    });
  }
  EXPECT_NE(params_of(f.dir + "/a_views.vit"), params_of(f.dir + "/a_auto.vit"));
}

// A run that trains the encoder, stopped after 2 of 4 epochs and resumed, ends with the weights of
// the run that was never stopped, bit for bit (the fresh augmentation and the cosine rate included),
// having trained only epochs 3 and 4 the second time; its progress file is refused without
// --resume and with another setting, and gone once the run is whole.
TEST(AdaptResume, AStoppedRunResumedGivesTheUninterruptedRunsWeights) {
  CellFolder f;
  f.add("Lymphocyte", 6, 1);
  f.add("Monocyte", 6, 100);
  auto run = [&](const std::string& out) {
    vit::AdaptRequest r = request(f, out);
    r.freeze = "none", r.augment = "auto", r.epochs = 4, r.lr = 1e-3f, r.lr_schedule = "cosine";
    return r;
  };
  const std::string whole = f.dir + "/whole.vit", split = f.dir + "/split.vit";
  vit::adapt(run(whole));
  EXPECT_FALSE(fs::exists(vit::adapt_progress_path(whole)));

  vit::AdaptRequest stop = run(split);
  stop.stop_after = 2;
  const nlohmann::json card = vit::adapt(stop);
  EXPECT_EQ(card["stopped_after_epoch"], 2);
  EXPECT_FALSE(fs::exists(split));
  ASSERT_TRUE(fs::exists(vit::adapt_progress_path(split)));

  auto refusal = [](const vit::AdaptRequest& r) {
    try {
      vit::adapt(r);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(refusal(run(split)).find("pass --resume"), std::string::npos);
  vit::AdaptRequest other = run(split);
  other.resume = true, other.lr = 2e-3f;
  EXPECT_NE(refusal(other).find("another lr"), std::string::npos) << refusal(other);

  vit::AdaptRequest resume = run(split);
  resume.resume = true;
  std::string said;
  resume.log = [&](const std::string& m) { said += m + "\n"; };
  vit::adapt(resume);
  EXPECT_NE(said.find("after epoch 2"), std::string::npos) << said;
  EXPECT_EQ(said.find("epoch 1/4"), std::string::npos) << said;  // not started again
  EXPECT_NE(said.find("epoch 4/4"), std::string::npos) << said;
  EXPECT_EQ(params_of(split), params_of(whole));
  EXPECT_NE(params_of(whole), params_of(f.model));
  EXPECT_FALSE(fs::exists(vit::adapt_progress_path(split)));
}

TEST(Adapt, ShotsAreHonouredPerClassAndTheModelLoadsEverywhere) {
  CellFolder f;
  f.add("Lymphocyte", 9, 1);
  f.add("Monocyte", 3, 100);
  f.add("Eosinophil", 7, 200);
  const std::string out = f.dir + "/a.vit";
  vit::AdaptRequest r = request(f, out);
  r.shots = 2;
  r.holdout = 0;
  const nlohmann::json card = vit::adapt(r);
  EXPECT_EQ(card["cells"].get<int>(), 6);
  for (const auto& [label, n] : card["cells_per_label"].items()) EXPECT_EQ(n.get<int>(), 2) << label;
  // The Predictor (predict, explain, serve) and the CLI load it; the card is in its metadata.
  vit::Predictor p(out);
  EXPECT_EQ(p.class_names().size(), 14u);
  EXPECT_EQ(p.meta().extra["adaptation"]["cells"].get<int>(), 6);
  std::string so, se;
  EXPECT_EQ(vt::run(std::string(VITENGINE_BINARY) + " predict --model " + out + " --format json " + f.data +
                        "/Monocyte/c0.png",
                    &so, &se),
            0)
      << se;
  EXPECT_NE(so.find("\"prediction\""), std::string::npos);
}

// Each refusal names the culprit, writes nothing, and leaves the model file as it was.
void expect_refused(CellFolder& f, vit::AdaptRequest r, const std::string& says) {
  const std::string before = vt::read_file(f.model);
  try {
    vit::adapt(r);
    ADD_FAILURE() << "accepted; expected an error saying '" << says << "'";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(r.out));
  EXPECT_EQ(vt::read_file(f.model), before);
}

// A crop copied into two class folders trained the model on two answers for one cell without a
// word, and a copy within one class could be trained on while its twin was held out as unseen.
// Both are refused naming the two files the test made the same; distinct files of equal content
// are what counts, not their names.
TEST(Adapt, TheSameImageTwiceIsRefusedNamingBothFiles) {
  for (const std::string twin_class : {"Monocyte", "Lymphocyte"}) {
    CellFolder f;
    f.add("Lymphocyte", 4, 1);
    f.add("Monocyte", 4, 100);
    const std::string original = f.data + "/Lymphocyte/c2.png", twin = f.data + "/" + twin_class + "/copy.png";
    fs::copy_file(original, twin);
    expect_refused(f, request(f, f.dir + "/a.vit"), "are the same image");
    std::string m;
    try {
      vit::adapt(request(f, f.dir + "/a.vit"));
    } catch (const std::runtime_error& e) {
      m = e.what();
    }
    EXPECT_NE(m.find("'" + original + "' (Lymphocyte)"), std::string::npos) << m;
    EXPECT_NE(m.find("'" + twin + "' (" + twin_class + ")"), std::string::npos) << m;
  }
}

TEST(Adapt, BadInputIsRefusedWithTheOriginalUntouched) {
  {
    CellFolder f;
    fs::create_directories(f.data + "/Lymphocyte");
    expect_refused(f, request(f, f.dir + "/a.vit"), "holds no class folders with images");
  }
  {
    CellFolder f;
    f.add("Lymphocyte", 5, 1);
    expect_refused(f, request(f, f.dir + "/a.vit"), "one class only ('Lymphocyte')");
  }
  {
    CellFolder f;
    f.add("Lymphocyte", 5, 1);
    f.add("Cats", 5, 50);
    expect_refused(f, request(f, f.dir + "/a.vit"), "'Cats' (5) are not classes of the model");
  }
  {
    CellFolder f;
    f.add("Lymphocyte", 5, 1);
    f.add("Monocyte", 5, 100);
    vt::write_file(f.data + "/Monocyte/broken.png", "\x89PNG\r\n\x1a\n not really");
    vit::AdaptRequest r = request(f, f.dir + "/a.vit");
    r.holdout = 0;
    expect_refused(f, r, "broken.png");
  }
  {
    CellFolder f;
    f.add("Lymphocyte", 5, 1);
    f.add("Monocyte", 1, 100);
    vit::AdaptRequest r = request(f, f.dir + "/a.vit");
    r.holdout = 0;
    expect_refused(f, r, "too few images to adapt on for: Monocyte 1");
  }
  {  // --cell-size normalize needs the training cells' size, which this model does not store
    CellFolder f;
    f.add("Lymphocyte", 5, 1);
    f.add("Monocyte", 5, 100);
    vit::AdaptRequest r = request(f, f.dir + "/a.vit");
    r.cell_size = "normalize";
    expect_refused(f, r, "'" + f.model + "' stores no cell-size reference");
  }
  {  // the head alone trains on features cached per view: no per-step augmentation to draw
    CellFolder f;
    f.add("Lymphocyte", 5, 1);
    f.add("Monocyte", 5, 100);
    vit::AdaptRequest r = request(f, f.dir + "/a.vit");
    r.augment = "train";
    expect_refused(f, r, "--augment train needs --freeze last-k or none");
    r.augment = "mixup";
    r.freeze = "none";
    expect_refused(f, r, "--augment must be auto, views or train, not 'mixup'");
  }
  {
    CellFolder f;
    f.add("Lymphocyte", 5, 1);
    f.add("Monocyte", 5, 100);
    vit::AdaptRequest r = request(f, f.model);
    const std::string before = vt::read_file(f.model);
    EXPECT_THROW(vit::adapt(r), std::runtime_error);
    EXPECT_EQ(vt::read_file(f.model), before);
  }
}

TEST(Adapt, ALabelMapTrainsTheGroupsOfItsTargets) {
  CellFolder f;
  f.add("NEUTROPHIL", 6, 1);
  f.add("LYMPHOCYTE", 6, 100);
  const std::string out = f.dir + "/a.vit";
  vit::AdaptRequest r = request(f, out);
  r.map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
  r.epochs = 60;
  r.lr = 3e-2f;
  r.holdout = 0;
  const nlohmann::json card = vit::adapt(r);
  EXPECT_EQ(card["cells_per_label"]["Neutrophil"].get<int>(), 6);
  // After training, the training cells' probability mass sits on their target's classes.
  vit::Predictor p(out);
  for (const auto& [folder, classes] :
       std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"NEUTROPHIL", {"Band Neutrophil", "Segmented Neutrophil", "Neutrophil"}}, {"LYMPHOCYTE", {"Lymphocyte"}}}) {
    auto preds = p.predict({vit::load_image(f.data + "/" + folder + "/c0.png")}, 1);
    double mass = 0;
    for (size_t c = 0; c < p.class_names().size(); ++c)
      if (std::find(classes.begin(), classes.end(), p.class_names()[c]) != classes.end()) mass += preds[0].probs[c];
    EXPECT_GT(mass, 0.5) << folder;
  }
}

// --report: the held-out cells as a manifest, and eval's report of each model on them. The test
// reads the manifest itself and scores both models on its files through its own reading of the map:
// the reports' accuracies must be those counts, and the card's (adapt's own count) too.
TEST(Adapt, ReportEvaluatesTheHeldOutCellsBeforeAndAfter) {
  CellFolder f;
  f.add("NEUTROPHIL", 8, 1);
  f.add("LYMPHOCYTE", 8, 100);
  vit::AdaptRequest r = request(f, f.dir + "/a.vit");
  r.map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
  r.epochs = 30;
  r.lr = 3e-2f;
  r.report = f.dir + "/report";
  const nlohmann::json card = vit::adapt(r);
  for (const char* file : {"held_out.csv", "summary.md", "card.json", "before/metrics.json", "after/metrics.json",
                           "before/confusion_normalized.svg", "after/confusion_normalized.svg"})
    EXPECT_TRUE(fs::exists(r.report + "/" + file)) << file;

  const std::map<std::string, std::string> target = {{"Band Neutrophil", "Neutrophil"},
                                                     {"Segmented Neutrophil", "Neutrophil"},
                                                     {"Neutrophil", "Neutrophil"},
                                                     {"Lymphocyte", "Lymphocyte"}};
  std::vector<std::pair<std::string, std::string>> rows;  // file, label
  std::istringstream csv(vt::read_file(r.report + "/held_out.csv"));
  std::string line;
  std::getline(csv, line);
  ASSERT_EQ(line.substr(0, 17), "path,label,split,");
  while (std::getline(csv, line)) {
    const size_t a = line.find(','), b = line.find(',', a + 1);
    rows.emplace_back(line.substr(0, a), line.substr(a + 1, b - a - 1));
    EXPECT_EQ(rows.back().first.rfind(fs::absolute(f.data).string(), 0), 0u) << rows.back().first;
  }
  ASSERT_EQ(int(rows.size()), card["held_out"]["images"].get<int>());
  ASSERT_EQ(rows.size(), 4u);  // a quarter of each class of 8
  for (const auto& [side, model] : {std::pair<std::string, std::string>{"before", r.model}, {"after", r.out}}) {
    vit::Predictor p(model);
    int right = 0;
    for (const auto& [file, label] : rows) {
      const auto pred = p.predict({vit::load_image(file)}, 1);
      const auto it = target.find(p.class_names()[size_t(pred[0].top)]);
      right += it != target.end() && it->second == label;
    }
    const double acc = right / double(rows.size());
    const nlohmann::json m = nlohmann::json::parse(vt::read_file(r.report + "/" + side + "/metrics.json"));
    EXPECT_DOUBLE_EQ(m["accuracy"].get<double>(), acc) << side;
    EXPECT_DOUBLE_EQ(card["report"][side]["accuracy"].get<double>(), acc) << side;
    EXPECT_DOUBLE_EQ(card["held_out"][side == "before" ? "accuracy_before" : "accuracy_after"].get<double>(), acc)
        << side;
  }
  // The card the model stores is the one the report keeps.
  EXPECT_EQ(nlohmann::json::parse(vt::read_file(r.report + "/card.json")),
            vit::Predictor(r.out).meta().extra["adaptation"]);

  // Nothing held out, or no labels: refused before anything is written.
  vit::AdaptRequest none = r;
  none.out = f.dir + "/b.vit";
  none.report = f.dir + "/report2";
  none.holdout = 0;
  expect_refused(f, none, "none are held out");
  EXPECT_FALSE(fs::exists(none.report));
  vit::AdaptRequest unl = none;
  unl.unlabelled = true;
  unl.map.clear();
  unl.freeze = "auto";
  expect_refused(f, unl, "--report evaluates held-out labelled cells");
}

// --unlabelled: a flat folder of images, no labels; only the LayerNorm weights and biases move,
// and the entropy on those images goes down. The CLI prints it and predict loads the model.
TEST(Adapt, UnlabelledTrainsOnlyTheLayerNormsAndLowersTheEntropy) {
  CellFolder f;
  fs::create_directories(f.data);
  for (int i = 0; i < 20; ++i) vt::write_file(f.data + "/img" + std::to_string(i) + ".png", vt::png_bytes(40, 40, 7 * i));
  const std::string out = f.dir + "/u.vit";
  vit::AdaptRequest r;
  r.model = f.model, r.data = f.data, r.out = out;
  r.unlabelled = true;
  r.epochs = 8;
  r.lr = 1e-2f;
  r.views = "flip";
  const nlohmann::json card = vit::adapt(r);
  EXPECT_EQ(card["cells"].get<int>(), 20);
  EXPECT_EQ(card["freeze"], "all-but-norm");
  EXPECT_EQ(card["augment"], "views");
  EXPECT_LT(card["after"]["mean_entropy"].get<double>(), card["before"]["mean_entropy"].get<double>() - 0.01)
      << card.dump();
  EXPECT_TRUE(card["before"]["flagged_unlike_training"].is_null());  // the tiny model stores no threshold
  expect_only_trained_changed(f.model, out, [](const std::string& n) {
    return n.find(".ln_1.") != std::string::npos || n.find(".ln_2.") != std::string::npos ||
           n.rfind("encoder.ln.", 0) == 0;
  });
  // The CLI prints the numbers; the card is in the new model's metadata.
  std::string so, se;
  ASSERT_EQ(vt::run(std::string(VITENGINE_BINARY) + " adapt --unlabelled --model " + f.model + " --data " + f.data +
                        " --epochs 1 --views none --out " + f.dir + "/m.vit",
                    &so, &se),
            0)
      << se;
  EXPECT_NE(so.find("on 20 unlabelled images"), std::string::npos) << so;
  EXPECT_NE(so.find("mean entropy"), std::string::npos) << so;
  vit::Predictor p(f.dir + "/m.vit");
  EXPECT_EQ(p.meta().extra["adaptation"]["labels"], "none");
  EXPECT_EQ(vt::run(std::string(VITENGINE_BINARY) + " predict --model " + out + " --format json " + f.data + "/img0.png",
                    &so, &se),
            0)
      << se;
}

// A lab's folders named "neutrophils" or "LYMPHOCYTE" are read by eval as those classes, but adapt
// took the names as written and refused them ("'neutrophils' (3) are not targets of the label
// map"). Each label's cells, in the adapted model's card, must be the count the test put in the
// folders of that cell type.
TEST(Adapt, ClassFoldersNamedInPluralOrCapitalsAreReadAsEvalReadsThem) {
  CellFolder f;
  f.add("neutrophils", 3, 1);
  f.add("LYMPHOCYTE", 4, 100);
  f.add("Monocytes", 2, 200);
  const std::string out = f.dir + "/a.vit";
  std::string so, se;
  ASSERT_EQ(vt::run(std::string(VITENGINE_BINARY) + " adapt --model " + f.model + " --data " + f.data + " --map " +
                        VITENGINE_SOURCE_DIR + "/configs/bccd5.json --freeze all-but-head --epochs 1 --views none "
                        "--holdout 0 --out " + out,
                    &so, &se),
            0)
      << se;
  const nlohmann::json per = vit::Predictor(out).meta().extra["adaptation"]["cells_per_label"];
  EXPECT_EQ(per, nlohmann::json({{"Neutrophil", 3}, {"Lymphocyte", 4}, {"Monocyte", 2}})) << per.dump();
}

TEST(Adapt, UnlabelledBadInputIsRefusedWithTheOriginalUntouched) {
  CellFolder f;
  fs::create_directories(f.data);
  for (int i = 0; i < 5; ++i) vt::write_file(f.data + "/img" + std::to_string(i) + ".png", vt::png_bytes(40, 40, i));
  vit::AdaptRequest r;
  r.model = f.model, r.data = f.data, r.out = f.dir + "/u.vit";
  r.unlabelled = true;
  expect_refused(f, r, "holds 5 images: --unlabelled adapts on at least one batch (--batch 16)");
  r.data = f.dir + "/nowhere";
  expect_refused(f, r, "is neither a folder of images nor a prepared folder");
  r.data = f.data;
  r.batch = 4;
  vt::write_file(f.data + "/broken.png", "\x89PNG\r\n\x1a\n not really");
  expect_refused(f, r, "broken.png");
  fs::remove(f.data + "/broken.png");
  r.freeze = "none";
  expect_refused(f, r, "--unlabelled trains the LayerNorm parameters alone");
  r.freeze = "auto";
  r.shots = 3;
  expect_refused(f, r, "--unlabelled images have no class");
  r.shots = 0;
  r.keep_data = f.data;
  expect_refused(f, r, "--keep-data needs labelled adaptation");
  r.keep_data.clear();
  r.map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
  expect_refused(f, r, "--map is not taken with --unlabelled");
}

}  // namespace

namespace {

// Rehearsal: images of the home data's train split train beside the new cells, with their own
// classes; its val split is scored; a folder that is not prepared data is refused.
// A home lab's prepared data (two classes, ten images each, split 60/40 train/val) for rehearsal.
// Each image's logits, predicted one at a time as a user's predict would, and its class index.
void logits_of(vit::Predictor& pred, const vit::EvalSet& set, std::vector<std::vector<long double>>& z,
               std::vector<int>& y) {
  for (size_t i = 0; i < set.samples.size(); ++i) {
    const vit::Prediction p = pred.predict({vit::load_image(set.samples[i].full_path())}, 1)[0];
    z.emplace_back(p.logits.begin(), p.logits.end());
    y.push_back(int(std::find(pred.class_names().begin(), pred.class_names().end(), set.truth_names[i]) -
                    pred.class_names().begin()));
  }
}

// The mean NLL of the labels at temperature t, in long double: what a refitted T must minimise.
long double ref_nll(const std::vector<std::vector<long double>>& z, const std::vector<int>& y, long double t) {
  long double sum = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    long double m = *std::max_element(z[i].begin(), z[i].end()), s = 0;
    for (long double v : z[i]) s += std::exp((v - m) / t);
    sum += std::log(s) - (z[i][size_t(y[i])] - m) / t;
  }
  return sum / (long double)z.size();
}

void prepare_home(const std::string& home, const std::string& prep) {
  for (const char* cls : {"Lymphocyte", "Monocyte"}) {
    fs::create_directories(home + "/" + cls);
    for (int i = 0; i < 10; ++i)
      vt::write_file(home + "/" + cls + "/h" + std::to_string(i) + ".png",
                     vt::png_bytes(36 + i, 40, (cls[0] == 'L' ? 700 : 900) + 5 * i));
  }
  std::string so, se;
  ASSERT_EQ(vt::run(std::string(VITENGINE_BINARY) + " prepare " + home + " --out " + prep +
                        " --labels folders --split 60/40/0 --near-threshold -1 --size 32 --quiet",
                    &so, &se),
            0)
      << se;
}

// The start of every rehearsal test: a new lab's cells (6 lymphocytes, 6 eosinophils) in f, and a
// prepared home set (prepare_home) in f.dir/prep.
void lab_and_home(CellFolder& f, std::string& prep) {
  f.add("Lymphocyte", 6, 1);
  f.add("Eosinophil", 6, 300);
  prep = f.dir + "/prep";
  ASSERT_NO_FATAL_FAILURE(prepare_home(f.dir + "/home", prep));
}

TEST(Adapt, RehearsalKeepsHomeImagesPerClassAndScoresHomeVal) {
  CellFolder f;
  std::string prep;
  ASSERT_NO_FATAL_FAILURE(lab_and_home(f, prep));
  vit::AdaptRequest r = request(f, f.dir + "/a.vit");
  r.keep_data = prep;
  r.keep_per_class = 3;
  const nlohmann::json card = vit::adapt(r);
  ASSERT_TRUE(card.contains("rehearsal")) << card.dump();
  EXPECT_EQ(card["rehearsal"]["images"].get<int>(), 6);  // 3 of each home class
  EXPECT_GE(card["rehearsal"]["val_images"].get<int>(), 6);
  EXPECT_TRUE(card["rehearsal"]["val_accuracy_after"].is_number());
  for (const auto& [label, n] : card["cells_per_label"].items()) EXPECT_NE(label, "Monocyte");  // new cells only
  // 0 keeps the whole train split: as many as manifest.csv has train rows, counted here.
  int train_rows = 0;
  std::istringstream manifest(vt::read_file(prep + "/manifest.csv"));
  for (std::string line; std::getline(manifest, line);) train_rows += line.find(",train,") != std::string::npos;
  ASSERT_GT(train_rows, 6);
  r.keep_per_class = 0;
  r.out = f.dir + "/all.vit";
  EXPECT_EQ(vit::adapt(r)["rehearsal"]["images"].get<int>(), train_rows);
  r.keep_data = f.dir + "/home";  // class folders, not prepared data
  r.out = f.dir + "/b.vit";
  expect_refused(f, r, "must be a prepared folder or manifest.csv");
}

// --keep-per-epoch: each epoch takes per_epoch distinct kept images, and consecutive epochs
// cycle through all of them before any repeats (counted here, epoch by epoch); 0 or a share at
// least the whole takes all of them every epoch.
TEST(AdaptRehearsal, EachEpochTakesTheNextSliceAndTheEpochsCycleThroughAll) {
  const size_t n = 10, per = 4;
  const auto plan = vit::rehearsal_schedule(n, per, 7, 42);
  ASSERT_EQ(plan.size(), 7u);
  std::vector<int> seen(n, 0);
  size_t visits = 0;
  for (size_t e = 0; e < plan.size(); ++e) {
    ASSERT_EQ(plan[e].size(), per) << "epoch " << e;
    std::vector<size_t> sorted = plan[e];
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end()) << "an image twice in epoch " << e;
    for (size_t k : plan[e]) {
      ASSERT_LT(k, n);
      // Visits n*c .. n*(c+1)-1 see every image once: none is seen c + 1 times before all are seen c.
      EXPECT_EQ(seen[k], int(visits / n)) << "image " << k << " repeated before the cycle ended";
      seen[k]++;
      visits++;
    }
  }
  // 28 visits of 10 images: every image twice, eight of them a third time.
  for (size_t k = 0; k < n; ++k) EXPECT_GE(seen[k], 2) << "image " << k << " left out";
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 3), 8);
  EXPECT_NE(vit::rehearsal_schedule(n, per, 7, 43), plan) << "the seed does not move the order";
  for (size_t all : {size_t(0), n, n + 5})
    for (const auto& e : vit::rehearsal_schedule(n, all, 3, 1)) {
      std::vector<size_t> sorted = e;
      std::sort(sorted.begin(), sorted.end());
      std::vector<size_t> want(n);
      for (size_t k = 0; k < n; ++k) want[k] = k;
      EXPECT_EQ(sorted, want) << "per_epoch " << all << " must take every kept image";
    }
}

// --lr-schedule cosine: the full rate at the first step, half at the middle, falling every step,
// under 1% of it at the last; constant: the rate every step; anything else refused by name.
TEST(AdaptRehearsal, TheCosineScheduleDecaysFromTheRateToZero) {
  const size_t steps = 101;
  EXPECT_FLOAT_EQ(vit::adapt_lr(2e-4f, "cosine", 0, steps), 2e-4f);
  EXPECT_NEAR(vit::adapt_lr(2e-4f, "cosine", 50, 100), 1e-4f, 1e-9);
  for (size_t t = 1; t < steps; ++t)
    EXPECT_LT(vit::adapt_lr(2e-4f, "cosine", t, steps), vit::adapt_lr(2e-4f, "cosine", t - 1, steps)) << t;
  EXPECT_LT(vit::adapt_lr(2e-4f, "cosine", steps - 1, steps), 2e-6f);
  EXPECT_GE(vit::adapt_lr(2e-4f, "cosine", steps - 1, steps), 0.0f);
  for (size_t t : {size_t(0), size_t(50), steps - 1}) EXPECT_EQ(vit::adapt_lr(2e-4f, "constant", t, steps), 2e-4f);
  EXPECT_THROW(vit::adapt_lr(2e-4f, "linear", 0, steps), std::runtime_error);
}

TEST(AdaptRehearsal, PerEpochTrainsTheEncoderAndIsRefusedWhereItCannotApply) {
  CellFolder f;
  std::string prep;
  ASSERT_NO_FATAL_FAILURE(lab_and_home(f, prep));
  vit::AdaptRequest r = request(f, f.dir + "/a.vit");
  r.freeze = "none";
  r.epochs = 2;
  r.keep_data = prep;
  r.keep_per_class = 0;
  r.keep_per_epoch = 3;
  const nlohmann::json card = vit::adapt(r);
  EXPECT_EQ(card["rehearsal"]["per_epoch"].get<int>(), 3);
  EXPECT_GE(card["rehearsal"]["images"].get<int>(), 6);
  EXPECT_NE(params_of(f.model), params_of(r.out)) << "nothing trained";
  r.out = f.dir + "/b.vit";
  r.lr_schedule = "cosine";
  r.out = f.dir + "/cos.vit";
  EXPECT_EQ(vit::adapt(r)["lr_schedule"], "cosine");
  r.out = f.dir + "/b.vit";
  r.freeze = "all-but-head";
  expect_refused(f, r, "--lr-schedule cosine is for an encoder that trains");
  r.lr_schedule = "constant";
  expect_refused(f, r, "--keep-per-epoch is for an encoder that trains");
  r.freeze = "none";
  r.keep_data.clear();
  expect_refused(f, r, "pass --keep-data too");
}

// With the home val split at hand, adapt refits the temperature (the minimum of the val NLL, in
// long double here) and the out-of-distribution threshold (flagging the stored false-alarm rate of
// val, counted here with the test's own energy); without it, both stay the original's.
TEST(AdaptRehearsal, TheTemperatureAndThresholdAreRefittedOnHomeVal) {
  CellFolder f;
  std::string prep;
  ASSERT_NO_FATAL_FAILURE(lab_and_home(f, prep));
  {
    vit::LoadedModel lm = vit::load_model(f.model);
    lm.meta.temperature = 3.0f;  // far from what the adapted logits want
    lm.meta.extra["ood"] = {{"score", "energy"}, {"threshold", -100.0}, {"fpr", 0.25}};
    vit::save_model(f.model, *lm.model, lm.meta);
  }
  vit::AdaptRequest r = request(f, f.dir + "/a.vit");
  r.keep_data = prep;
  r.keep_per_class = 0;
  const nlohmann::json card = vit::adapt(r);
  ASSERT_TRUE(card.contains("recalibrated")) << card.dump();

  vit::Predictor pred(r.out);
  const float T = pred.meta().temperature;
  EXPECT_NE(T, 3.0f);
  const vit::EvalSet val = vit::load_eval_set(prep, "val", "", vit::EvalApp{});
  std::vector<std::vector<long double>> z;
  std::vector<int> y;
  logits_of(pred, val, z, y);
  std::vector<long double> energy;
  for (const auto& zi : z) {
    long double m = *std::max_element(zi.begin(), zi.end()), s = 0;
    for (long double v : zi) s += std::exp(v - m);
    energy.push_back(-(m + std::log(s)));
  }
  const auto nll = [&](long double t) { return ref_nll(z, y, t); };
  EXPECT_LE(nll(T), nll(T * 1.05L) + 1e-9L) << "T = " << T;
  EXPECT_LE(nll(T), nll(T / 1.05L) + 1e-9L) << "T = " << T;
  ASSERT_TRUE(pred.ood().present);
  size_t flagged = 0;
  for (long double e : energy) flagged += e > pred.ood().threshold;
  EXPECT_NEAR(double(flagged) / double(energy.size()), 0.25, 1.0 / double(energy.size()) + 1e-9);
  EXPECT_NE(pred.ood().threshold, -100.0);

  r.keep_data.clear();  // no home val: the temperature stays; the stale energy threshold is dropped
  r.out = f.dir + "/b.vit";
  const nlohmann::json card2 = vit::adapt(r);
  vit::Predictor kept(r.out);
  EXPECT_EQ(kept.meta().temperature, 3.0f);
  EXPECT_FALSE(kept.ood().present);
  EXPECT_NE(card2.value("ood_reference", "").find("dropped"), std::string::npos) << card2.dump();
}

// Without home data the temperature is refitted on held-out validation cells (a val split here, so
// the test knows which): the stored T is the minimum of the test's own long-double NLL over them;
// a test split is never fitted on, and too few cells keep it, each said in the card.
TEST(Adapt, WithoutHomeDataTheTemperatureIsRefittedOnValidationCellsNeverOnTest) {
  CellFolder f;
  f.add("Lymphocyte", 40, 1);
  f.add("Eosinophil", 40, 300);
  {
    vit::LoadedModel lm = vit::load_model(f.model);
    lm.meta.temperature = 3.0f;  // far from what the adapted logits want
    vit::save_model(f.model, *lm.model, lm.meta);
  }
  const std::string prep = f.dir + "/prep";
  std::string so, se;
  ASSERT_EQ(vt::run(std::string(VITENGINE_BINARY) + " prepare " + f.data + " --out " + prep +
                        " --labels folders --split 50/30/20 --near-threshold -1 --size 32 --quiet",
                    &so, &se),
            0)
      << se;
  vit::AdaptRequest r = request(f, f.dir + "/val.vit");
  r.data = prep;
  r.holdout_split = "val";
  r.epochs = 40, r.lr = 1e-2f;  // long enough for the head to call these two classes, some rightly
  const nlohmann::json card = vit::adapt(r);
  ASSERT_TRUE(card.contains("temperature")) << card.dump();
  EXPECT_FALSE(card["temperature"].contains("kept")) << card.dump();
  EXPECT_EQ(card["temperature"]["on"].get<std::string>(), "split val");

  vit::Predictor pred(r.out);
  const float T = pred.meta().temperature;
  EXPECT_NE(T, 3.0f);
  const vit::EvalSet val = vit::load_eval_set(prep, "val", "", vit::EvalApp{});
  ASSERT_GE(val.samples.size(), 20u);
  std::vector<std::vector<long double>> z;
  std::vector<int> y;
  logits_of(pred, val, z, y);
  const auto nll = [&](long double t) { return ref_nll(z, y, t); };
  EXPECT_LE(nll(T), nll(T * 1.05L) + 1e-9L) << "T = " << T;
  EXPECT_LE(nll(T), nll(T / 1.05L) + 1e-9L) << "T = " << T;
  EXPECT_LT(nll(T), nll(3.0L));

  r.holdout_split = "test";  // held out for the before/after numbers only
  r.out = f.dir + "/test.vit";
  const nlohmann::json card2 = vit::adapt(r);
  EXPECT_EQ(vit::Predictor(r.out).meta().temperature, 3.0f);
  EXPECT_NE(card2["temperature"].value("kept", "").find("test split"), std::string::npos) << card2.dump();

  r.data = f.data;  // class folders: a share held out, 8 cells
  r.holdout = 0.1;
  r.out = f.dir + "/few.vit";
  const nlohmann::json card3 = vit::adapt(r);
  EXPECT_EQ(vit::Predictor(r.out).meta().temperature, 3.0f);
  EXPECT_NE(card3["temperature"].value("kept", "").find("fewer than 20"), std::string::npos) << card3.dump();
}

// With --stain-norm (here an extreme lab colour map), the new lab's cells are normalised but the
// rehearsed and home val images are seen as at home: the card's ECE of home val (the adapted
// model's, at the original temperature) is the one the test computes from the adapted model's own
// un-normalised predictions, and would differ with the map applied (checked too, so the comparison
// can fail).
TEST(AdaptRehearsal, HomeImagesAreSeenWithoutTheNewLabsNormalisation) {
  CellFolder f;
  std::string prep;
  ASSERT_NO_FATAL_FAILURE(lab_and_home(f, prep));
  {
    vit::LoadedModel lm = vit::load_model(f.model);
    lm.meta.extra["stain_reference"] = {{"lab_mean", {80, 10, 5}},
                                        {"lab_std", {15, 10, 14}},
                                        {"stain_vectors", {{0.5, 0.8, 0.2}, {0.3, 0.6, 0.7}}},
                                        {"max_concentration", {3, 0.6}}};
    lm.meta.extra["stain_calibration"] = {{"scale", {0.5, 2.0, 2.0}}, {"shift", {30, 5, -10}}};
    vit::save_model(f.model, *lm.model, lm.meta);
  }
  vit::AdaptRequest r = request(f, f.dir + "/a.vit");
  r.keep_data = prep;
  r.keep_per_class = 0;
  r.stain_norm = "calibrated";
  const nlohmann::json card = vit::adapt(r);
  ASSERT_TRUE(card.contains("recalibrated")) << card.dump();
  const double T0 = card["recalibrated"]["temperature_before"].get<double>();

  const vit::EvalSet val = vit::load_eval_set(prep, "val", "", vit::EvalApp{});
  const auto ece_of = [&](vit::Predictor& pred) {
    std::vector<std::vector<long double>> z;
    std::vector<int> labels;
    logits_of(pred, val, z, labels);
    std::vector<float> logits;  // the float logits back, exactly
    for (const auto& zi : z) logits.insert(logits.end(), zi.begin(), zi.end());
    return vit::calibration(logits.data(), labels.data(), labels.size(), pred.num_classes(), T0).ece;
  };
  // The card's ECE is the adapted model's, at the original temperature T0.
  vit::Predictor home_view(r.out);  // --stain-norm none: how the home lab's images are seen
  const double want = ece_of(home_view);
  EXPECT_NEAR(card["recalibrated"]["ece_before"].get<double>(), want, 1e-6);  // batched vs one at a time
  vit::Predictor mapped(r.out);
  mapped.set_stain_norm("calibrated");
  EXPECT_GT(std::fabs(ece_of(mapped) - want), 1e-3) << "the map does not change these images: the test cannot fail";
}

// More images than the machine can hold are refused before any is decoded, saying what to change.
TEST(AdaptRefusals, MoreImagesThanMemoryAreRefusedUpFront) {
  if (!std::ifstream("/proc/meminfo")) GTEST_SKIP() << "no /proc/meminfo: the check does not apply";
  EXPECT_NO_THROW(vit::check_adapt_memory(10, 602112, "floats"));
  try {
    vit::check_adapt_memory(size_t(1) << 24, size_t(1) << 24, "floats");  // 256 TiB
    FAIL() << "256 TiB were accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--keep-per-class"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("16777216 images"), std::string::npos) << e.what();
  }
}

// The features of `split`'s images through `pred`, and their model classes.
void features_of(vit::Predictor& pred, const std::string& prep, const std::string& split, std::vector<float>& feats,
                 std::vector<int>& labels) {
  const vit::EvalSet set = vit::load_eval_set(prep, split, "", vit::EvalApp{});
  for (size_t i = 0; i < set.samples.size(); ++i) {
    const vit::Prediction p = pred.predict({vit::load_image(set.samples[i].full_path())}, 1)[0];
    feats.insert(feats.end(), p.features.begin(), p.features.end());
    labels.push_back(int(std::find(pred.class_names().begin(), pred.class_names().end(), set.truth_names[i]) -
                         pred.class_names().begin()));
  }
}

// A Mahalanobis reference describes the encoder's features: an adaptation that trains the encoder
// refits it on the rehearsed home train images (checked against the test's own fit of the adapted
// model's features) and its threshold on home val; without home data it is dropped; with the
// encoder frozen it is kept as it was.
TEST(AdaptRehearsal, TheMahalanobisReferenceIsRefittedKeptOrDropped) {
  CellFolder f;
  std::string prep;
  ASSERT_NO_FATAL_FAILURE(lab_and_home(f, prep));
  vit::MahalanobisStats original;
  {
    vit::Predictor p0(f.model);
    std::vector<float> feats;
    std::vector<int> y;
    features_of(p0, prep, "train", feats, y);
    original = vit::fit_mahalanobis(feats.data(), y.data(), y.size(), p0.config().dim, p0.num_classes());
    vit::LoadedModel lm = vit::load_model(f.model);
    lm.meta.extra["ood"] = {
        {"score", "mahalanobis"}, {"threshold", 1e9}, {"fpr", 0.25}, {"mahalanobis", original.to_json()}};
    vit::save_model(f.model, *lm.model, lm.meta);
  }
  vit::AdaptRequest r = request(f, f.dir + "/a.vit");
  r.freeze = "none";
  r.epochs = 2;
  r.keep_data = prep;
  r.keep_per_class = 0;
  vit::adapt(r);
  vit::Predictor pred(r.out);
  ASSERT_TRUE(pred.ood().present);
  ASSERT_EQ(pred.ood().kind, "mahalanobis");
  std::vector<float> feats, vfeats;
  std::vector<int> y, vy;
  features_of(pred, prep, "train", feats, y);
  const vit::MahalanobisStats mine =
      vit::fit_mahalanobis(feats.data(), y.data(), y.size(), pred.config().dim, pred.num_classes());
  features_of(pred, prep, "val", vfeats, vy);
  const int D = pred.config().dim;
  size_t flagged = 0, moved = 0;
  for (size_t i = 0; i < vy.size(); ++i) {
    const float* x = vfeats.data() + i * D;
    const double s = pred.ood().maha.score(x, D);
    EXPECT_NEAR(s, mine.score(x, D), 1e-4 * s);
    moved += std::fabs(original.score(x, D) - s) > 1e-3 * s;
    flagged += s > pred.ood().threshold;
  }
  EXPECT_GT(moved, 0u) << "the statistics were not refitted";
  EXPECT_NEAR(double(flagged) / double(vy.size()), 0.25, 1.0 / double(vy.size()) + 1e-9);

  r.keep_data.clear();  // the encoder trained, nothing to refit on: dropped
  r.out = f.dir + "/b.vit";
  vit::adapt(r);
  EXPECT_FALSE(vit::Predictor(r.out).ood().present);
  r.freeze = "all-but-head";  // the features are the original's: kept as they were
  r.epochs = 3;
  r.out = f.dir + "/c.vit";
  vit::adapt(r);
  EXPECT_EQ(vit::load_model(r.out).meta.extra["ood"], vit::load_model(f.model).meta.extra["ood"]);
}

// The target the test's own reading of the map calls an image with these probabilities:
// "other": its top class's ("other" when unmapped); "restrict": the most probable target.
std::string expected_target(const nlohmann::json& mj, const std::vector<std::string>& names,
                            const vit::Prediction& pr, const std::string& rule) {
  const std::vector<std::string> targets = mj["targets"];
  std::vector<double> mass(targets.size(), 0.0);
  for (size_t c = 0; c < names.size(); ++c)
    if (mj["map"].contains(names[c])) {
      const size_t t = size_t(std::find(targets.begin(), targets.end(), mj["map"][names[c]]) - targets.begin());
      mass[t] += pr.probs[c];
    }
  if (rule == "other") return mj["map"].value(names[size_t(pr.top)], std::string("other"));
  return targets[size_t(std::max_element(mass.begin(), mass.end()) - mass.begin())];
}

// eval --map-rule: "other" calls each image its top class's target (an unmapped top class is an
// error); "restrict" the target whose classes hold the most probability. Checked against the
// test's own reading of the map and of each image's probabilities from the Predictor.
// A folder the map has no target for is refused, naming its label and file, before any image is
// classified (eval used to find it only when scoring, after the whole folder had been through).
TEST(EvalMap, AFolderTheMapCannotScoreIsRefusedBeforeClassifying) {
  CellFolder f;
  f.add("NEUTROPHIL", 3, 1);
  f.add("Erythroblast", 2, 100);  // a model class, and no target of bccd5
  vit::EvalRequest e;
  e.model = f.model, e.data = f.data, e.out = f.dir + "/ev";
  e.map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
  std::string said, error;
  e.log = [&](const std::string& m) { said += m + "\n"; };
  try {
    vit::evaluate(e);
  } catch (const std::exception& x) {
    error = x.what();
  }
  EXPECT_NE(error.find("label 'Erythroblast' of " + f.data + "/Erythroblast/c0.png is not a target of the map"),
            std::string::npos)
      << error;
  EXPECT_EQ(said.find("images ("), std::string::npos) << said;  // "[eval] MODEL on N images (...)": not reached
  EXPECT_FALSE(fs::exists(f.dir + "/ev/metrics.json"));
}

// One image under two labels in a lab's class folders: one of the pair is scored wrong whatever the
// model says. eval counts such pairs (a copy within one label does not count) and says so.
TEST(EvalMap, AnImageUnderTwoLabelsIsCountedAndSaid) {
  CellFolder f;
  f.add("NEUTROPHIL", 3, 1);
  f.add("LYMPHOCYTE", 3, 100);
  auto eval = [&](std::string* said) {
    vit::EvalRequest e;
    e.model = f.model, e.data = f.data, e.out = f.dir + "/ev";
    e.map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
    e.log = [said](const std::string& m) { *said += m + "\n"; };
    return vit::evaluate(e);
  };
  std::string said;
  EXPECT_TRUE(eval(&said)["duplicates_across_labels"].is_null());
  EXPECT_EQ(said.find("two labels"), std::string::npos) << said;
  fs::copy_file(f.data + "/NEUTROPHIL/c0.png", f.data + "/LYMPHOCYTE/copy.png");
  fs::copy_file(f.data + "/NEUTROPHIL/c1.png", f.data + "/NEUTROPHIL/again.png");  // same label: not counted
  said.clear();
  const nlohmann::json j = eval(&said);
  ASSERT_FALSE(j["duplicates_across_labels"].is_null());
  EXPECT_EQ(j["duplicates_across_labels"]["pairs"], 1);
  EXPECT_NE(said.find("1 image(s) appear under two labels"), std::string::npos) << said;
  EXPECT_NE(said.find("LYMPHOCYTE/copy.png"), std::string::npos) << said;
  EXPECT_EQ(nlohmann::json::parse(vt::read_file(f.dir + "/ev/metrics.json"))["duplicates_across_labels"]["pairs"], 1);
}

TEST(EvalMap, RestrictCallsTheTargetWhoseClassesHoldTheMostProbability) {
  CellFolder f;
  f.add("NEUTROPHIL", 5, 1);
  f.add("LYMPHOCYTE", 5, 100);
  f.add("EOSINOPHIL", 5, 200);
  const std::string map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
  const nlohmann::json mj = nlohmann::json::parse(vt::read_file(map));
  vit::Predictor p(f.model);
  const auto& names = p.class_names();
  std::map<std::string, int> expect_right;
  std::map<std::string, double> expect_conf;
  for (const std::string folder : {"NEUTROPHIL", "LYMPHOCYTE", "EOSINOPHIL"})
    for (int i = 0; i < 5; ++i) {
      const auto pr = p.predict({vit::load_image(f.data + "/" + folder + "/c" + std::to_string(i) + ".png")}, 1)[0];
      const std::string truth = mj["truth"][folder];
      for (const std::string rule : {"other", "restrict"}) {
        const std::string called = expected_target(mj, names, pr, rule);
        expect_right[rule] += called == truth;
        double mass = 0, mapped = 0;
        for (size_t c = 0; c < names.size(); ++c) {
          const std::string t = mj["map"].value(names[c], std::string("other"));
          mass += t == called ? pr.probs[c] : 0.0;
          mapped += t != "other" ? pr.probs[c] : 0.0;
        }
        expect_conf[rule] += rule == "restrict" ? mass / mapped : mass;
      }
    }
  for (const std::string rule : {"other", "restrict"}) {
    vit::EvalRequest r;
    r.model = f.model;
    r.data = f.data;
    r.map = map;
    r.map_rule = rule;
    r.out = f.dir + "/ev_" + rule;
    const nlohmann::json j = vit::evaluate(r);
    EXPECT_NEAR(j["accuracy"].get<double>(), expect_right[rule] / 15.0, 1e-12) << rule;
    // The reliability diagram's confidence: the called target's probability, renormalised over
    // the targets with restrict (as predict reports it), the test's own sum otherwise.
    double mean_conf = 0;
    for (const auto& b : j["calibration"]["bins"]) mean_conf += b["count"].get<double>() * b["confidence"].get<double>();
    EXPECT_NEAR(mean_conf / 15.0, expect_conf[rule] / 15.0, 1e-5) << rule;
    if (rule == "restrict") {
      EXPECT_EQ(j["map"]["predicted_other"].get<int>(), 0);
    }
  }
  vit::EvalRequest bad;
  bad.model = f.model, bad.data = f.data, bad.map = map, bad.map_rule = "nearest", bad.out = f.dir + "/ev_bad";
  EXPECT_THROW(vit::evaluate(bad), std::runtime_error);
}

// A map's "truth" is keyed by the lab's folder names (bccd5.json's "NEUTROPHIL"); eval read such a
// folder as the model class of that name first (the CLI's folder_class) and never looked the folder
// up, so a map merging the classes into other labels refused every folder ("label 'Neutrophil' ...
// is not a target"), and one that relabels a folder was ignored. Each target's support must be the
// number of images the test put in the folders its truth sends there.
TEST(EvalMap, TruthKeyedByTheFolderNameWinsOverTheClassTheFolderIsReadAs) {
  CellFolder f;
  f.add("NEUTROPHIL", 3, 1);
  f.add("EOSINOPHIL", 2, 100);
  f.add("LYMPHOCYTE", 4, 200);
  const std::string map = f.dir + "/gran.json";
  vt::write_file(map, R"({"targets": ["Granulocyte", "Agranulocyte"],
    "map": {"Neutrophil": "Granulocyte", "Eosinophil": "Granulocyte", "Lymphocyte": "Agranulocyte"},
    "truth": {"NEUTROPHIL": "Granulocyte", "EOSINOPHIL": "Granulocyte", "LYMPHOCYTE": "Agranulocyte"}})");
  vit::EvalRequest r;
  r.model = f.model, r.data = f.data, r.map = map, r.out = f.dir + "/ev";
  r.log = [](const std::string&) {};
  r.app.folder_class = [](const std::string& folder) {  // as the CLI reads "NEUTROPHIL": its class
    std::string c = folder.substr(0, 1);
    for (size_t i = 1; i < folder.size(); ++i) c += char(std::tolower(folder[i]));
    return c;
  };
  const nlohmann::json j = vit::evaluate(r);
  EXPECT_EQ(j["per_class"]["Granulocyte"]["support"].get<int>(), 3 + 2);
  EXPECT_EQ(j["per_class"]["Agranulocyte"]["support"].get<int>(), 4);
}

// A long evaluation says how far it is: a line at each tenth of the batches (20 images in batches
// of 1: after 2, 4, ..., 18), the rows so far of all the images; a run under 20 batches is quiet.
TEST(EvalProgress, ALongRunSaysHowFarItIsAtEachTenth) {
  CellFolder f;
  f.add("Lymphocyte", 12, 1);
  f.add("Monocyte", 8, 100);
  for (const int batch : {1, 2}) {  // 20 batches, then 10
    std::vector<std::string> lines;
    vit::EvalRequest r;
    r.model = f.model;
    r.data = f.data;
    r.batch_size = batch;
    r.out = f.dir + "/ev" + std::to_string(batch);
    r.log = [&](const std::string& l) {
      if (l.find(" images, ") != std::string::npos) lines.push_back(l);
    };
    vit::evaluate(r);
    std::vector<std::string> expect;
    if (batch == 1)
      for (int done = 2; done < 20; done += 2) expect.push_back("[eval] " + std::to_string(done) + " of 20 images, ");
    ASSERT_EQ(lines.size(), expect.size()) << "batch " << batch;
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_EQ(lines[i].rfind(expect[i], 0), 0u) << lines[i];
      EXPECT_NE(lines[i].find(" s left"), std::string::npos) << lines[i];
    }
  }
}

// predict --map names each image's target by the same rules, in JSON and CSV.
TEST(PredictMap, EachImageGetsTheTargetTheRuleCalls) {
  CellFolder f;
  f.add("NEUTROPHIL", 4, 1);
  f.add("LYMPHOCYTE", 4, 100);
  const std::string map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
  const nlohmann::json mj = nlohmann::json::parse(vt::read_file(map));
  vit::Predictor p(f.model);
  for (const std::string rule : {"other", "restrict"}) {
    std::string so, se;
    ASSERT_EQ(vt::run(std::string(VITENGINE_BINARY) + " predict --model " + f.model + " --format json --map " + map +
                          " --map-rule " + rule + " " + f.data,
                      &so, &se),
              0)
        << se;
    std::istringstream lines(so);
    int n = 0;
    for (std::string line; std::getline(lines, line);) {
      const nlohmann::json row = nlohmann::json::parse(line);
      const auto pr = p.predict({vit::load_image(row["file"])}, 1)[0];
      EXPECT_EQ(row["target"], expected_target(mj, p.class_names(), pr, rule)) << row["file"] << " " << rule;
      double sum = 0;
      for (const auto& [t, v] : row["target_probabilities"].items()) sum += v.get<double>();
      if (rule == "restrict") {
        EXPECT_NEAR(sum, 1.0, 1e-5);  // renormalised over the targets
      } else {
        EXPECT_LE(sum, 1.0 + 1e-5);
      }
      ++n;
    }
    EXPECT_EQ(n, 8) << rule;
  }
  std::string so, se;
  ASSERT_EQ(vt::run(std::string(VITENGINE_BINARY) + " predict --model " + f.model + " --format csv --map " + map + " " +
                        f.data + "/LYMPHOCYTE/c0.png",
                    &so, &se),
            0)
      << se;
  EXPECT_NE(so.find(",target,target_prob\n"), std::string::npos) << so;
  EXPECT_NE(vt::run(std::string(VITENGINE_BINARY) + " predict --model " + f.model + " --map-rule nearest --map " + map +
                        " " + f.data,
                    &so, &se),
            0);
  EXPECT_NE(se.find("nearest"), std::string::npos) << se;
}

// differential --map: each cell's target in report.json is the one the test's own reading of the
// map calls from the Predictor's probabilities, and the counts are those calls counted here.
TEST(DifferentialMap, EachCellGetsItsTargetAndTheTargetsAreCounted) {
  CellFolder f;
  f.add("NEUTROPHIL", 4, 1);
  f.add("LYMPHOCYTE", 4, 100);
  const std::string map = std::string(VITENGINE_SOURCE_DIR) + "/configs/bccd5.json";
  const nlohmann::json mj = nlohmann::json::parse(vt::read_file(map));
  vit::Predictor p(f.model);
  for (const std::string rule : {"other", "restrict"}) {
    const std::string html = f.dir + "/d_" + rule + ".html";
    std::string so, se;
    ASSERT_EQ(vt::run(std::string(VITENGINE_BINARY) + " differential " + f.data + " --out " + html + " --model " +
                          f.model + " --map " + map + " --map-rule " + rule,
                      &so, &se),
              0)
        << se;
    const nlohmann::json rep = nlohmann::json::parse(vt::read_file(f.dir + "/d_" + rule + ".json"));
    std::map<std::string, int> want;
    ASSERT_EQ(rep["cells"].size(), 8u);
    for (const auto& c : rep["cells"]) {
      const auto pr = p.predict({vit::load_image(f.data + "/" + c["file"].get<std::string>())}, 1)[0];
      const std::string t = expected_target(mj, p.class_names(), pr, rule);
      EXPECT_EQ(c["target"], t) << c["file"] << " " << rule;
      want[t]++;
    }
    ASSERT_EQ(rep["map"]["rule"], rule);
    int total = 0;
    for (const auto& row : rep["map"]["targets"]) {
      EXPECT_EQ(row["count"].get<int>(), want[row["target"].get<std::string>()]) << row["target"] << " " << rule;
      total += row["count"].get<int>();
    }
    EXPECT_EQ(total, 8);
    EXPECT_EQ(rep["map"]["targets"].size(), mj["targets"].size() + 1);  // and "other"
    EXPECT_NE(vt::read_file(html).find("Targets of the label map 'bccd5'"), std::string::npos);
  }
  std::string so, se;
  const std::string bad = f.dir + "/bad.json";
  vt::write_file(bad, "{\"targets\": []}");
  EXPECT_NE(vt::run(std::string(VITENGINE_BINARY) + " differential " + f.data + " --out " + f.dir + "/x.html --model " +
                        f.model + " --map " + bad,
                    &so, &se),
            0);
  EXPECT_NE(se.find("targets"), std::string::npos) << se;
  EXPECT_FALSE(fs::exists(f.dir + "/x.html"));
}

}  // namespace
