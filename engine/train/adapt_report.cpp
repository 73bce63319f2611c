#include "engine/train/adapt_report.h"

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "engine/data/dataset.h"
#include "engine/eval/evaluate.h"
#include "engine/util/file.h"

namespace vit {
namespace fs = std::filesystem;

namespace {

// The held-out cells as a prepared manifest: absolute paths, so that eval finds them from DIR.
std::string write_held_manifest(const std::string& dir, const std::vector<HeldOutCell>& held,
                                const std::vector<std::string>& labels) {
  std::vector<Sample> rows;
  for (const auto& [path, label] : held) {
    Sample s;
    s.path = fs::absolute(path).lexically_normal().string();
    s.split = "test";
    s.source = "adapt-held-out";
    const auto it = std::find(labels.begin(), labels.end(), label);
    if (it == labels.end()) throw std::logic_error("adapt report: label '" + label + "' is not in the label list");
    s.label = int(it - labels.begin());
    rows.push_back(s);
  }
  const std::string csv = (fs::path(dir) / "held_out.csv").string();
  write_manifest(csv, rows, labels);
  return csv;
}

nlohmann::json headline(const nlohmann::json& m) {
  return {{"accuracy", m.at("accuracy")},
          {"macro_f1", m.at("macro_f1")},
          {"balanced_accuracy", m.at("balanced_accuracy")},
          {"ece", m.at("ece")}};
}

std::string summary_md(const AdaptRequest& req, const nlohmann::json& before, const nlohmann::json& after,
                       size_t cells) {
  std::ostringstream s;
  const auto pct = [](const nlohmann::json& v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f%%", 100 * v.get<double>());
    return std::string(b);
  };
  s << "# Adaptation of " << fs::path(req.model).filename().string() << " -> "
    << fs::path(req.out).filename().string() << "\n\n"
    << cells << " held-out cells of `" << req.data << "`, never trained on"
    << (req.map.empty() ? "" : ", scored through the label map `" + req.map + "`") << ".\n\n"
    << "| | before | after |\n|---|---|---|\n";
  for (const auto& [k, name] : {std::pair<const char*, const char*>{"accuracy", "accuracy"},
                                {"macro_f1", "macro-F1"},
                                {"balanced_accuracy", "balanced accuracy"}})
    s << "| " << name << " | " << pct(before[k]) << " | " << pct(after[k]) << " |\n";
  char ece[96];
  std::snprintf(ece, sizeof ece, "| ECE | %.3f | %.3f |\n", before["ece"].get<double>(), after["ece"].get<double>());
  s << ece << "\nRow-normalised confusion matrices (recall on the diagonal):\n\n"
    << "| before | after |\n|---|---|\n"
    << "| ![before](before/confusion_normalized.svg) | ![after](after/confusion_normalized.svg) |\n\n"
    << "Each side's whole evaluation: [before/summary.md](before/summary.md), "
       "[after/summary.md](after/summary.md). The card the adapted model stores: `card.json`. To score "
       "another model on the same cells: `vitengine eval --model M --data held_out.csv --split test"
    << (req.map.empty() ? "" : " --map " + req.map) << "`.\n";
  return s.str();
}

}  // namespace

nlohmann::json write_adapt_report(const AdaptRequest& req, const std::vector<HeldOutCell>& held,
                                  const std::vector<std::string>& labels, const nlohmann::json& card) {
  fs::create_directories(req.report);
  const std::string csv = write_held_manifest(req.report, held, labels);
  nlohmann::json out = {{"dir", req.report}};
  for (const auto& [side, model] : {std::pair<std::string, std::string>{"before", req.model}, {"after", req.out}}) {
    EvalRequest e;
    e.model = model;
    e.data = csv;
    e.split = "test";
    e.map = req.map;  // scored as adapt scores the held-out cells: the top class's label (rule "other")
    e.stain_norm = req.stain_norm;
    e.cell_size = req.cell_size;
    e.out = (fs::path(req.report) / side).string();
    e.log = [&req, side = side](const std::string& line) {
      if (req.log) req.log("report (" + side + "): " + line);
    };
    out[side] = headline(evaluate(e));
  }
  write_text_atomic((fs::path(req.report) / "summary.md").string(), summary_md(req, out["before"], out["after"], held.size()));
  write_text_atomic((fs::path(req.report) / "card.json").string(), card.dump(2) + "\n");
  return out;
}

}  // namespace vit
