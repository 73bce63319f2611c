#include "engine/eval/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/eval/calibration.h"
#include "engine/data/dataset.h"
#include "engine/eval/tta.h"
#include "engine/eval/metrics.h"
#include "engine/eval/plots.h"
#include "engine/wbc/taxonomy.h"
#include "engine/eval/predict.h"
#include "weights/checkpoint.h"

namespace fs = std::filesystem;

namespace vit {

int LabelMap::truth_target(const std::string& label) const {
  std::string t = label;
  if (truth.is_object() && truth.contains(label)) t = truth[label].get<std::string>();
  for (size_t i = 0; i < targets.size(); ++i)
    if (targets[i] == t) return int(i);
  return -1;
}

LabelMap read_label_map(const std::string& path, const std::vector<std::string>& class_names) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("label map '" + path + "' cannot be opened");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f, nullptr, true, true);
  } catch (const std::exception& e) {
    throw std::runtime_error("label map '" + path + "' is not valid JSON: " + e.what());
  }
  LabelMap m;
  m.name = j.value("name", fs::path(path).stem().string());
  if (!j.contains("targets") || !j["targets"].is_array() || j["targets"].empty())
    throw std::runtime_error("label map '" + path + "': 'targets' must be a non-empty array of label names");
  for (const auto& t : j["targets"]) m.targets.push_back(t.get<std::string>());
  if (!j.contains("map") || !j["map"].is_object())
    throw std::runtime_error("label map '" + path + "': 'map' must be an object {model class: target}");
  m.class_to_target.assign(class_names.size(), -1);
  for (auto it = j["map"].begin(); it != j["map"].end(); ++it) {
    auto c = std::find(class_names.begin(), class_names.end(), it.key());
    if (c == class_names.end())
      throw std::runtime_error("label map '" + path + "': '" + it.key() + "' is not one of the model's classes");
    if (it.value().is_null()) continue;  // explicitly unmapped
    std::string t = it.value().get<std::string>();
    auto ti = std::find(m.targets.begin(), m.targets.end(), t);
    if (ti == m.targets.end())
      throw std::runtime_error("label map '" + path + "': class '" + it.key() + "' maps to '" + t +
                               "', which is not in 'targets'");
    m.class_to_target[c - class_names.begin()] = int(ti - m.targets.begin());
  }
  m.truth = j.value("truth", nlohmann::json::object());
  return m;
}

namespace {

struct EvalSet {
  std::vector<Sample> samples;
  std::vector<std::string> truth_names;  // label as the data names it
  std::string kind;                      // "manifest" | "folders"
};

EvalSet load_eval_set(const std::string& data, const std::string& split, const std::string& data_root) {
  EvalSet e;
  const std::string mp = manifest_path(data);
  if (fs::exists(mp)) {
    Manifest m = read_manifest_resolved(mp, data_root);
    e.samples = select(m, split, 100);
    if (e.samples.empty()) throw std::runtime_error("'" + mp + "' has no '" + split + "' samples");
    for (const auto& s : e.samples) e.truth_names.push_back(classes().at(s.label).name);
    e.kind = "manifest";
    return e;
  }
  if (!fs::is_directory(data))
    throw std::runtime_error("--data '" + data + "' is neither a prepared folder (manifest.csv), a manifest, nor a folder of class folders");
  // A folder of class folders (e.g. ../shared/data/bccd-cropped): label = folder name.
  std::vector<fs::path> dirs;
  for (const auto& d : fs::directory_iterator(data))
    if (d.is_directory()) dirs.push_back(d.path());
  std::sort(dirs.begin(), dirs.end());
  for (const auto& d : dirs) {
    std::vector<fs::path> files;
    for (const auto& f : fs::recursive_directory_iterator(d)) {
      if (!f.is_regular_file()) continue;
      std::string n = f.path().filename().string(), ext = f.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (n.empty() || n[0] == '.') continue;
      if (ext != ".jpg" && ext != ".jpeg" && ext != ".png" && ext != ".bmp") continue;
      files.push_back(f.path());
    }
    std::sort(files.begin(), files.end());
    const std::string label = d.filename().string();
    int c = class_from_folder(label);
    for (const auto& f : files) {
      Sample s;
      s.path = fs::absolute(f).string();
      s.split = split;
      s.source = label;
      s.label = c >= 0 ? c : 0;  // the loader needs a valid index; truth comes from truth_names
      e.samples.push_back(s);
      e.truth_names.push_back(c >= 0 ? classes()[c].name : label);
    }
  }
  if (e.samples.empty()) throw std::runtime_error("'" + data + "' holds no class folders with images");
  e.kind = "folders";
  return e;
}

double recall_of(const Metrics& m, const std::string& name) {
  for (const auto& k : m.per_class)
    if (k.name == name) return k.recall;
  return NAN;
}

std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%%", 100 * v);
  return b;
}

