// vitengine differential: the smear-level differential count of a folder of cell images.
//   vitengine differential DIR --out report.html [--model CKPT] [--map FILE [--map-rule other|restrict]]
// Writes report.html (self-contained) and report.json beside it. Files that cannot
// be read are listed in the report and on stderr; the rest are counted. With a label map (another
// lab's classes, configs/bccd5.json), each cell is also called one of its targets, as predict and
// eval --map call it, and the report counts the targets.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "engine/eval/overlay.h"
#include "engine/util/json.h"
#include "engine/wbc/report.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {

struct DiffArgs {
  std::string stain_norm = "none", cell_size = "auto";
  std::string model, dir, out;
  std::string map, map_rule = "other";
  int batch = 16;
  DifferentialRules rules;
};

// The targets' counts of a differential under a label map: each cell's target (map_call), the
// count and percentage of every target and of "other", in the map's order.
nlohmann::json target_counts(const LabelMap& m, const std::string& rule, const std::vector<CellCall>& cells,
                             nlohmann::json& per_cell) {
  const bool restrict_to_targets = restrict_map_rule(rule);
  std::vector<int> n(m.targets.size() + 1, 0);  // the last: other
  for (size_t i = 0; i < cells.size(); ++i) {
    const MappedCall c = map_call(m, restrict_to_targets, cells[i].probs);
    const auto it = std::find(m.targets.begin(), m.targets.end(), c.name);
    n[size_t(it - m.targets.begin())]++;
    per_cell[i]["target"] = c.name;
    per_cell[i]["target_probability"] = c.prob;
  }
  nlohmann::json rows = nlohmann::json::array();
  for (size_t t = 0; t <= m.targets.size(); ++t)
    rows.push_back({{"target", t < m.targets.size() ? m.targets[t] : "other"},
                    {"count", n[t]},
                    {"percent", 100.0 * n[t] / double(std::max<size_t>(1, cells.size()))}});
  return {{"name", m.name}, {"rule", rule}, {"targets", rows}};
}

// --out names the HTML file, and the JSON is written beside it under the same stem: a folder there
// ("reports/", an existing one) wrote a hidden "reports/.json" or "reports.json", then failed on the
// HTML after all the work. Refused before it.
void require_report_file(const std::string& out) {
  namespace fs = std::filesystem;
  if (out.empty() || out.back() == '/' || fs::is_directory(out))
    throw UsageError("--out '" + out + "' is a folder: give the report's file name, e.g. " +
                     (fs::path(out) / "report.html").lexically_normal().string());
}

// A NaN threshold compares false with every count: "--eos-threshold nan" never raised eosinophilia and
// "--review-below nan" listed no cell, with exit 0 and a report that looked normal.
void require_numbers(const DifferentialRules& r) {
  for (const auto& [name, v] : {std::pair{"--review-below", r.review_below},
                                {"--ig-threshold", r.ig_pct_wbc},
                                {"--band-threshold", r.band_pct_neutrophils},
                                {"--eos-threshold", r.eos_pct_wbc},
                                {"--baso-threshold", r.baso_pct_wbc}})
    if (std::isnan(v)) throw UsageError(std::string(name) + " must be a number, not NaN");
}

