// Report pictures as standalone SVG (text stays sharp and searchable, no font
// files needed): line charts for the training curves, the confusion matrix as
// counts and row-normalised, the per-class precision / recall / F1 table, and the
// reliability diagram. Plus a markdown summary that links them.
#pragma once
#include "engine/util/file.h"  // write_text_atomic
#include <map>
#include <string>
#include <vector>

#include "engine/eval/calibration.h"
#include "engine/eval/metrics.h"

namespace vit {

struct Series {
  std::string name, color;   // color: any SVG colour
  std::vector<double> x, y;  // NaN y values are gaps (e.g. epochs without validation)
};

// y range: auto from the data when y_min >= y_max.
std::string line_chart_svg(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                           const std::vector<Series>& series, double y_min = 0, double y_max = 0);
// normalized: each cell shows the row fraction (recall on the diagonal) instead of the count.
std::string confusion_svg(const Metrics& m, bool normalized, const std::string& title);
std::string class_table_svg(const Metrics& m, const std::string& title);
std::string reliability_svg(const CalibrationReport& r, const std::string& title);

// A CSV with a header row, read as columns of numbers (empty cells = NaN).
std::map<std::string, std::vector<double>> read_numeric_csv(const std::string& path);
// RUN/metrics.csv -> out_dir/loss.svg and out_dir/accuracy.svg. Returns the files written.
std::vector<std::string> write_training_curves(const std::string& metrics_csv, const std::string& out_dir);
// confusion_counts.svg, confusion_normalized.svg, per_class.svg, reliability.svg (if calib != nullptr).
std::vector<std::string> write_eval_pictures(const Metrics& m, const CalibrationReport* calib,
                                             const std::string& out_dir, const std::string& title_prefix);

}  // namespace vit
