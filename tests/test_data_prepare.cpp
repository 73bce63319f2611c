// `prepare` on synthetic folders with planted faults, on the shared originals sample,
// and end to end through the CLI.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "engine/data/dataset.h"
#include "engine/data/prepare.h"
#include "engine/wbc/app.h"
#include "engine/wbc/taxonomy.h"
#include "tests/data_test_util.h"

using namespace vit;
using namespace vit::testutil;
using nlohmann::json;

namespace {

// A synthetic data set: 32x32 noise PNGs named by class prefix, with known pixels,
// plus planted duplicates and bad files.
struct Synth {
  TempDir dir{"prep_src"};
  std::map<std::string, Image> pixels;  // file name -> pixels written
  fs::path root() const { return dir.path / "cells"; }

  void add(const std::string& sub, const std::string& name, const Image& im) {
    fs::create_directories(root() / sub);
    write_png((root() / sub / name).string(), im);
    pixels[name] = im;
  }
  Synth() {
    const std::pair<const char*, int> classes[] = {{"BA", 40}, {"EO", 20}, {"LY", 10}, {"MO", 30}};
    uint32_t seed = 1;
    for (auto& [p, n] : classes)
      for (int i = 0; i < n; ++i) {
        // Base brightness spread over 40..215 so that splits have clearly different means.
        const int base = 40 + (int)((seed * 2654435761u) % 176);
        add(p, std::string(p) + "_" + std::to_string(i) + ".png", noise_image(32, 32, seed++, base));
      }
    // Exact duplicate that agrees (same bytes, other name).
    fs::copy_file(root() / "BA" / "BA_0.png", root() / "BA" / "BA_copy.png");
    pixels["BA_copy.png"] = pixels["BA_0.png"];
    // Exact duplicate that conflicts: EO_3's bytes under a lymphocyte name.
    fs::copy_file(root() / "EO" / "EO_3.png", root() / "LY" / "LY_conflict.png");
    pixels["LY_conflict.png"] = pixels["EO_3.png"];
    // Near duplicate: MO_5 with +-1 noise (re-encoding-like); different bytes and pixels.
    Image near = pixels["MO_5.png"];
    for (size_t i = 0; i < near.rgb.size(); i += 7) near.rgb[i] = (uint8_t)std::min(255, near.rgb[i] + 1);
    add("MO", "MO_near.png", near);
    // Bad files, each a different kind.
    const auto jpg = read_bytes(fixtures() / "wbc/pbc/basophil/BA_100102.jpg");
    write_bytes(root() / "BA" / "BA_empty.jpg", {});
    write_bytes(root() / "BA" / "BA_trunc.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 3));
    const std::string text = "not an image, just text\n";
    write_bytes(root() / "BA" / "BA_text.jpg", std::vector<uint8_t>(text.begin(), text.end()));
    fs::copy_file(fixtures() / "wbc/pbc/neutrophil/.DS_169665.jpg", root() / "BA" / ".DS_169665.jpg");
    write_png((root() / "BA" / "BA_tiny.png").string(), noise_image(4, 4, 999, 128));
    write_bytes(root() / "notes.txt", std::vector<uint8_t>(text.begin(), text.end()));
    // A readable image whose label cannot be known.
    fs::create_directories(root() / "misc");
    write_png((root() / "misc" / "XX_1.png").string(), noise_image(32, 32, 4242, 100));
  }
};

PrepareOptions opts(const Synth& s, const fs::path& out, uint64_t seed = 7) {
  PrepareOptions o;
  o.labeler = wbc::labeler();
  o.srcs = {s.root().string()};
  o.out = out.string();
  o.seed = seed;
  o.size = 32;     // = the synthetic size, so preprocessing is the identity and stats are exact
  o.min_side = 8;  // the 4x4 image is "tiny"
  return o;
}

std::map<std::string, std::string> reasons(const json& rep) {
  std::map<std::string, std::string> r;
  for (const auto& u : rep["unreadable"]) r[fs::path(u["path"].get<std::string>()).filename().string()] = u["reason"];
  return r;
}

std::string stem_of(const std::string& p) { return fs::path(p).stem().string(); }

}  // namespace

TEST(DataPrepare, EveryBadFileIsReportedAndTheRunContinues) {
  Synth s;
  TempDir out("prep_out");
  json rep = prepare_dataset(opts(s, out.path));
  auto r = reasons(rep);
  ASSERT_EQ(r.size(), 5u) << rep["unreadable"].dump(1);
  EXPECT_NE(r["BA_empty.jpg"].find("empty"), std::string::npos) << r["BA_empty.jpg"];
  EXPECT_NE(r["BA_trunc.jpg"].find("truncated"), std::string::npos) << r["BA_trunc.jpg"];
  EXPECT_NE(r["BA_text.jpg"].find("not an image"), std::string::npos) << r["BA_text.jpg"];
  EXPECT_NE(r[".DS_169665.jpg"].find("not an image"), std::string::npos) << r[".DS_169665.jpg"];
  EXPECT_NE(r["BA_tiny.png"].find("tiny"), std::string::npos) << r["BA_tiny.png"];
  ASSERT_EQ(rep["unknown_label"].size(), 1u);
  EXPECT_EQ(rep["unknown_label"][0]["path"], "misc/XX_1.png");
  ASSERT_EQ(rep["ignored"].size(), 1u);
  EXPECT_EQ(rep["ignored"][0]["path"], "notes.txt");
  // The good files all made it: 100 + copies - conflict pair - dup/near extras.
  Manifest m = read_manifest((out.path / "manifest.csv").string());
  EXPECT_EQ(m.samples.size(), 40u + 19u + 10u + 30u);
  for (const auto& smp : m.samples) EXPECT_EQ(reasons(rep).count(fs::path(smp.path).filename().string()), 0u);
}

TEST(DataPrepare, DuplicatesAndConflictsHandled) {
  Synth s;
  TempDir out("prep_out");
  json rep = prepare_dataset(opts(s, out.path));
  EXPECT_EQ(rep["exact_duplicate_groups"], 2);  // BA_0/BA_copy, EO_3/LY_conflict
  EXPECT_EQ(rep["near_duplicate_groups"], 1);   // MO_5/MO_near
  ASSERT_EQ(rep["label_conflicts"].size(), 1u);
  std::set<std::string> conflict;
  for (const auto& p : rep["label_conflicts"][0]) conflict.insert(p.get<std::string>());
  EXPECT_EQ(conflict, (std::set<std::string>{"EO/EO_3.png", "LY/LY_conflict.png"}));
  Manifest m = read_manifest((out.path / "manifest.csv").string());
  std::set<std::string> names, shas;
  for (const auto& smp : m.samples) names.insert(fs::path(smp.path).filename().string()), shas.insert(smp.sha256);
  EXPECT_EQ(shas.size(), m.samples.size());  // no two rows share file bytes
  // Conflicting group dropped whole; agreeing groups keep exactly one member.
  EXPECT_EQ(names.count("EO_3.png") + names.count("LY_conflict.png"), 0u);
  EXPECT_EQ(names.count("BA_0.png") + names.count("BA_copy.png"), 1u);
  EXPECT_EQ(names.count("MO_5.png") + names.count("MO_near.png"), 1u);
  // So no duplicate group can span two splits: at most one member of each is in the manifest.
  for (const auto& g : rep["duplicate_groups"])
    for (const auto& d : g["dropped"]) EXPECT_EQ(names.count(fs::path(d.get<std::string>()).filename().string()), 0u);
  // The sha256 column is the SHA-256 of the file bytes: check one against a known digest.
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-2
  for (const auto& smp : m.samples)
    if (smp.path == "LY/LY_0.png") {
      const auto bytes = read_bytes(s.root() / "LY/LY_0.png");
      EXPECT_EQ(smp.sha256, sha256_hex(bytes.data(), bytes.size()));
    }
}

TEST(DataPrepare, SplitIsStratifiedReproducibleAndNested) {
  Synth s;
  TempDir o1("prep_a"), o2("prep_b"), o3("prep_c");
  prepare_dataset(opts(s, o1.path, 7));
  prepare_dataset(opts(s, o2.path, 7));
  prepare_dataset(opts(s, o3.path, 8));
  auto csv = [](const fs::path& p) {
    auto b = read_bytes(p / "manifest.csv");
    return std::string(b.begin(), b.end());
  };
  EXPECT_EQ(csv(o1.path), csv(o2.path));  // same seed, same bytes
  EXPECT_NE(csv(o1.path), csv(o3.path));  // another seed, another split
  Manifest m = read_manifest((o1.path / "manifest.csv").string());
  // Hand-computed per class (after dedup): n -> train round(.7n), val round(.8n)-train, rest test.
  // BA 40 -> 28/4/8, EO 19 -> 13/2/4, LY 10 -> 7/1/2, MO 30 -> 21/3/6.
  // 5% subset: max(1, round(.05 train)); 20%: round(.2 train): BA 1/6, EO 1/3, LY 1/1, MO 1/4.
  std::map<std::string, std::array<int, 5>> want = {{"Basophil", {28, 4, 8, 1, 6}},
                                                    {"Eosinophil", {13, 2, 4, 1, 3}},
                                                    {"Lymphocyte", {7, 1, 2, 1, 1}},
                                                    {"Monocyte", {21, 3, 6, 1, 4}}};
  std::map<std::string, std::array<int, 5>> got;
  for (const auto& smp : m.samples) {
    auto& g = got[classes()[smp.label].name];
    g[smp.split == "train" ? 0 : smp.split == "val" ? 1 : 2]++;
    if (smp.split == "train" && smp.subset <= 5) g[3]++;
    if (smp.split == "train" && smp.subset <= 20) g[4]++;
    if (smp.split != "train") {
      EXPECT_EQ(smp.subset, 100);
    }
  }
  EXPECT_EQ(got, want);
  // select() nests: 5% within 20% within 100%.
  auto ids = [](const std::vector<Sample>& v) {
    std::set<std::string> s;
    for (auto& x : v) s.insert(x.path);
    return s;
  };
  auto s5 = ids(select(m, "train", 5)), s20 = ids(select(m, "train", 20)), s100 = ids(select(m, "train", 100));
  EXPECT_EQ(s5.size(), 4u);
  EXPECT_EQ(s20.size(), 14u);
  EXPECT_TRUE(std::includes(s20.begin(), s20.end(), s5.begin(), s5.end()));
  EXPECT_TRUE(std::includes(s100.begin(), s100.end(), s20.begin(), s20.end()));
}

TEST(DataPrepare, StatisticsComeFromTrainOnly) {
  Synth s;
  TempDir out("prep_out");
  json rep = prepare_dataset(opts(s, out.path));
  Manifest m = read_manifest((out.path / "manifest.csv").string());
  // Independent: average the pixels this test wrote, for train rows only, and for all rows.
  double sum[2][3] = {}, sq[2][3] = {};
  size_t n[2] = {0, 0};
  for (const auto& smp : m.samples) {
    const Image& im = s.pixels.at(fs::path(smp.path).filename().string());
    for (int k = 0; k < 2; ++k) {
      if (k == 0 && smp.split != "train") continue;
      for (size_t i = 0; i < im.rgb.size(); ++i) {
        const double v = im.rgb[i] / 255.0;
        sum[k][i % 3] += v, sq[k][i % 3] += v * v;
      }
      n[k] += im.rgb.size() / 3;
    }
  }
  for (int c = 0; c < 3; ++c) {
    const double mt = sum[0][c] / n[0], ma = sum[1][c] / n[1];
    const double st = std::sqrt(sq[0][c] / n[0] - mt * mt);
    // The case must discriminate: val+test shift the all-rows mean well beyond the tolerance.
    ASSERT_GT(std::abs(mt - ma), 1e-3) << "synthetic split means too close to test anything";
    EXPECT_NEAR(rep["mean"][c].get<double>(), mt, 1e-9);  // same sums in double: rounding only
    EXPECT_NEAR(rep["std"][c].get<double>(), st, 1e-9);
  }
  DataStats ds = read_stats((out.path / "report.json").string());
  EXPECT_NEAR(ds.mean[0], rep["mean"][0].get<double>(), 1e-6);
}

TEST(DataPrepare, TopUpOnlyAddsTrainRowsMadeFromTrainImages) {
  Synth s;
  TempDir plain("prep_plain"), top("prep_top");
  prepare_dataset(opts(s, plain.path));
  auto o = opts(s, top.path);
  o.top_up = 20;
  json rep = prepare_dataset(o);
  Manifest a = read_manifest((plain.path / "manifest.csv").string());
  Manifest b = read_manifest((top.path / "manifest.csv").string());
  auto rows_of = [](const Manifest& m, const std::string& split) {
    std::set<std::string> r;
    for (const auto& x : m.samples)
      if (x.split == split) r.insert(x.path + "|" + x.sha256);
    return r;
  };
  EXPECT_EQ(rows_of(a, "val"), rows_of(b, "val"));  // val and test are untouched
  EXPECT_EQ(rows_of(a, "test"), rows_of(b, "test"));
  std::set<std::string> train_stems;
  for (const auto& x : a.samples)
    if (x.split == "train") train_stems.insert(stem_of(x.path));
  std::map<int, int> train_count;
  size_t topups = 0;
  for (const auto& x : b.samples) {
    if (x.split == "train") ++train_count[x.label];
    if (x.path.rfind("topup/", 0) != 0) continue;
    ++topups;
    EXPECT_EQ(x.split, "train") << x.path;
    EXPECT_EQ(x.src, fs::absolute(top.path).lexically_normal().string());
    EXPECT_TRUE(fs::exists(x.full_path())) << x.full_path();
    // Named <train image stem>_ta<k>: its parent is a train image.
    const std::string st = stem_of(x.path);
    EXPECT_EQ(train_stems.count(st.substr(0, st.rfind("_ta"))), 1u) << x.path;
  }
  // LY has 7 and EO 13 train images: topped up to 20 -> 13 + 7 new; BA (28) and MO (21) untouched.
  EXPECT_EQ(topups, 20u);
  EXPECT_EQ(rep["split_counts"]["train_topup"], 20);
  EXPECT_EQ(rep["topup_class_counts"], (json{{"Eosinophil", 7}, {"Lymphocyte", 13}}));
  EXPECT_EQ(train_count[class_index("Lymphocyte")], 20);
  EXPECT_EQ(train_count[class_index("Eosinophil")], 20);
  EXPECT_EQ(train_count[class_index("Basophil")], 28);
  // Statistics stay those of the real train images.
  json plain_rep = json::parse(std::ifstream(plain.path / "report.json"));
  EXPECT_EQ(plain_rep["mean"], rep["mean"]);
}

TEST(DataPrepare, SplitSpecParsing) {
  int s[3];
  parse_split("0/0/100", s);
  EXPECT_EQ(s[2], 100);
  EXPECT_THROW(parse_split("70/10", s), std::invalid_argument);
  EXPECT_THROW(parse_split("70/10/30", s), std::invalid_argument);
  EXPECT_THROW(parse_split("a/b/c", s), std::invalid_argument);
}

TEST(DataPrepare, SharedOriginalsSampleFaultsFound) {
  fs::path data;
  if (!shared_data_root(data)) GTEST_SKIP() << "shared data not present";
  TempDir out("prep_shared");
  PrepareOptions o;
  o.labeler = wbc::labeler();
  o.srcs = {(data / "wbc14" / "originals-sample").string()};
  o.out = out.path.string();
  json rep = prepare_dataset(o);
  auto r = reasons(rep);
  EXPECT_EQ(r.count(".DS_169665.jpg"), 1u);
  EXPECT_EQ(rep["exact_duplicate_groups"], 2);  // README: one duplicate pair + the conflicting pair
  ASSERT_EQ(rep["label_conflicts"].size(), 1u);
  std::set<std::string> c;
  for (const auto& p : rep["label_conflicts"][0]) c.insert(fs::path(p.get<std::string>()).filename().string());
  EXPECT_EQ(c, (std::set<std::string>{"BNE_191112.jpg", "EO_225902.jpg"}));
  EXPECT_EQ(rep["class_counts"]["Segmented Neutrophil"], 6);  // 3 SNE + 3 NGS
}

TEST(DataPrepare, CliEndToEnd) {
  Synth s;
  TempDir out("prep_cli");
  const std::string bin = VITENGINE_BINARY;
  const std::string log = (out.path / "log.txt").string();
  std::string cmd = bin + " prepare " + s.root().string() + " --out " + (out.path / "p").string() +
                    " --size 32 --min-side 8 --seed 3 --top-up 12 > " + log + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  json rep = json::parse(std::ifstream(out.path / "p" / "report.json"));
  for (const char* k : {"unreadable", "exact_duplicate_groups", "near_duplicate_groups", "label_conflicts",
                        "class_counts", "split_counts", "mean", "std", "seed", "near_threshold", "sources"})
    EXPECT_TRUE(rep.contains(k)) << k;
  EXPECT_EQ(rep["seed"], 3);
  EXPECT_EQ(rep["unreadable"].size(), 5u);
  EXPECT_EQ(read_manifest((out.path / "p" / "manifest.csv").string()).samples.size(), 99u + 5u);  // LY 7 -> 12
  // Usage errors exit 2 with one line.
  cmd = bin + " prepare " + s.root().string() + " --out " + (out.path / "q").string() + " --split 50/40/20 > " + log +
        " 2>&1";
  int rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 2);
}

