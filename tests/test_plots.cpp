// Report pictures: the SVGs carry the class names, counts and numbers they claim to,
// and the metrics.csv reader keeps empty cells (epochs without validation) as gaps.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/eval/plots.h"

using namespace vit;

namespace {
size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}
}  // namespace

TEST(Plots, ConfusionShowsNamesCountsAndRowFractions) {
  Metrics m = compute_metrics({{5, 1, 0}, {2, 3, 1}, {0, 0, 4}}, {"Band Neutrophil", "B<x>", "C"});
  std::string counts = confusion_svg(m, false, "t");
  EXPECT_EQ(count(counts, ">Band Neutrophil<"), 2u);  // row label and column label
  EXPECT_EQ(count(counts, ">B&lt;x&gt;<"), 2u);       // escaped for XML
  EXPECT_NE(counts.find(">5<"), std::string::npos);
  EXPECT_EQ(count(counts, "<rect x="), 9u);  // one cell per entry
  std::string norm = confusion_svg(m, true, "t");
  EXPECT_NE(norm.find(">0.83<"), std::string::npos);  // 5/6
  EXPECT_NE(norm.find(">0.33<"), std::string::npos);  // 2/6
  EXPECT_NE(norm.find(">1.00<"), std::string::npos);  // 4/4
}

TEST(Plots, TableAndReliabilityCarryTheirNumbers) {
  Metrics m = compute_metrics({{5, 1, 0}, {2, 3, 1}, {0, 0, 4}}, {"A", "B", "C"});
  std::string t = class_table_svg(m, "t");
  EXPECT_NE(t.find(">0.714<"), std::string::npos);  // precision A = 5/7
  EXPECT_NE(t.find(">0.500<"), std::string::npos);  // recall B
  EXPECT_NE(t.find(">0.889<"), std::string::npos);  // F1 C = 8/9
  EXPECT_NE(t.find("accuracy 0.7500"), std::string::npos);
  auto r = calibration({0.85, 0.85, 0.65, 0.65}, {true, false, true, true}, 10);
  std::string s = reliability_svg(r, "t");
  EXPECT_NE(s.find("ECE 0.3500"), std::string::npos);
}

TEST(Plots, CsvGapsAndCurves) {
  auto dir = std::filesystem::temp_directory_path() / ("vit_plots_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "metrics.csv");
    f << "epoch,step,train_loss,train_acc,val_loss,val_acc,val_macro_f1,lr,img_s,elapsed_s\n"
      << "1,10,2.5,0.1,,,,0.001,50,1\n"
      << "2,20,2.0,0.3,1.9,0.35,0.2,0.0005,50,2\n";
  }
  auto c = read_numeric_csv((dir / "metrics.csv").string());
  ASSERT_EQ(c["val_loss"].size(), 2u);
  EXPECT_TRUE(std::isnan(c["val_loss"][0]));
  EXPECT_DOUBLE_EQ(c["val_loss"][1], 1.9);
  auto files = write_training_curves((dir / "metrics.csv").string(), dir.string());
  ASSERT_EQ(files.size(), 2u);
  std::ifstream f(dir / "loss.svg");
  std::string svg((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(count(svg, "<polyline"), 2u);  // train: 2 points; val: 1 point (its own polyline)
  EXPECT_NE(svg.find(">val<"), std::string::npos);
  std::filesystem::remove_all(dir);
}