int run_differential(const DiffArgs& a) {
  if (a.batch < 1) throw UsageError("--batch must be >= 1");
  require_numbers(a.rules);
  namespace fs = std::filesystem;
  if (!fs::is_directory(a.dir)) throw UsageError("not a folder: " + a.dir);
  require_report_file(a.out);
  fs::path html_path(a.out);
  fs::path json_path = html_path;
  json_path.replace_extension(".json");
  if (json_path == html_path) json_path += ".json";
  Predictor pred(resolve_model_path(a.model), wbc::class_names());
  pred.set_stain_norm(a.stain_norm);
  pred.set_cell_size(a.cell_size);
  if (!wbc::is_cell_model(pred.class_names())) {
    std::string names;
    for (size_t i = 0; i < pred.class_names().size() && i < 5; ++i) names += (i ? ", " : "") + pred.class_names()[i];
    if (pred.class_names().size() > 5) names += ", ...";
    throw UsageError("a differential counts white blood cells, and this model's classes (" + names +
                     ") are not the white-blood-cell taxonomy's; use a model trained on data prepared with "
                     "--labels wbc14, or `vitengine eval` / `predict` for this one");
  }
  const LabelMap lmap = a.map.empty() ? LabelMap{} : read_label_map(a.map, pred.class_names());  // before the work
  std::vector<std::string> files = require_image_files({a.dir});

  std::vector<CellCall> cells;
  size_t unlike = 0;  // images over the model's out-of-distribution threshold
  nlohmann::json unreadable = nlohmann::json::array();
  for (size_t i = 0; i < files.size(); i += size_t(a.batch)) {
    std::vector<Image> imgs;
    std::vector<std::string> ok;
    load_images(files, i, i + size_t(a.batch), imgs, ok, [&](const std::string& file, const std::string& what) {
      std::fprintf(stderr, "vitengine differential: skipped %s: %s\n", file.c_str(), what.c_str());
      unreadable.push_back({{"file", fs::relative(file, a.dir).string()}, {"error", what}});
    });
    std::vector<Prediction> preds = pred.predict(imgs, a.batch);
    for (size_t j = 0; j < preds.size(); ++j) {
      unlike += preds[j].unlike_training;
      CellCall c{fs::relative(ok[j], a.dir).string(), preds[j].probs, ""};
      if (preds[j].confidence < a.rules.review_below)
        c.thumb_jpeg_b64 = base64(encode_jpeg(resize_rgb(pred.model_view(imgs[j]), 112, 112), 85));
      cells.push_back(std::move(c));
    }
  }
  if (cells.empty()) throw std::runtime_error("none of the " + std::to_string(files.size()) + " images could be read");
  nlohmann::json report = differential(cells, pred.class_names(), a.rules);
  report["unreadable"] = unreadable;
  report["model"] = pred.version();
  report["folder"] = a.dir;
  nlohmann::json per_cell = nlohmann::json::array();
  for (const auto& c : cells) {
    int top = int(std::max_element(c.probs.begin(), c.probs.end()) - c.probs.begin());
    per_cell.push_back({{"file", c.name}, {"class", pred.class_names()[top]}, {"confidence", c.probs[top]}});
  }
  if (!a.map.empty()) {
    report["map"] = target_counts(lmap, a.map_rule, cells, per_cell);
    std::string line;
    for (const auto& r : report["map"]["targets"])
      line += (line.empty() ? "" : ", ") + r["target"].get<std::string>() + " " + std::to_string(r["count"].get<int>());
    std::printf("targets of '%s' (rule %s): %s\n", report["map"]["name"].get<std::string>().c_str(), a.map_rule.c_str(),
                line.c_str());
  }
  report["cells"] = per_cell;
  const double unlike_share = double(unlike) / double(cells.size());
  report["ood"] = {{"score", pred.ood().kind},
                   {"threshold", pred.ood().present ? nlohmann::json(pred.ood().threshold) : nlohmann::json()},
                   {"flagged", unlike},
                   {"flagged_share", unlike_share}};
  if (folder_looks_unlike(pred.ood(), unlike_share)) {
    report["ood"]["warning"] = folder_warning(unlike_share, pred.ood());
    std::fprintf(stderr, "vitengine differential: warning: %s\n", folder_warning(unlike_share, pred.ood()).c_str());
  }
  if (html_path.has_parent_path()) fs::create_directories(html_path.parent_path());
  nlohmann::json light = report;  // the JSON is for pipelines: thumbnails stay in the HTML only
  for (auto& r : light["review"]) r.erase("thumbnail");
  write_text_atomic(json_path.string(), json_text(light, 2) + "\n");
  write_text_atomic(html_path.string(), differential_html(report, fs::path(a.dir).filename().string().empty()
                                                                      ? a.dir
                                                                      : fs::path(a.dir).filename().string()));
  int raised = 0;
  for (const auto& f : report["flags"]) raised += f["raised"].get<bool>();
  std::printf("%zu cells (%d WBC), %d flag(s) raised, %zu for review, %zu unreadable -> %s, %s\n", cells.size(),
              report["wbc_total"].get<int>(), raised, report["review"].size(), unreadable.size(),
              html_path.string().c_str(), json_path.string().c_str());
  return 0;
}

}  // namespace

Command register_differential(CLI::App& root) {
  auto a = std::make_shared<DiffArgs>();
  Command c;
  c.app =
      root.add_subcommand("differential", "Smear-level differential count of a folder of cell images (HTML + JSON)");
  c.app->add_option("dir", a->dir, "Folder with the cell images of one smear")->required();
  c.app->add_option("--out", a->out, "Report HTML path (report.json is written beside it)")->required();
  c.app->add_option("--model", a->model, "Model checkpoint (.vit); default: the shipped model");
  add_map_options(c.app, &a->map, &a->map_rule,
                  "also call each cell one of its targets, as predict and eval --map do, and count the targets");
  add_stain_norm_option(c.app, &a->stain_norm);
  add_cell_size_option(c.app, &a->cell_size);
  c.app->add_option("--batch", a->batch, "Images per forward pass")->capture_default_str();
  c.app->add_option("--review-below", a->rules.review_below, "List cells whose top probability is below this")
      ->capture_default_str();
  c.app->add_option("--ig-threshold", a->rules.ig_pct_wbc, "Left shift: IG above this % of WBCs")
      ->capture_default_str();
  c.app->add_option("--band-threshold", a->rules.band_pct_neutrophils, "Bands above this % of neutrophils")
      ->capture_default_str();
  c.app->add_option("--eos-threshold", a->rules.eos_pct_wbc, "Eosinophilia: above this % of WBCs")
      ->capture_default_str();
  c.app->add_option("--baso-threshold", a->rules.baso_pct_wbc, "Basophilia: above this % of WBCs")
      ->capture_default_str();
  c.run = [a]() { return run_differential(*a); };
  return c;
}

}  // namespace vit::cli
