// The 14 white-blood-cell classes, their 9 coarse groups, the file-name prefixes
// that label the training set, and clinical notes for each class. One place for all
// of it; the class order (sorted by name) is the model's output order and matches
// ../shared/reference/pytorch_reference.py.
#pragma once
#include <string>
#include <vector>

namespace vit {

struct ClassInfo {
  std::string name;  // "Band Neutrophil"
  std::string
      group;  // coarse group: neutrophil, eosinophil, basophil, lymphocyte, monocyte, ig, erythroblast, platelet, blast
  std::string description;  // what the cell is
  std::string abnormal;     // when it is raised or abnormal in peripheral blood
  std::string fact;         // one notable fact
  std::string sources;      // references for the notes
};

// All 14 classes in model output order.
const std::vector<ClassInfo>& classes();
// The 9 coarse groups, sorted.
const std::vector<std::string>& groups();
int num_classes();
// Index of a class name, or -1.
int class_index(const std::string& name);
// Group index (into groups()) of class c.
int group_of(int c);
// Label from a file name: prefix before the first '_' (BNE_123.jpg -> Band Neutrophil).
// Returns -1 when the prefix is not known.
int class_from_filename(const std::string& filename);
// Label from a folder name (case-insensitive class name, group name or prefix), or -1.
int class_from_folder(const std::string& folder);

}  // namespace vit
