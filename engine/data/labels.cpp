#include "engine/data/labels.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>

#include "engine/data/image.h"  // has_image_extension
#include "engine/util/csv.h"
#include "engine/util/file.h"
#include "engine/util/json.h"

namespace vit {
namespace fs = std::filesystem;

namespace {

// The first component of a relative path, or "" for a file directly in its SRC.
std::string top_folder(const std::string& rel) {
  const size_t slash = rel.find('/');
  return slash == std::string::npos ? "" : rel.substr(0, slash);
}

// A map from class name to index, for a list in output order.
std::shared_ptr<const std::map<std::string, int>> index_of(const std::vector<std::string>& classes) {
  auto m = std::make_shared<std::map<std::string, int>>();
  for (size_t c = 0; c < classes.size(); ++c) (*m)[classes[c]] = int(c);
  return m;
}

std::string list_some(const std::vector<std::string>& v, size_t max = 5) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < max; ++i) s += (i ? ", '" : "'") + v[i] + "'";
  if (v.size() > max) s += ", ... (" + std::to_string(v.size()) + " in all)";
  return s;
}

}  // namespace

void check_class_list(const std::vector<std::string>& classes, const std::string& what) {
  const int n = int(classes.size());
  if (n < kMinClasses)
    throw std::runtime_error(what + ": found " + std::to_string(n) + " class" + (n == 1 ? "" : "es") +
                             (n ? " (" + list_some(classes) + ")" : "") + "; a classifier needs at least " +
                             std::to_string(kMinClasses));
  if (n > kMaxClasses)
    throw std::runtime_error(what + ": found " + std::to_string(n) + " classes; at most " +
                             std::to_string(kMaxClasses) + " are supported");
  std::set<std::string> seen;
  for (const auto& c : classes) {
    if (c.empty()) throw std::runtime_error(what + ": a class name is empty");
    for (unsigned char ch : c)
      if (ch < 0x20 || ch == 0x7f)
        throw std::runtime_error(what + ": class name '" + c + "' holds a control character");
    // A class name goes into report.json, the model file and every report, all JSON; a folder named
    // on a Latin-1 system would stop the first of them after the whole run, or become another name.
    if (!is_valid_utf8(c))
      throw std::runtime_error(what + ": class name " + json_text(c) +
                               " is not UTF-8 text (a folder named on another system?); rename it");
    if (!seen.insert(c).second) throw std::runtime_error(what + ": class '" + c + "' is listed twice");
  }
}

std::vector<std::pair<std::string, std::string>> image_files_under(const std::vector<std::string>& srcs,
                                                                   const std::string& skip) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& src : srcs) {
    if (!fs::is_directory(src)) throw std::runtime_error(src + ": not a directory");
    const std::string root = absolute_path(src);
    std::vector<std::string> here;
    for (const FoundFile& f : files_under(root))
      if (f.error.empty() && has_image_extension(f.path) && !is_under(f.path, skip))
        here.push_back(fs::path(f.path).lexically_relative(root).generic_string());
    for (auto& r : here) out.emplace_back(root, std::move(r));
  }
  return out;
}

size_t count_labelled(const Labeler& L, const std::vector<std::pair<std::string, std::string>>& files) {
  size_t n = 0;
  for (const auto& f : files) n += L.label_of(f.second) >= 0;
  return n;
}

Labeler folder_labeler(const std::vector<std::string>& srcs, const std::string& skip) {
  std::set<std::string> names;
  for (const auto& f : image_files_under(srcs, skip)) {
    const std::string top = top_folder(f.second);
    if (!top.empty() && top[0] != '.') names.insert(top);
  }
  Labeler L;
  L.kind = "folders";
  L.classes.assign(names.begin(), names.end());  // std::set: sorted byte order
  std::string where;
  for (const auto& s : srcs) where += (where.empty() ? "" : ", ") + s;
  check_class_list(L.classes, "--labels folders: class folders (SRC/<class>/...) in " + where);
  auto idx = index_of(L.classes);
  L.label_of = [idx](const std::string& rel) {
    auto it = idx->find(top_folder(rel));
    return it == idx->end() ? -1 : it->second;
  };
  L.is_class_folder = [idx](const std::string& folder) { return idx->count(folder) > 0; };
  L.unlabelled_reason = "not inside a class folder (SRC/<class>/...)";
  return L;
}

