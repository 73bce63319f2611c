// `vitengine prepare` as a library call: scan image folders, check every file, find
// exact and near duplicates, drop conflicting-label groups, split stratified by class
// with a seed (after dedup), nest train subsets, compute train-only channel stats,
// optionally top up rare train classes offline, and write manifest.csv + report.json.
#pragma once
#include "engine/util/sha256.h"  // sha256_hex (manifest identities)
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/data/image.h"

namespace vit {

// How files get their labels. The data layer knows no class names of its own: the caller
// (tools/cmd_prepare.cpp) passes a labeler: one of engine/data/labels.h (class folders, a CSV)
// or an application's, e.g. engine/wbc's file-name prefixes.
struct Labeler {
  std::string kind;                  // how labels were found, for report.json: "folders", "csv", "wbc14"
  std::vector<std::string> classes;  // in model output order; written to report.json and classes.txt
  // The class index of a file from its path relative to its SRC ('/'-separated), or -1.
  std::function<int(const std::string& rel_path)> label_of;
  // Why a file without a class got none (the report's "unknown_label" reason).
  std::string unlabelled_reason = "no known class for this file";
  // Whether a top-level folder of a SRC is a class folder (then the file's source is the SRC's
  // own name, not that folder's). Optional: without it every top folder names a source.
  std::function<bool(const std::string& folder)> is_class_folder;
  // A split fixed by the source (a CSV's split column): "train", "val", "test", or "" to let
  // prepare's stratified split decide. Optional.
  std::function<std::string(const std::string& rel_path)> split_of;
  // Whether the images have no up, down, left or right (cells under a microscope), so that
  // training may rotate and flip them; digits, text and most photos do not qualify.
  bool orientation_free = false;
  std::vector<std::string> warnings;  // found while building the labeler; copied into the report
};

// What prepare does with a class too small to give every split at least one image.
enum class SmallClasses { kTrainOnly, kRefuse };

struct PrepareOptions {
  Labeler labeler;                // required
  std::vector<std::string> srcs;  // image folders (searched recursively)
  std::string out;                // output directory (created)
  uint64_t seed = 0;              // split, subsets and top-up are a pure function of it
  int split[3] = {70, 10, 20};    // train/val/test percentages, sum 100
  int size = 224;                 // model input size: stats and top-up images use it
  // Near duplicate = pHash Hamming distance <= near_threshold (a cheap proposal; <0 disables)
  // AND mean |difference| of the 32x32 luma thumbnails, minimised over shifts of up to
  // 3 px, <= near_max_diff grey levels (the confirmation). Defaults chosen on wbc14: see docs/data.md.
  int near_threshold = 12;
  float near_max_diff = 8.f;
  int top_up = 0;     // top each train class up to this many images (0 = off)
  int min_side = 32;  // images with a side below this are "tiny" and rejected
  int threads = 2;
  // kTrainOnly: such a class keeps all its images in train (listed in the report's
  // "small_classes"); kRefuse: prepare stops with a message naming the class and its count.
  SmallClasses small_classes = SmallClasses::kTrainOnly;
  std::function<void(const std::string&)> progress;  // progress lines (nullptr = silent)
};

// Runs the whole preparation; returns the report it also wrote to out/report.json.
// Throws std::runtime_error for problems with the run itself (no SRC, unwritable out);
// problems with single files go into the report.
nlohmann::json prepare_dataset(const PrepareOptions& opt);

// Throws std::runtime_error when `out` is one of the SRC folders or holds one: everything under
// --out is skipped as an earlier run's output (its topup/ class folders), so nothing would be read.
void check_out_folder(const std::vector<std::string>& srcs, const std::string& out);

// Parses "70/10/20" into three non-negative integers summing to 100; throws std::invalid_argument.
void parse_split(const std::string& s, int out[3]);

// Building blocks, exposed for tests.
// 64-bit DCT perceptual hash of an RGB image (32x32 luma, 8x8 lowest frequencies vs their median).
uint64_t phash64(const Image& img);
// 32x32 luma thumbnail (square-padded), the pixels phash64 works on.
std::vector<uint8_t> luma32(const Image& img);

}  // namespace vit
