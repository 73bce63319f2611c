#include "engine/wbc/app.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "engine/eval/metrics.h"
#include "engine/wbc/taxonomy.h"

namespace vit::wbc {
namespace {

// The 9-group accuracy and folded confusion, and the hard classes' recalls and confusions.
void add_metrics(const std::vector<std::string>& names, const Metrics& m, nlohmann::json& j) {
  if (names != class_names()) return;  // only a model over the 14 classes, in taxonomy order
  const int K = int(names.size());
  std::vector<int> c2g(K);
  for (int c = 0; c < K; ++c) c2g[c] = group_of(c);
  j["group9"] = {{"accuracy", group_accuracy(m.confusion, c2g)},
                 {"groups", groups()},
                 {"confusion", fold_confusion(m.confusion, c2g, int(groups().size()))}};
  auto rc = [&](const char* c) {
    const auto& k = m.per_class[class_index(c)];
    return std::isfinite(k.recall) && k.support ? nlohmann::json(k.recall) : nlohmann::json(nullptr);
  };
  auto cm = [&](const char* a, const char* b) { return m.confusion[class_index(a)][class_index(b)]; };
  const char* series[3] = {"Promyelocyte", "Myelocyte", "Metamyelocyte"};
  nlohmann::json matrix = nlohmann::json::array();
  for (const char* a : series) matrix.push_back({cm(a, series[0]), cm(a, series[1]), cm(a, series[2])});
  j["hard_classes"] = {
      {"recall",
       {{"Band Neutrophil", rc("Band Neutrophil")},
        {"Segmented Neutrophil", rc("Segmented Neutrophil")},
        {"Promyelocyte", rc("Promyelocyte")},
        {"Myelocyte", rc("Myelocyte")},
        {"Metamyelocyte", rc("Metamyelocyte")}}},
      {"band_predicted_segmented", cm("Band Neutrophil", "Segmented Neutrophil")},
      {"segmented_predicted_band", cm("Segmented Neutrophil", "Band Neutrophil")},
      {"immature_series_confusion", {{"classes", {series[0], series[1], series[2]}}, {"matrix", matrix}}}};
}

std::string summary_rows(const nlohmann::json& j) {
  if (!j.contains("group9")) return "";
  return "| accuracy at 9 groups | " + percent(j["group9"]["accuracy"].get<double>()) + " |\n";
}

std::string headline(const nlohmann::json& j) {
  if (!j.contains("group9")) return "";
  char b[64];
  std::snprintf(b, sizeof b, "accuracy at 9 groups %.4f", j["group9"]["accuracy"].get<double>());
  return b;
}

std::string summary_notes(const nlohmann::json& j) {
  if (!j.contains("hard_classes")) return "";
  std::ostringstream s;
  s << "\nHard classes (recall): ";
  bool first = true;
  for (auto it = j["hard_classes"]["recall"].begin(); it != j["hard_classes"]["recall"].end(); ++it) {
    s << (first ? "" : ", ") << it.key() << " " << (it.value().is_number() ? percent(it.value().get<double>()) : "-");
    first = false;
  }
  s << ".\n";
  return s.str();
}

}  // namespace

EvalApp eval_app() {
  EvalApp a;
  a.folder_class = [](const std::string& folder) {
    const int c = class_from_folder(folder);
    return c >= 0 ? classes()[c].name : std::string();
  };
  a.group_of = [](const std::string& name) {
    const int c = class_index(name);
    return c >= 0 ? groups()[group_of(c)] : std::string();
  };
  a.names_if_unnamed = class_names();
  a.add_metrics = add_metrics;
  a.summary_rows = summary_rows;
  a.summary_notes = summary_notes;
  a.headline = headline;
  return a;
}

}  // namespace vit::wbc