namespace {

struct CsvRows {
  std::map<std::string, std::string> label, split;  // by path relative to its SRC
};

// The rel path a CSV path names: relative paths are taken as they are; an absolute one is made
// relative to the SRC it lies under ("" when under none).
std::string csv_rel(const std::string& p, const std::vector<std::string>& roots) {
  const fs::path path = fs::path(p).lexically_normal();
  if (!path.is_absolute()) return path.generic_string();
  for (const auto& r : roots) {
    const std::string rel = path.lexically_relative(r).generic_string();
    if (!rel.empty() && rel.rfind("..", 0) != 0) return rel;
  }
  return "";
}

// Hand-written CSVs put a space after the comma ("f1.png, cat"): the spaces and tabs around a
// field are no part of it, or "cat" and " cat" would be two classes (docs/data.md).
std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Trimming a path changes which file it names when a file is named with those spaces: refused.
void check_untrimmed_path(const std::string& raw, const std::vector<std::string>& roots, const std::string& where) {
  if (trim(raw) == raw) return;
  const std::string rel = csv_rel(raw, roots);
  for (const auto& r : roots)
    if (!rel.empty() && fs::exists(fs::path(r) / rel))
      throw std::runtime_error(where + "'" + raw + "' is a file whose name begins or ends with a space or tab; " +
                               "spaces around a field are dropped, so rename the file");
}

CsvRows read_label_csv(const std::string& csv_path, const std::vector<std::string>& roots, Labeler& L) {
  std::ifstream f(csv_path);
  if (!f) throw std::runtime_error(csv_path + ": cannot open the label CSV");
  CsvRows rows;
  std::string line;
  int lineno = 0, cp = -1, cl = -1, cs = -1;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty() || line == "\r") continue;
    const std::string where = csv_path + ":" + std::to_string(lineno) + ": ";
    bool ok;
    auto fields = split_csv(line, ok);
    if (!ok) throw std::runtime_error(where + "unterminated quote");
    if (lineno == 1 && fields.size() && fields[0].rfind("\xEF\xBB\xBF", 0) == 0) fields[0] = fields[0].substr(3);
    const std::string raw_path = cp >= 0 && size_t(cp) < fields.size() ? fields[size_t(cp)] : "";
    for (auto& field : fields) field = trim(field);
    if (cp < 0) {  // the header
      for (size_t i = 0; i < fields.size(); ++i) {
        if (fields[i] == "path") cp = int(i);
        if (fields[i] == "label") cl = int(i);
        if (fields[i] == "split") cs = int(i);
      }
      if (cp < 0 || cl < 0) throw std::runtime_error(where + "the header must name the columns path and label");
      continue;
    }
    const int need = std::max({cp, cl, cs}) + 1;
    if (int(fields.size()) < need) throw std::runtime_error(where + "too few fields");
    const std::string rel = csv_rel(fields[size_t(cp)], roots), label = fields[size_t(cl)];
    const std::string split = cs >= 0 ? fields[size_t(cs)] : "";
    if (fields[size_t(cp)].empty()) throw std::runtime_error(where + "empty path");
    check_untrimmed_path(raw_path, roots, where);
    if (label.empty()) throw std::runtime_error(where + "empty label");
    if (!split.empty() && split != "train" && split != "val" && split != "test")
      throw std::runtime_error(where + "split must be train, val, test or empty, not '" + split + "'");
    if (rel.empty()) {
      L.warnings.push_back(where + fields[size_t(cp)] + " lies under no SRC folder");
      continue;
    }
    auto [it, fresh] = rows.label.emplace(rel, label);
    if (!fresh && it->second != label)
      throw std::runtime_error(where + rel + " is listed again with another label ('" + it->second + "', then '" +
                               label + "')");
    auto [sp, new_split] = rows.split.emplace(rel, split);
    if (!new_split && sp->second != split)
      throw std::runtime_error(where + rel + " is listed again with another split ('" + sp->second + "', then '" +
                               split + "')");
  }
  if (cp < 0) throw std::runtime_error(csv_path + ": empty label CSV (the header path,label is missing)");
  return rows;
}

}  // namespace

Labeler csv_labeler(const std::string& csv_path, const std::vector<std::string>& srcs) {
  std::vector<std::string> roots;
  for (const auto& s : srcs) roots.push_back(absolute_path(s));
  Labeler L;
  L.kind = "csv";
  auto rows = std::make_shared<CsvRows>(read_label_csv(csv_path, roots, L));
  std::set<std::string> names;
  for (const auto& [rel, label] : rows->label) names.insert(label);
  L.classes.assign(names.begin(), names.end());
  check_class_list(L.classes, "--labels csv:" + csv_path);
  size_t present = 0;
  std::vector<std::string> missing;
  for (const auto& [rel, label] : rows->label) {
    bool found = false;
    for (const auto& r : roots) found = found || fs::is_regular_file(fs::path(r) / rel);
    if (found)
      ++present;
    else
      missing.push_back(rel);
  }
  if (!present)
    throw std::runtime_error("--labels csv:" + csv_path + ": none of its " + std::to_string(rows->label.size()) +
                             " paths exists under the SRC folder(s) (paths are relative to SRC), e.g. " +
                             list_some(missing, 3));
  for (const auto& m : missing) L.warnings.push_back(csv_path + ": listed file " + m + " does not exist");
  auto idx = index_of(L.classes);
  L.label_of = [idx, rows](const std::string& rel) {
    auto it = rows->label.find(rel);
    return it == rows->label.end() ? -1 : idx->at(it->second);
  };
  L.split_of = [rows](const std::string& rel) {
    auto it = rows->split.find(rel);
    return it == rows->split.end() ? std::string() : it->second;
  };
  L.unlabelled_reason = "not listed in " + csv_path;
  return L;
}

}  // namespace vit