std::string markdown(const nlohmann::json& j, const Metrics& m) {
  std::ostringstream s;
  s << "# Evaluation of `" << j["model"].get<std::string>() << "`\n\n";
  s << "Data `" << j["data"].get<std::string>() << "`, split `" << j["split"].get<std::string>() << "`, "
    << j["n"].get<int64_t>() << " images" << (j.contains("map") ? ", mapped with `" + j["map"]["file"].get<std::string>() + "`" : "")
    << (j.value("tta", "none") != "none" ? ", test-time augmentation `" + j["tta"].get<std::string>() + "` (mean logits)" : "")
    << ".\n\n";
  s << "| metric | value |\n|---|---|\n";
  s << "| accuracy | " << pct(m.accuracy) << " |\n| macro-F1 | " << pct(m.macro_f1) << " |\n| balanced accuracy | "
    << pct(m.balanced_accuracy) << " |\n";
  if (j.contains("group9")) s << "| accuracy at 9 groups | " << pct(j["group9"]["accuracy"].get<double>()) << " |\n";
  s << "| ECE (temperature " << j["temperature"].get<double>() << ") | " << j["calibration"]["ece"].get<double>() << " |\n";
  s << "| ECE (uncalibrated) | " << j["ece_uncalibrated"].get<double>() << " |\n\n";
  s << "| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n";
  for (const auto& k : m.per_class)
    s << "| " << k.name << " | " << pct(k.precision) << " | " << pct(k.recall) << " | " << pct(k.f1) << " | "
      << k.support << " |\n";
  if (j.contains("hard_classes")) {
    s << "\nHard classes (recall): ";
    bool first = true;
    for (auto it = j["hard_classes"]["recall"].begin(); it != j["hard_classes"]["recall"].end(); ++it) {
      s << (first ? "" : ", ") << it.key() << " " << (it.value().is_number() ? pct(it.value().get<double>()) : "-");
      first = false;
    }
    s << ".\n";
  }
  if (j.contains("per_source")) {
    s << "\nPer source: ";
    bool first = true;
    for (auto it = j["per_source"].begin(); it != j["per_source"].end(); ++it) {
      s << (first ? "" : ", ") << it.key() << " accuracy " << pct(it.value()["accuracy"].get<double>()) << " (n = "
        << it.value()["support"].get<int64_t>() << ")";
      first = false;
    }
    s << ".\n";
  }
  s << "\n![confusion matrix](confusion_counts.svg)\n![confusion matrix, row-normalised](confusion_normalized.svg)\n"
    << "![per class](per_class.svg)\n![reliability](reliability.svg)\n";
  return s.str();
}

}  // namespace

