// Taxonomy: class order, groups, prefixes and folder names, checked against the
// lists in ../shared/data/README.md (written out here by hand).
#include <gtest/gtest.h>

#include "engine/eval/metrics.h"
#include "engine/wbc/app.h"
#include "engine/wbc/taxonomy.h"

using namespace vit;

TEST(DataTaxonomy, ClassOrderIsSortedAndMatchesReadme) {
  const std::vector<std::string> want = {
      "Band Neutrophil", "Basophil",      "Eosinophil",   "Erythroblast",        "Immature Granulocyte",
      "Lymphocyte",      "Metamyelocyte", "Monocyte",     "Myeloblast",          "Myelocyte",
      "Neutrophil",      "Platelet",      "Promyelocyte", "Segmented Neutrophil"};
  ASSERT_EQ(num_classes(), 14);
  for (int i = 0; i < 14; ++i) EXPECT_EQ(classes()[i].name, want[i]);
  EXPECT_EQ(class_index("Myeloblast"), 8);
  EXPECT_EQ(class_index("myeloblast"), -1);  // names are exact
}

TEST(DataTaxonomy, GroupsSortedAndAssigned) {
  const std::vector<std::string> g = {"basophil",   "blast",    "eosinophil", "erythroblast", "ig",
                                      "lymphocyte", "monocyte", "neutrophil", "platelet"};
  EXPECT_EQ(groups(), g);
  auto grp = [&](const char* c) { return groups()[group_of(class_index(c))]; };
  EXPECT_EQ(grp("Promyelocyte"), "ig");
  EXPECT_EQ(grp("Myelocyte"), "ig");
  EXPECT_EQ(grp("Metamyelocyte"), "ig");
  EXPECT_EQ(grp("Immature Granulocyte"), "ig");
  EXPECT_EQ(grp("Myeloblast"), "blast");
  EXPECT_EQ(grp("Band Neutrophil"), "neutrophil");
  EXPECT_EQ(grp("Segmented Neutrophil"), "neutrophil");
  EXPECT_EQ(grp("Neutrophil"), "neutrophil");
  EXPECT_EQ(grp("Platelet"), "platelet");
  EXPECT_THROW(group_of(14), std::out_of_range);
}

TEST(DataTaxonomy, EveryPrefixFromTheReadme) {
  const std::pair<const char*, const char*> t[] = {{"BNE_1.jpg", "Band Neutrophil"},
                                                   {"SNE_2.jpg", "Segmented Neutrophil"},
                                                   {"NGS_0058.jpg", "Segmented Neutrophil"},
                                                   {"NEUTROPHIL_3.jpg", "Neutrophil"},
                                                   {"BA_1.jpg", "Basophil"},
                                                   {"EO_1.jpg", "Eosinophil"},
                                                   {"LY_1.jpg", "Lymphocyte"},
                                                   {"MO_1.jpg", "Monocyte"},
                                                   {"ERB_1.jpg", "Erythroblast"},
                                                   {"PLATELET_1.jpg", "Platelet"},
                                                   {"IG_1.jpg", "Immature Granulocyte"},
                                                   {"PMY_1.jpg", "Promyelocyte"},
                                                   {"MY_1.jpg", "Myelocyte"},
                                                   {"MMY_1.jpg", "Metamyelocyte"},
                                                   {"MYO_0001.jpg", "Myeloblast"}};
  for (auto& [f, c] : t) EXPECT_EQ(class_from_filename(f), class_index(c)) << f;
  EXPECT_EQ(class_from_filename("pbc/neutrophil/BNE_9.jpg"), class_index("Band Neutrophil"));
  EXPECT_EQ(class_from_filename(".DS_169665.jpg"), -1);  // unknown labels are not guessed
  EXPECT_EQ(class_from_filename("BloodImage_00008_1.jpg"), -1);
  EXPECT_EQ(class_from_filename("noprefix.jpg"), -1);
}

