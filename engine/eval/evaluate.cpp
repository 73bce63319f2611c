#include "engine/eval/evaluate.h"
#include "engine/eval/ood.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/eval/calibration.h"
#include "engine/eval/inference.h"
#include "engine/data/dataset.h"
#include "engine/data/image.h"
#include "engine/eval/tta.h"
#include "engine/eval/metrics.h"
#include "engine/eval/plots.h"
#include "engine/eval/predict.h"
#include "engine/util/file.h"
#include "engine/util/json.h"
#include "engine/util/sha256.h"
#include "weights/checkpoint.h"

namespace fs = std::filesystem;

namespace vit {

int LabelMap::truth_target(const std::string& label) const {
  std::string t = label;
  if (truth.is_object() && truth.contains(label)) {
    if (!truth[label].is_string()) return -1;  // null: a label the map leaves out
    t = truth[label].get<std::string>();
  }
  for (size_t i = 0; i < targets.size(); ++i)
    if (targets[i] == t) return int(i);
  return -1;
}

int LabelMap::truth_target(const std::string& label, const std::string& folder) const {
  if (!folder.empty() && truth.is_object() && truth.contains(folder)) return truth_target(folder);
  return truth_target(label);
}

bool restrict_map_rule(const std::string& rule) {
  if (rule != "other" && rule != "restrict")
    throw std::runtime_error("--map-rule must be other or restrict, not '" + rule + "'");
  return rule == "restrict";
}

std::vector<double> target_mass(const LabelMap& m, const double* probs, int K, bool restrict_to_targets) {
  std::vector<double> mass(m.targets.size(), 0.0);
  double sum = 0;
  for (int c = 0; c < K; ++c)
    if (m.class_to_target[size_t(c)] >= 0) {
      mass[size_t(m.class_to_target[size_t(c)])] += probs[c];
      sum += probs[c];
    }
  if (restrict_to_targets)
    for (double& v : mass) v /= std::max(sum, 1e-300);
  return mass;
}

int mapped_target(const LabelMap& m, const std::vector<double>& mass, int top, bool restrict_to_targets) {
  if (!restrict_to_targets) return m.class_to_target[size_t(top)];
  return int(std::max_element(mass.begin(), mass.end()) - mass.begin());
}

MappedCall map_call(const LabelMap& m, bool restrict_to_targets, const std::vector<float>& probs) {
  const std::vector<double> p(probs.begin(), probs.end());
  MappedCall r;
  r.masses = target_mass(m, p.data(), int(p.size()), restrict_to_targets);
  const int top = int(std::max_element(p.begin(), p.end()) - p.begin());
  const int t = mapped_target(m, r.masses, top, restrict_to_targets);
  if (t >= 0) r.name = m.targets[size_t(t)], r.prob = r.masses[size_t(t)];
  return r;
}

namespace {

// A label map's mistakes, each named with the file and the key: nlohmann's own type errors
// ("type must be string, but is array") named neither, and a repeated target, an empty one, a
// "truth" leading nowhere or a map calling nothing passed and scored silently wrong.
std::vector<std::string> map_targets(const nlohmann::json& j, const std::string& where) {
  if (!j.contains("targets") || !j["targets"].is_array() || j["targets"].empty())
    throw std::runtime_error(where + ": 'targets' must be a non-empty array of label names");
  std::vector<std::string> targets;
  for (const auto& t : j["targets"]) {
    if (!t.is_string() || t.get<std::string>().empty())
      throw std::runtime_error(where + ": 'targets' holds " + t.dump() + "; each target is a non-empty name");
    if (std::count(targets.begin(), targets.end(), t.get<std::string>()))
      throw std::runtime_error(where + ": target '" + t.get<std::string>() + "' is listed twice in 'targets'");
    targets.push_back(t.get<std::string>());
  }
  return targets;
}

// The index of `value` among the targets, for key `key` of object `object`; -1 for null (none).
int target_index(const LabelMap& m, const nlohmann::json& value, const std::string& object, const std::string& key,
                 const std::string& where) {
  if (value.is_null()) return -1;
  const std::string what = where + ": " + object + " '" + key + "' maps to ";
  if (!value.is_string())
    throw std::runtime_error(what + value.dump() + "; give one target's name (or null for none)");
  auto ti = std::find(m.targets.begin(), m.targets.end(), value.get<std::string>());
  if (ti == m.targets.end()) throw std::runtime_error(what + "'" + value.get<std::string>() + "', which is not in 'targets'");
  return int(ti - m.targets.begin());
}

void map_classes(const nlohmann::json& j, const std::vector<std::string>& class_names, const std::string& where,
                 LabelMap& m) {
  if (!j.contains("map") || !j["map"].is_object())
    throw std::runtime_error(where + ": 'map' must be an object {model class: target}");
  m.class_to_target.assign(class_names.size(), -1);
  for (auto it = j["map"].begin(); it != j["map"].end(); ++it) {
    auto c = std::find(class_names.begin(), class_names.end(), it.key());
    if (c == class_names.end())
      throw std::runtime_error(where + ": '" + it.key() + "' is not one of the model's classes");
    m.class_to_target[size_t(c - class_names.begin())] = target_index(m, it.value(), "class", it.key(), where);
  }
  if (std::all_of(m.class_to_target.begin(), m.class_to_target.end(), [](int t) { return t < 0; }))
    throw std::runtime_error(where + ": 'map' sends none of the model's classes to a target, so every image would be "
                             "called 'other'");
}

}  // namespace

LabelMap read_label_map(const std::string& path, const std::vector<std::string>& class_names) {
  const nlohmann::json j = read_hand_written_json(path, "label map");
  const std::string where = "label map '" + path + "'";
  if (!j.is_object()) throw std::runtime_error(where + " must be a JSON object {\"targets\", \"map\", \"truth\"}");
  LabelMap m;
  m.name = j.contains("name") && j["name"].is_string() ? j["name"].get<std::string>() : fs::path(path).stem().string();
  m.targets = map_targets(j, where);
  map_classes(j, class_names, where, m);
  m.truth = j.value("truth", nlohmann::json::object());
  if (!m.truth.is_object()) throw std::runtime_error(where + ": 'truth' must be an object {data label: target}");
  for (auto it = m.truth.begin(); it != m.truth.end(); ++it) target_index(m, it.value(), "truth", it.key(), where);
  return m;
}

namespace {

// Hidden files are skipped: the originals hold a macOS .DS_Store saved under an image name
// (tests/fixtures/README.md), which is not an image.
bool image_file(const fs::path& f) {
  const std::string n = f.filename().string();
  return !n.empty() && n[0] != '.' && has_image_extension(n);
}

// A folder of class folders (e.g. ../shared/data/bccd-cropped): the label is the folder's class.
EvalSet load_class_folders(const std::string& data, const std::string& split, const EvalApp& app) {
  EvalSet e;
  std::vector<fs::path> dirs;
  std::error_code ec;  // a link among the class folders that leads nowhere is no folder
  for (const auto& d : fs::directory_iterator(data))  // hidden folders are no classes, as in prepare's folders
    if (d.is_directory(ec) && d.path().filename().string()[0] != '.') dirs.push_back(d.path());
  std::sort(dirs.begin(), dirs.end());
  for (const auto& d : dirs) {
    std::vector<fs::path> files;
    for (const FoundFile& f : files_under(d.string())) {
      if (!image_file(f.path)) continue;
      if (!f.error.empty()) throw std::runtime_error(f.path + ": " + f.error);  // as an unreadable image would
      files.push_back(f.path);
    }
    std::sort(files.begin(), files.end());
    const std::string label = d.filename().string();
    std::string cls = app.folder_class ? app.folder_class(label) : "";
    if (cls.empty()) cls = label;
    for (const auto& f : files) {
      Sample s;
      s.path = fs::absolute(f).string();
      s.split = split;
      s.source = label;
      s.label = 0;  // the loader needs a valid index; the truth comes from truth_names
      e.samples.push_back(s);
      e.truth_names.push_back(cls);
      e.folders.push_back(label);
    }
  }
  if (e.samples.empty()) throw std::runtime_error("'" + data + "' holds no class folders with images");
  e.source = EvalSet::Source::class_folders;
  return e;
}

// A class name as a markdown table cell: "|" would end the cell, and a backslash would escape
// what follows it, so both get a backslash ("a|b" -> "a\|b").
std::string table_cell(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '|' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

std::string markdown(const nlohmann::json& j, const Metrics& m, const EvalApp& app) {
  std::ostringstream s;
  s << "# Evaluation of `" << j["model"].get<std::string>() << "`\n\n";
  s << "Data `" << j["data"].get<std::string>() << "`, split `" << j["split"].get<std::string>() << "`, "
    << j["n"].get<int64_t>() << " images"
    << (j.contains("map") ? ", mapped with `" + j["map"]["file"].get<std::string>() + "`" : "")
    << (j.value("tta", "none") != "none"
            ? ", test-time augmentation `" + j["tta"].get<std::string>() + "` (mean logits)"
            : "")
    << ".\n\n";
  if (j.contains("ood") && j["ood"].contains("warning"))
    s << "> **Warning:** " << j["ood"]["warning"].get<std::string>() << ".\n\n";
  s << "| metric | value |\n|---|---|\n";
  s << "| accuracy | " << percent(m.accuracy) << " |\n| macro-F1 | " << percent(m.macro_f1)
    << " |\n| balanced accuracy | " << percent(m.balanced_accuracy) << " |\n";
  if (app.summary_rows) s << app.summary_rows(j);
  s << "| ECE (temperature " << j["temperature"].get<double>() << ") | " << j["calibration"]["ece"].get<double>()
    << " |\n";
  s << "| ECE (uncalibrated) | " << j["ece_uncalibrated"].get<double>() << " |\n\n";
  s << "| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n";
  for (const auto& k : m.per_class)
    s << "| " << table_cell(k.name) << " | " << percent(k.precision) << " | " << percent(k.recall) << " | " << percent(k.f1)
      << " | " << k.support << " |\n";
  if (app.summary_notes) s << app.summary_notes(j);
  if (j.contains("per_source")) {
    s << "\nPer source: ";
    bool first = true;
    for (auto it = j["per_source"].begin(); it != j["per_source"].end(); ++it) {
      s << (first ? "" : ", ") << it.key() << " accuracy " << percent(it.value()["accuracy"].get<double>())
        << " (n = " << it.value()["support"].get<int64_t>() << ")";
      first = false;
    }
    s << ".\n";
  }
  s << "\n![confusion matrix](confusion_counts.svg)\n![confusion matrix, row-normalised](confusion_normalized.svg)\n"
    << "![per class](per_class.svg)\n![reliability](reliability.svg)\n";
  return s.str();
}

// The model's logits over the set, and what they are scored against.
struct Scored {
  LoadedModel lm;
  OodReference ood;  // what the model stores (engine/eval/ood.h), read once
  std::vector<std::string> names;  // the model's output names
  double T = 1.0;                  // the fitted temperature
  EvalSet set;
  CellSizeNorm cell_size = CellSizeNorm::kNone;  // --cell-size as this model resolves it (auto)
  LabelMap map;                  // --map, read once (empty without one)
  std::vector<int> truth_target; // --map: each sample's target, checked before any image is classified
  Predictions p;
  std::vector<size_t> idx;  // row i of p is set.samples[idx[i]]
  std::vector<int> pred;    // argmax output per row
  size_t n = 0;
  int K = 0;
};

struct Report {
  nlohmann::json j;
  Metrics m;
  CalibrationReport calib, calib_raw;
};

std::vector<std::string> model_names(const EvalRequest& req, const LoadedModel& lm) {
  std::vector<std::string> names = lm.meta.class_names;
  const int C = lm.model->config().num_classes;
  if (names.empty() && int(req.app.names_if_unnamed.size()) == C) names = req.app.names_if_unnamed;
  if (int(names.size()) != C)
    throw std::runtime_error("'" + req.model + "' has " + std::to_string(C) + " outputs but " +
                             std::to_string(names.size()) + " class names");
  return names;
}

// Progress of a long evaluation (thousands of images, or eight views each, on a CPU: minutes): a
// line at each tenth of the batches, with the time so far and a linear estimate of what is left.
// Runs of fewer than kProgressBatches batches stay quiet. images = 0 (data parallel: this rank's
// rows are its share only): the share of the batches alone.
constexpr size_t kProgressBatches = 20;
PredictProgress eval_progress(const std::function<void(const std::string&)>& log, size_t images) {
  const auto t0 = std::chrono::steady_clock::now();
  return [log, images, t0](size_t rows, size_t batch, size_t batches) {
    if (batches < kProgressBatches || batch >= batches || batch % (batches / 10) != 0) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char done[64], b[200];
    if (images)
      std::snprintf(done, sizeof done, "%zu of %zu images", rows, images);
    else
      std::snprintf(done, sizeof done, "%zu of %zu batches", batch, batches);
    std::snprintf(b, sizeof b, "[eval] %s, %.0f s, about %.0f s left", done, s,
                  s * double(batches - batch) / double(batch));
    log(b);
  };
}

// Class folders (not prepare's deduplicated splits) can hold one image under two labels, and then
// one of the pair is scored wrong whatever the model says. eval measures the folder as it is, so
// the pairs are counted and said (with the first as an example), not refused; null when none.
nlohmann::json duplicates_across_labels(const EvalSet& set) {
  if (set.source != EvalSet::Source::class_folders) return nullptr;
  std::vector<std::string> paths;
  for (const Sample& s : set.samples) paths.push_back(s.full_path());
  size_t pairs = 0;
  nlohmann::json example;
  for (const auto& [a, b] : same_bytes(paths)) {
    if (set.truth_names[a] == set.truth_names[b]) continue;
    if (pairs++ == 0)
      example = {{"a", paths[a]}, {"a_label", set.truth_names[a]}, {"b", paths[b]}, {"b_label", set.truth_names[b]}};
  }
  if (pairs == 0) return nullptr;
  return {{"pairs", pairs}, {"example", example}};
}

// The map's target of sample k's label, or a refusal naming the label, the file and the map.
int map_truth(const LabelMap& lmap, const EvalSet& set, size_t k, const std::string& map) {
  const std::string& tn = set.truth_names[k];
  const int t = lmap.truth_target(tn, set.folders.empty() ? "" : set.folders[k]);
  if (t < 0)
    throw std::runtime_error("label '" + tn + "' of " + set.samples[k].full_path() + " is not a target of the map '" +
                             map + "'");
  return t;
}

Scored run_model(const EvalRequest& req, const std::function<void(const std::string&)>& log) {
  Scored S;
  S.lm = load_model(req.model);
  if (!S.lm.model) throw std::runtime_error("'" + req.model + "' holds no model");
  const ViTConfig& mc = S.lm.model->config();
  S.names = model_names(req, S.lm);
  S.T = S.lm.meta.temperature > 0 ? S.lm.meta.temperature : 1.0;
  S.set = load_eval_set(req.data, req.split, req.data_root, req.app);
  if (!req.map.empty()) {  // a map that cannot score these labels is refused before any image is classified
    S.map = read_label_map(req.map, S.names);
    for (size_t k = 0; k < S.set.samples.size(); ++k) S.truth_target.push_back(map_truth(S.map, S.set, k, req.map));
  }
  DataStats st;
  for (int c = 0; c < 3; ++c) st.mean[c] = S.lm.meta.mean[c], st.std[c] = S.lm.meta.std[c];
  LoaderConfig lc = eval_loader_config(mc.image_size, req.batch_size, req.threads);
  lc.stain = parse_stain_norm(req.stain_norm);
  if (lc.stain != StainNorm::kNone) lc.stain_ref = stain_reference_of(S.lm.meta, req.model, lc.stain);
  lc.cell_size = S.cell_size = resolve_cell_size(req.cell_size, S.lm.meta);
  if (lc.cell_size != CellSizeNorm::kNone) lc.cell_fraction = cell_size_reference_of(S.lm.meta, req.model).fraction;
  if (req.comm) {
    lc.shard_rank = req.comm->rank();
    lc.shard_count = req.comm->size();
    lc.shard_whole_batches = true;
  }
  Loader loader(S.set.samples, st, lc);
  auto backend = make_backend(req.device, *S.lm.model, req.batch_size, req.precision);
  log("[eval] " + mc.to_string() + " on " + std::to_string(S.set.samples.size()) + " images (" + req.data + ", " +
      (S.set.source == EvalSet::Source::manifest ? "split " + req.split : "class folders") + ")");
  const int views = tta_view_count(req.tta);
  if (views > 1)
    log("[eval] test-time augmentation " + req.tta + ": mean logits of " + std::to_string(views) + " views");
  // A feature-space out-of-distribution score needs the features the head read.
  S.ood = OodReference::from_meta(S.lm.meta.extra);
  S.ood.check_width(mc.dim, req.model);
  S.p = predict(*backend, loader, views, req.comm, S.ood.needs_features() ? mc.dim : 0,
                eval_progress(log, req.comm && req.comm->distributed() ? 0 : loader.size()));
  S.n = S.p.n();
  S.K = S.p.k;
  if (S.n != S.set.samples.size())
    throw std::runtime_error("eval: the loader returned " + std::to_string(S.n) + " of " +
                             std::to_string(S.set.samples.size()) + " images");
  S.idx = S.p.index.size() == S.n ? S.p.index : std::vector<size_t>();
  if (S.idx.empty())
    for (size_t i = 0; i < S.n; ++i) S.idx.push_back(i);
  S.pred = argmax_rows(S.p.logits.data(), S.n, S.K);
  return S;
}

// The model output each row's true class is scored as: the output of the same name, else the
// output named after its group (a model trained on groups).
std::vector<int> true_outputs(const EvalRequest& req, const Scored& S) {
  std::vector<int> truth(S.n);
  for (size_t i = 0; i < S.n; ++i) {
    const std::string& tn = S.set.truth_names[S.idx[i]];
    auto it = std::find(S.names.begin(), S.names.end(), tn);
    if (it == S.names.end() && req.app.group_of) {
      const std::string g = req.app.group_of(tn);
      if (!g.empty()) it = std::find(S.names.begin(), S.names.end(), g);
    }
    if (it == S.names.end()) {
      if (S.set.source == EvalSet::Source::class_folders)
        throw std::runtime_error("folder '" + tn + "' is not a model class; evaluate it through --map");
      throw std::runtime_error("eval: true class '" + tn + "' is neither an output of '" + req.model +
                               "' nor in one of its groups; use --map");
    }
    truth[i] = int(it - S.names.begin());
  }
  return truth;
}

// The out-of-distribution score of every image (engine/eval/ood.h) and, when the model stores a
// threshold, the share flagged and the folder-level verdict.
nlohmann::json score_ood(const Scored& S) {
  const OodReference& ref = S.ood;
  double sum = 0;
  size_t flagged = 0;
  for (size_t i = 0; i < S.n; ++i) {
    const float* f = S.p.dim ? S.p.features.data() + i * size_t(S.p.dim) : nullptr;
    const double e = ref.score(S.p.logits.data() + i * size_t(S.K), S.K, f, S.p.dim);
    sum += e;
    flagged += ref.flags(e);
  }
  nlohmann::json j = {{"score", ref.kind}, {"mean_score", S.n ? sum / double(S.n) : 0.0}};
  if (!ref.present) {
    j["threshold"] = nullptr;
    j["note"] = "the model stores no threshold: add one with `vitengine ood-ref`";
    return j;
  }
  const double share = S.n ? double(flagged) / double(S.n) : 0.0;
  j["threshold"] = ref.threshold;
  j["fpr"] = ref.fpr;
  j["flagged"] = flagged;
  j["flagged_share"] = share;
  j["looks_unlike_training_data"] = folder_looks_unlike(ref, share);
  if (folder_looks_unlike(ref, share)) j["warning"] = folder_warning(share, ref);
  return j;
}

// Scores the model's own classes.
void score_classes(const EvalRequest& req, const Scored& S, Report& R) {
  const std::vector<int> truth = true_outputs(req, S);
  R.m = compute_metrics(confusion_matrix(truth, S.pred, S.K), S.names);
  R.calib = calibration(S.p.logits.data(), truth.data(), S.n, S.K, S.T, req.ece_bins);
  R.calib_raw = calibration(S.p.logits.data(), truth.data(), S.n, S.K, 1.0, req.ece_bins);
  R.j["nll"] = mean_nll(S.p.logits.data(), truth.data(), S.n, S.K, S.T);
  if (req.app.add_metrics) req.app.add_metrics(S.names, R.m, R.j);
  std::vector<std::string> src(S.n);
  for (size_t i = 0; i < S.n; ++i) {
    const Sample& smp = S.set.samples[S.idx[i]];
    src[i] = smp.source.empty() ? "unknown" : smp.source;
  }
  R.j["per_source"] = recall_by(truth, S.pred, src, S.names);
}

// Scores the model's classes mapped onto another set's labels (--map).
void score_mapped(const EvalRequest& req, const Scored& S, Report& R) {
  const size_t n = S.n;
  const int K = S.K;
  const LabelMap& lmap = S.map;
  const int TK = int(lmap.targets.size());
  const bool restrict_to_targets = restrict_map_rule(req.map_rule);
  auto probs = softmax_rows(S.p.logits.data(), n, K, S.T), raw = softmax_rows(S.p.logits.data(), n, K, 1.0);
  // Each image's target, and its confidence for the reliability diagram: the summed probability of
  // the classes that map to it (restrict: renormalised over the targets, as predict reports it;
  // "other": the unmapped mass), from the calibrated and the raw probabilities.
  std::vector<int> truth(n), pred(n);
  std::vector<double> conf(n), conf_raw(n);
  std::vector<bool> ok(n);
  for (size_t i = 0; i < n; ++i) {
    truth[i] = S.truth_target[S.idx[i]];
    const std::vector<double> mass = target_mass(lmap, probs.data() + i * K, K, restrict_to_targets),
                              mass_raw = target_mass(lmap, raw.data() + i * K, K, restrict_to_targets);
    const int t = mapped_target(lmap, mass, S.pred[i], restrict_to_targets);
    pred[i] = t < 0 ? TK : t;  // TK = "other": always wrong
    const auto conf_of = [t](const std::vector<double>& m) {
      double mapped = 0;
      for (double v : m) mapped += v;
      return t < 0 ? 1.0 - mapped : m[size_t(t)];
    };
    conf[i] = conf_of(mass);
    conf_raw[i] = conf_of(mass_raw);
    ok[i] = pred[i] == truth[i];
  }
  std::vector<std::string> cols = lmap.targets;
  cols.push_back("other");
  R.m = compute_metrics(confusion_matrix(truth, pred, TK, TK + 1), lmap.targets, cols);
  R.calib = calibration(conf, ok, req.ece_bins);
  R.calib_raw = calibration(conf_raw, ok, req.ece_bins);
  int64_t other = 0;
  for (auto v : pred) other += v == TK;
  nlohmann::json cm = nlohmann::json::object();
  for (int c = 0; c < K; ++c)
    cm[S.names[c]] = lmap.class_to_target[c] < 0 ? "other" : lmap.targets[lmap.class_to_target[c]];
  R.j["map"] = {
      {"file", req.map},          {"name", lmap.name},
      {"targets", lmap.targets},  {"class_to_target", cm},
      {"predicted_other", other},
      {"rule", restrict_to_targets ? "restrict: the target whose classes hold the most probability"
                                   : "other: a prediction of an unmapped class is 'other' and counts as an error"}};
  // what the model said, in its own classes, for each true target label
  nlohmann::json raw_by_target = nlohmann::json::object();
  for (int t = 0; t < TK; ++t) {
    std::vector<int64_t> cnt(K, 0);
    for (size_t i = 0; i < n; ++i)
      if (truth[i] == t) cnt[S.pred[i]]++;
    nlohmann::json row = nlohmann::json::object();
    for (int c = 0; c < K; ++c)
      if (cnt[c]) row[S.names[c]] = cnt[c];
    raw_by_target[lmap.targets[t]] = row;
  }
  R.j["predicted_classes_by_target"] = raw_by_target;
}

void write_report(const EvalRequest& req, Report& R) {
  nlohmann::json mj = R.m.to_json();
  for (auto it = mj.begin(); it != mj.end(); ++it) R.j[it.key()] = it.value();
  R.j["calibration"] = R.calib.to_json();
  R.j["ece"] = R.calib.ece;
  R.j["ece_uncalibrated"] = R.calib_raw.ece;
  fs::create_directories(req.out);
  write_text_atomic((fs::path(req.out) / "metrics.json").string(), R.j.dump(2) + "\n");
  write_eval_pictures(R.m, &R.calib, req.out, "");
  write_text_atomic((fs::path(req.out) / "summary.md").string(), markdown(R.j, R.m, req.app));
}

}  // namespace

EvalSet load_eval_set(const std::string& data, const std::string& split, const std::string& data_root,
                      const EvalApp& app) {
  const std::string mp = manifest_path(data);
  if (fs::exists(mp)) {
    EvalSet e;
    Manifest m = read_manifest_resolved(mp, data_root);
    e.samples = select(m, split, 100);
    if (e.samples.empty()) throw std::runtime_error("'" + mp + "' has no '" + split + "' samples");
    for (const auto& s : e.samples) e.truth_names.push_back(m.classes.at(size_t(s.label)));
    return e;
  }
  if (!fs::is_directory(data))
    throw std::runtime_error(
        "--data '" + data + "' is neither a prepared folder (manifest.csv), a manifest, nor a folder of class folders");
  return load_class_folders(data, split, app);
}

nlohmann::json evaluate(const EvalRequest& req) {
  std::function<void(const std::string&)> log =
      req.log ? req.log : [](const std::string& s) { std::printf("%s\n", s.c_str()), std::fflush(stdout); };
  if (req.comm && req.comm->rank() != 0) log = [](const std::string&) {};
  const auto t0 = std::chrono::steady_clock::now();
  // An --out that is a file would fail only after every image was classified, and in the words of
  // the filesystem library: said first, naming it.
  if (fs::exists(req.out) && !fs::is_directory(req.out))
    throw std::runtime_error("--out '" + req.out + "' is a file; eval writes a folder (metrics.json, pictures): "
                             "name a folder");
  const Scored S = run_model(req, log);
  Report R;
  R.j["model"] = req.model;
  R.j["data"] = req.data;
  R.j["split"] = S.set.source == EvalSet::Source::manifest ? req.split : "all (class folders)";
  R.j["n"] = S.n;
  R.j["temperature"] = S.T;
  R.j["tta"] = req.tta;
  R.j["stain_norm"] = req.stain_norm;
  if (req.stain_norm == "calibrated")  // which lab's map: the folder it was fitted on and its numbers
    R.j["stain_calibration"] = S.lm.meta.extra.value("stain_calibration", nlohmann::json());
  R.j["cell_size"] = cell_size_norm_name(S.cell_size);  // what auto meant
  R.j["model_config"] = S.lm.model->config().to_string();
  if (req.map.empty())
    score_classes(req, S, R);
  else
    score_mapped(req, S, R);
  R.j["ood"] = score_ood(S);
  R.j["duplicates_across_labels"] = duplicates_across_labels(S.set);
  R.j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (req.comm && req.comm->rank() != 0) return R.j;  // rank 0 writes and speaks for the job
  if (R.j["ood"].contains("warning")) log("[eval] warning: " + R.j["ood"]["warning"].get<std::string>());
  if (const auto& d = R.j["duplicates_across_labels"]; !d.is_null())
    log("[eval] warning: " + std::to_string(d["pairs"].get<size_t>()) +
        " image(s) appear under two labels (e.g. '" + d["example"]["a"].get<std::string>() + "' (" +
        d["example"]["a_label"].get<std::string>() + ") and '" + d["example"]["b"].get<std::string>() + "' (" +
        d["example"]["b_label"].get<std::string>() + ")): one of each pair is scored wrong whatever the model says");
  write_report(req, R);
  char b[200];
  std::snprintf(b, sizeof b, "[eval] accuracy %.4f macro-F1 %.4f balanced %.4f ECE %.4f (n = %zu) -> %s/metrics.json",
                R.m.accuracy, R.m.macro_f1, R.m.balanced_accuracy, R.calib.ece, S.n, req.out.c_str());
  const std::string extra = req.app.headline ? req.app.headline(R.j) : "";
  log(b + (extra.empty() ? "" : "; " + extra));
  return R.j;
}

}  // namespace vit