nlohmann::json evaluate(const EvalRequest& req) {
  auto log = req.log ? req.log : [](const std::string& s) { std::printf("%s\n", s.c_str()), std::fflush(stdout); };
  auto t0 = std::chrono::steady_clock::now();
  LoadedModel lm = load_model(req.model);
  if (!lm.model) throw std::runtime_error("'" + req.model + "' holds no model");
  const ViTConfig& mc = lm.model->config();
  std::vector<std::string> names = lm.meta.class_names;
  if (names.empty())
    for (const auto& c : classes()) names.push_back(c.name);
  if (int(names.size()) != mc.num_classes)
    throw std::runtime_error("'" + req.model + "' has " + std::to_string(mc.num_classes) + " outputs but " +
                             std::to_string(names.size()) + " class names");
  const double T = lm.meta.temperature > 0 ? lm.meta.temperature : 1.0;

  EvalSet set = load_eval_set(req.data, req.split, req.data_root);
  DataStats st;
  for (int c = 0; c < 3; ++c) st.mean[c] = lm.meta.mean[c], st.std[c] = lm.meta.std[c];
  Loader loader(set.samples, st, eval_loader_config(mc.image_size, req.batch_size, req.threads));
  auto backend = make_backend(req.device, *lm.model, req.batch_size, req.precision);
  log("[eval] " + mc.to_string() + " on " + std::to_string(set.samples.size()) + " images (" + req.data + ", " +
      (set.kind == "manifest" ? "split " + req.split : "class folders") + ")");
  const int views = tta_view_count(req.tta);
  if (views > 1) log("[eval] test-time augmentation " + req.tta + ": mean logits of " + std::to_string(views) + " views");
  Predictions p = predict(*backend, loader, views);
  const size_t n = p.n();
  const int K = p.k;
  if (n != set.samples.size())
    throw std::runtime_error("eval: the loader returned " + std::to_string(n) + " of " +
                             std::to_string(set.samples.size()) + " images");
  // rows of p follow the loader's sample index
  std::vector<size_t> idx = p.index.size() == n ? p.index : std::vector<size_t>();
  if (idx.empty())
    for (size_t i = 0; i < n; ++i) idx.push_back(i);

  nlohmann::json j;
  j["model"] = req.model;
  j["data"] = req.data;
  j["split"] = set.kind == "manifest" ? req.split : "all (class folders)";
  j["n"] = n;
  j["temperature"] = T;
  j["tta"] = req.tta;
  j["model_config"] = mc.to_string();
  const std::vector<int> pred14 = argmax_rows(p.logits.data(), n, K);
  Metrics m;
  CalibrationReport calib, calib_raw;

  if (req.map.empty()) {
    if (set.kind != "manifest") {
      for (size_t i = 0; i < n; ++i)
        if (class_index(set.truth_names[idx[i]]) < 0)
          throw std::runtime_error("folder '" + set.truth_names[idx[i]] +
                                   "' is not a model class; evaluate it through --map");
    }
    // The model's outputs are the 14 classes, or the 9 groups of a label_level=group run:
    // each true class goes to the output of the same name, else to its group's output.
    std::vector<int> class_to_output(num_classes(), -1);
    for (int c = 0; c < num_classes(); ++c) {
      auto it = std::find(names.begin(), names.end(), classes()[c].name);
      if (it == names.end()) it = std::find(names.begin(), names.end(), groups()[group_of(c)]);
      if (it != names.end()) class_to_output[c] = int(it - names.begin());
    }
    std::vector<int> truth(n);
    for (size_t i = 0; i < n; ++i) {
      const int c = p.labels[i];
      if (c < 0 || c >= num_classes() || class_to_output[c] < 0)
        throw std::runtime_error("eval: true class '" + (c >= 0 && c < num_classes() ? classes()[c].name : std::to_string(c)) +
                                 "' is neither an output of '" + req.model + "' nor in one of its groups; use --map");
      truth[i] = class_to_output[c];
    }
    m = compute_metrics(confusion_matrix(truth, pred14, K), names);
    calib = calibration(p.logits.data(), truth.data(), n, K, T, req.ece_bins);
    calib_raw = calibration(p.logits.data(), truth.data(), n, K, 1.0, req.ece_bins);
    j["nll"] = mean_nll(p.logits.data(), truth.data(), n, K, T);
    // the 9 coarse groups (a 14-class model in taxonomy order)
    if (K == num_classes() && names[0] == classes()[0].name) {
      std::vector<int> c2g(K);
      for (int c = 0; c < K; ++c) c2g[c] = group_of(c);
      j["group9"] = {{"accuracy", group_accuracy(m.confusion, c2g)},
                     {"groups", groups()},
                     {"confusion", fold_confusion(m.confusion, c2g, int(groups().size()))}};
      auto rc = [&](const char* c) { return std::isfinite(recall_of(m, c)) && m.per_class[class_index(c)].support
                                                ? nlohmann::json(recall_of(m, c)) : nlohmann::json(nullptr); };
      auto cm = [&](const char* a, const char* b) { return m.confusion[class_index(a)][class_index(b)]; };
      j["hard_classes"] = {
          {"recall",
           {{"Band Neutrophil", rc("Band Neutrophil")}, {"Segmented Neutrophil", rc("Segmented Neutrophil")},
            {"Promyelocyte", rc("Promyelocyte")}, {"Myelocyte", rc("Myelocyte")}, {"Metamyelocyte", rc("Metamyelocyte")}}},
          {"band_predicted_segmented", cm("Band Neutrophil", "Segmented Neutrophil")},
          {"segmented_predicted_band", cm("Segmented Neutrophil", "Band Neutrophil")},
          {"immature_series_confusion",
           {{"classes", {"Promyelocyte", "Myelocyte", "Metamyelocyte"}},
            {"matrix",
             {{cm("Promyelocyte", "Promyelocyte"), cm("Promyelocyte", "Myelocyte"), cm("Promyelocyte", "Metamyelocyte")},
              {cm("Myelocyte", "Promyelocyte"), cm("Myelocyte", "Myelocyte"), cm("Myelocyte", "Metamyelocyte")},
              {cm("Metamyelocyte", "Promyelocyte"), cm("Metamyelocyte", "Myelocyte"),
               cm("Metamyelocyte", "Metamyelocyte")}}}}}};
    }
    std::vector<std::string> src(n);
    for (size_t i = 0; i < n; ++i) src[i] = set.samples[idx[i]].source.empty() ? "unknown" : set.samples[idx[i]].source;
    j["per_source"] = recall_by(truth, pred14, src, names);
  } else {
    LabelMap lmap = read_label_map(req.map, names);
    const int TK = int(lmap.targets.size());
    std::vector<int> truth(n), pred(n);
    for (size_t i = 0; i < n; ++i) {
      const std::string& tn = set.truth_names[idx[i]];
      truth[i] = lmap.truth_target(tn);
      if (truth[i] < 0)
        throw std::runtime_error("label '" + tn + "' of " + set.samples[idx[i]].full_path() +
                                 " is not a target of the map '" + req.map + "'");
      int t = lmap.class_to_target[pred14[i]];
      pred[i] = t < 0 ? TK : t;  // TK = "other": always wrong
    }
    std::vector<std::string> cols = lmap.targets;
    cols.push_back("other");
    m = compute_metrics(confusion_matrix(truth, pred, TK, TK + 1), lmap.targets, cols);
    // Confidence of the mapped prediction = summed probability of the classes that map to it.
    auto probs = softmax_rows(p.logits.data(), n, K, T), raw = softmax_rows(p.logits.data(), n, K, 1.0);
    std::vector<double> conf(n), conf_raw(n);
    std::vector<bool> ok(n);
    for (size_t i = 0; i < n; ++i) {
      int t = lmap.class_to_target[pred14[i]];
      for (int c = 0; c < K; ++c)
        if (lmap.class_to_target[c] == t) conf[i] += probs[i * K + c], conf_raw[i] += raw[i * K + c];
      ok[i] = pred[i] == truth[i];
    }
    calib = calibration(conf, ok, req.ece_bins);
    calib_raw = calibration(conf_raw, ok, req.ece_bins);
    int64_t other = 0;
    for (auto v : pred) other += v == TK;
    nlohmann::json cm = nlohmann::json::object();
    for (int c = 0; c < K; ++c) cm[names[c]] = lmap.class_to_target[c] < 0 ? "other" : lmap.targets[lmap.class_to_target[c]];
    j["map"] = {{"file", req.map},
                {"name", lmap.name},
                {"targets", lmap.targets},
                {"class_to_target", cm},
                {"predicted_other", other},
                {"rule", "a prediction of an unmapped class is 'other' and counts as an error"}};
    // what the model said, in its own 14 classes, for each true target label
    nlohmann::json raw14 = nlohmann::json::object();
    for (int t = 0; t < TK; ++t) {
      std::vector<int64_t> cnt(K, 0);
      for (size_t i = 0; i < n; ++i)
        if (truth[i] == t) cnt[pred14[i]]++;
      nlohmann::json row = nlohmann::json::object();
      for (int c = 0; c < K; ++c)
        if (cnt[c]) row[names[c]] = cnt[c];
      raw14[lmap.targets[t]] = row;
    }
    j["predicted_classes_by_target"] = raw14;
  }
  nlohmann::json mj = m.to_json();
  for (auto it = mj.begin(); it != mj.end(); ++it) j[it.key()] = it.value();
  j["calibration"] = calib.to_json();
  j["ece"] = calib.ece;
  j["ece_uncalibrated"] = calib_raw.ece;
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  fs::create_directories(req.out);
  write_text_atomic((fs::path(req.out) / "metrics.json").string(), j.dump(2) + "\n");
  write_eval_pictures(m, &calib, req.out, "");
  write_text_atomic((fs::path(req.out) / "summary.md").string(), markdown(j, m));
  char b[200];
  std::snprintf(b, sizeof b, "[eval] accuracy %.4f macro-F1 %.4f balanced %.4f ECE %.4f (n = %zu) -> %s/metrics.json",
                m.accuracy, m.macro_f1, m.balanced_accuracy, calib.ece, n, req.out.c_str());
  log(b);
  return j;
}

}  // namespace vit