TEST(DataTaxonomy, FolderNames) {
  // bccd-cropped's folders, and the PBC group folders.
  EXPECT_EQ(class_from_folder("Neutrophil"), class_index("Neutrophil"));
  EXPECT_EQ(class_from_folder("Eosinophil"), class_index("Eosinophil"));
  EXPECT_EQ(class_from_folder("Lymphocyte"), class_index("Lymphocyte"));
  EXPECT_EQ(class_from_folder("Monocyte"), class_index("Monocyte"));
  EXPECT_EQ(class_from_folder("Basophil"), class_index("Basophil"));
  EXPECT_EQ(class_from_folder("/x/y/segmented neutrophil/"), class_index("Segmented Neutrophil"));
  EXPECT_EQ(class_from_folder("ig"), class_index("Immature Granulocyte"));
  EXPECT_EQ(class_from_folder("MYO"), class_index("Myeloblast"));
  EXPECT_EQ(class_from_folder("aml-lmu"), -1);
}

TEST(DataTaxonomy, EveryClassHasNotesAndSources) {
  for (const auto& c : classes()) {
    EXPECT_GT(c.description.size(), 40u) << c.name;
    EXPECT_GT(c.abnormal.size(), 40u) << c.name;
    EXPECT_GT(c.fact.size(), 30u) << c.name;
    EXPECT_NE(c.sources.find('['), std::string::npos) << c.name;  // at least one keyed reference
  }
}

// What `vitengine eval` takes from the white-blood-cell application.
TEST(DataTaxonomy, EvalAppLabelsFoldersAndGroups) {
  const EvalApp app = wbc::eval_app();
  EXPECT_EQ(app.folder_class("neutrophil"), "Neutrophil");
  EXPECT_EQ(app.folder_class("MYO"), "Myeloblast");
  EXPECT_EQ(app.folder_class("aml-lmu"), "");  // not a class: evaluate() labels by the folder's own name
  EXPECT_EQ(app.group_of("Band Neutrophil"), "neutrophil");
  EXPECT_EQ(app.group_of("Myelocyte"), "ig");
  EXPECT_EQ(app.group_of("Neutrophils"), "");
  EXPECT_EQ(app.names_if_unnamed, wbc::class_names());
}

TEST(DataTaxonomy, EvalAppReportsOnlyOnTheTaxonomysClasses) {
  const EvalApp app = wbc::eval_app();
  const std::vector<std::string> names = wbc::class_names();
  const int K = int(names.size());
  // One cell of each class, all right, and one band neutrophil called segmented: the same group.
  std::vector<int> truth, pred;
  for (int c = 0; c < K; ++c) truth.push_back(c), pred.push_back(c);
  truth.push_back(class_index("Band Neutrophil"));
  pred.push_back(class_index("Segmented Neutrophil"));
  nlohmann::json j;
  app.add_metrics(names, compute_metrics(confusion_matrix(truth, pred, K), names), j);
  EXPECT_DOUBLE_EQ(j["group9"]["accuracy"].get<double>(), 1.0);
  EXPECT_EQ(j["hard_classes"]["band_predicted_segmented"], 1);
  EXPECT_EQ(j["hard_classes"]["segmented_predicted_band"], 0);
  EXPECT_DOUBLE_EQ(j["hard_classes"]["recall"]["Band Neutrophil"].get<double>(), 0.5);
  EXPECT_EQ(app.summary_rows(j), "| accuracy at 9 groups | 100.00% |\n");
  EXPECT_NE(app.summary_notes(j).find("Band Neutrophil 50.00%"), std::string::npos);
  // The console line's words: the group accuracy (all right), where the classes' is 14 of 15.
  EXPECT_EQ(app.headline(j), "accuracy at 9 groups 1.0000");

  // Another model's classes: nothing added, no extra summary lines.
  const std::vector<std::string> two = {"a", "b"};
  nlohmann::json other = nlohmann::json::object();
  app.add_metrics(two, compute_metrics(confusion_matrix({0, 1}, {0, 1}, 2), two), other);
  EXPECT_TRUE(other.empty());
  EXPECT_EQ(app.summary_rows(other), "");
  EXPECT_EQ(app.summary_notes(other), "");
  EXPECT_EQ(app.headline(other), "");
}
