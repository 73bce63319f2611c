// The smear-level differential (engine/wbc/report.h) on a made-up smear whose numbers are
// worked out by hand below.
//
// 106 cells: 50 segmented + 10 band neutrophils, 20 lymphocytes, 8 monocytes,
// 5 eosinophils, 3 basophils, 2 myelocytes + 1 promyelocyte (IG), 1 myeloblast,
// 4 platelets, 2 erythroblasts.
//   WBC = 50+10+20+8+5+3+2+1+1 = 100 (platelets and erythroblasts are not WBCs)
//   neutrophils 60% | bands 10/60 = 16.67% of neutrophils > 10% -> raised
//   IG 3/100 = 3% > 2% -> left shift raised | blasts 1 -> raised
//   eosinophils 5% (not > 6%) -> not raised | basophils 3% > 2% -> raised
//   erythroblasts 2 -> raised, 2.0 per 100 WBC
// One band neutrophil is called with probability .4 (< .5): the only cell for review.
#include <gtest/gtest.h>

#include <map>

#include "engine/wbc/report.h"

namespace {

const std::vector<std::string> kNames = {
    "Band Neutrophil", "Basophil",      "Eosinophil",   "Erythroblast",        "Immature Granulocyte",
    "Lymphocyte",      "Metamyelocyte", "Monocyte",     "Myeloblast",          "Myelocyte",
    "Neutrophil",      "Platelet",      "Promyelocyte", "Segmented Neutrophil"};

std::vector<float> onehot(const std::string& n, float p = 1.0f) {
  std::vector<float> v(kNames.size(), (1.0f - p) / (kNames.size() - 1));
  for (size_t i = 0; i < kNames.size(); ++i)
    if (kNames[i] == n) v[i] = p;
  return v;
}

std::vector<vit::CellCall> smear() {
  std::vector<std::pair<std::string, int>> counts = {{"Segmented Neutrophil", 50},
                                                     {"Band Neutrophil", 10},
                                                     {"Lymphocyte", 20},
                                                     {"Monocyte", 8},
                                                     {"Eosinophil", 5},
                                                     {"Basophil", 3},
                                                     {"Myelocyte", 2},
                                                     {"Promyelocyte", 1},
                                                     {"Myeloblast", 1},
                                                     {"Platelet", 4},
                                                     {"Erythroblast", 2}};
  std::vector<vit::CellCall> cells;
  for (auto& [name, n] : counts)
    for (int i = 0; i < n; ++i) cells.push_back({name + std::to_string(i), onehot(name), ""});
  cells[50].probs = onehot("Band Neutrophil", 0.4f);  // the first band: low confidence
  cells[50].thumb_jpeg_b64 = "AAAA";
  return cells;
}

std::map<std::string, nlohmann::json> by(const nlohmann::json& arr, const char* key) {
  std::map<std::string, nlohmann::json> m;
  for (const auto& x : arr) m[x[key].get<std::string>()] = x;
  return m;
}

TEST(Differential, CountsAndFivePart) {
  nlohmann::json r = vit::differential(smear(), kNames);
  EXPECT_EQ(r["cells_total"], 106);
  EXPECT_EQ(r["wbc_total"], 100);
  EXPECT_EQ(r["platelets"], 4);
  EXPECT_EQ(r["erythroblasts"], 2);
  EXPECT_DOUBLE_EQ(r["erythroblasts_per_100_wbc"].get<double>(), 2.0);
  auto five = by(r["five_part"], "name");
  EXPECT_EQ(five["Neutrophils"]["count"], 60);
  EXPECT_DOUBLE_EQ(five["Neutrophils"]["pct_of_wbc"].get<double>(), 60.0);
  EXPECT_DOUBLE_EQ(five["Lymphocytes"]["pct_of_wbc"].get<double>(), 20.0);
  EXPECT_DOUBLE_EQ(five["Monocytes"]["pct_of_wbc"].get<double>(), 8.0);
  EXPECT_DOUBLE_EQ(five["Eosinophils"]["pct_of_wbc"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(five["Basophils"]["pct_of_wbc"].get<double>(), 3.0);
  auto other = by(r["outside_five_part"], "name");
  EXPECT_EQ(other["Immature granulocytes"]["count"], 3);
  EXPECT_EQ(other["Blasts"]["count"], 1);
  EXPECT_EQ(r["neutrophil_breakdown"]["band"], 10);
  EXPECT_EQ(r["neutrophil_breakdown"]["segmented"], 50);
  auto cls = by(r["classes"], "class");
  EXPECT_TRUE(cls["Platelet"]["pct_of_wbc"].is_null());
  EXPECT_NEAR(cls["Platelet"]["pct_of_cells"].get<double>(), 3.77, 0.005);  // 4/106
}

TEST(Differential, FlagsFollowTheirRules) {
  nlohmann::json r = vit::differential(smear(), kNames);
  auto f = by(r["flags"], "flag");
  ASSERT_EQ(f.size(), 6u);
  EXPECT_TRUE(f["Blasts present"]["raised"].get<bool>());
  EXPECT_TRUE(f["Left shift (immature granulocytes)"]["raised"].get<bool>());
  EXPECT_TRUE(f["Band neutrophils raised"]["raised"].get<bool>());
  EXPECT_FALSE(f["Eosinophilia (relative)"]["raised"].get<bool>());
  EXPECT_TRUE(f["Basophilia (relative)"]["raised"].get<bool>());
  EXPECT_TRUE(f["Erythroblasts present"]["raised"].get<bool>());
  for (auto& [name, x] : f) EXPECT_FALSE(x["rule"].get<std::string>().empty()) << name;

  // Raise the thresholds above the smear's values: the three relative flags drop.
  vit::DifferentialRules strict;
  strict.ig_pct_wbc = 3.0f;             // 3% is not > 3%
  strict.band_pct_neutrophils = 20.0f;  // 16.7% < 20%
  strict.baso_pct_wbc = 5.0f;
  auto g = by(vit::differential(smear(), kNames, strict)["flags"], "flag");
  EXPECT_FALSE(g["Left shift (immature granulocytes)"]["raised"].get<bool>());
  EXPECT_FALSE(g["Band neutrophils raised"]["raised"].get<bool>());
  EXPECT_FALSE(g["Basophilia (relative)"]["raised"].get<bool>());
}

TEST(Differential, NormalSmearRaisesNothing) {
  std::vector<vit::CellCall> cells;
  for (int i = 0; i < 60; ++i) cells.push_back({"s", onehot("Segmented Neutrophil"), ""});
  for (int i = 0; i < 30; ++i) cells.push_back({"l", onehot("Lymphocyte"), ""});
  for (int i = 0; i < 7; ++i) cells.push_back({"m", onehot("Monocyte"), ""});
  for (int i = 0; i < 3; ++i) cells.push_back({"e", onehot("Eosinophil"), ""});
  for (const auto& x : vit::differential(cells, kNames)["flags"]) EXPECT_FALSE(x["raised"].get<bool>()) << x["flag"];
}

TEST(Differential, ReviewListAndHtml) {
  nlohmann::json r = vit::differential(smear(), kNames);
  ASSERT_EQ(r["review"].size(), 1u);
  EXPECT_EQ(r["review"][0]["name"], "Band Neutrophil0");
  EXPECT_EQ(r["review"][0]["thumbnail"], "data:image/jpeg;base64,AAAA");
  std::string html = vit::differential_html(r, "smear <1>");
  EXPECT_NE(html.find("Research tool, not a diagnosis"), std::string::npos);
  EXPECT_NE(html.find("smear &lt;1&gt;"), std::string::npos);  // escaped
  EXPECT_EQ(html.find("smear <1>"), std::string::npos);
  EXPECT_NE(html.find("data:image/jpeg;base64,AAAA"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos);  // self-contained
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("Warning:"), std::string::npos);
  r["ood"] = {{"flagged_share", 0.6}, {"warning", "this folder looks unlike the training data <x>"}};
  html = vit::differential_html(r, "smear");
  EXPECT_NE(html.find("Warning: this folder looks unlike the training data &lt;x&gt;."), std::string::npos);
}

TEST(Differential, UnknownClassThrows) {
  std::vector<std::string> names = {"Martian cell"};
  EXPECT_THROW(vit::differential({{"x", {1.0f}, ""}}, names), std::runtime_error);
}

}  // namespace
