#include "engine/wbc/app.h"

#include <filesystem>

#include "engine/wbc/taxonomy.h"

namespace vit::wbc {

std::vector<std::string> class_names() {
  std::vector<std::string> n;
  for (const auto& c : classes()) n.push_back(c.name);
  return n;
}

bool is_cell_model(const std::vector<std::string>& model_classes) {
  if (model_classes.empty()) return false;
  for (const auto& n : model_classes)
    if (class_index(n) < 0) return false;
  return true;
}

ClassGroups class_groups() {
  ClassGroups g;
  g.names = groups();
  g.group_of = [](const std::string& name) {
    const int c = class_index(name);
    return c >= 0 ? group_of(c) : -1;
  };
  return g;
}

Labeler labeler() {
  Labeler L;
  L.kind = "wbc14";
  L.classes = class_names();
  L.orientation_free = true;  // a cell on a slide has no up or left: rotations and flips are fair
  L.unlabelled_reason = "no known class prefix in the file name or class folder";
  L.label_of = [](const std::string& rel) {
    const std::filesystem::path p(rel);
    int c = class_from_filename(p.filename().string());
    if (c < 0 && p.has_parent_path()) c = class_from_folder(p.parent_path().filename().string());
    return c;
  };
  L.is_class_folder = [](const std::string& folder) { return class_from_folder(folder) >= 0; };
  return L;
}

}  // namespace vit::wbc