TEST(DataPrepare, StrataAreClassAndSource) {
  // One class from two sources (as SNE from PBC and NGS from LMU): each source is split 70/10/20 on its own.
  TempDir src("prep_two"), out("prep_two_out");
  for (int i = 0; i < 20; ++i)
    write_png((src.path / "pbc" / "neutrophil" / ("SNE_" + std::to_string(i) + ".png")).string(),
              (fs::create_directories(src.path / "pbc" / "neutrophil"), noise_image(32, 32, 500 + i, 120)));
  for (int i = 0; i < 10; ++i)
    write_png((src.path / "lmu" / "NGS" / ("NGS_" + std::to_string(i) + ".png")).string(),
              (fs::create_directories(src.path / "lmu" / "NGS"), noise_image(32, 32, 700 + i, 120)));
  PrepareOptions o;
  o.labeler = wbc::labeler();
  o.srcs = {src.path.string()};
  o.out = out.path.string();
  o.size = 32;
  prepare_dataset(o);
  std::map<std::string, std::array<int, 3>> got;
  for (const auto& s : read_manifest((out.path / "manifest.csv").string()).samples)
    got[s.source][s.split == "train" ? 0 : s.split == "val" ? 1 : 2]++;
  // Hand-computed: 20 -> 14/2/4, 10 -> 7/1/2. Pooled (30 -> 21/3/6) could give any mix.
  EXPECT_EQ(got["pbc"], (std::array<int, 3>{14, 2, 4}));
  EXPECT_EQ(got["lmu"], (std::array<int, 3>{7, 1, 2}));
}
