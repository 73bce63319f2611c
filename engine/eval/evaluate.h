// `vitengine eval`: run a model over one split of a prepared data set (or over a
// folder of class folders), and write metrics.json, the pictures and a markdown
// summary.
//
// With a label map (--map FILE, e.g. configs/bccd5.json) the model's classes
// are mapped onto another set's labels. A prediction whose class maps to nothing
// becomes "other" and always counts as an error: the true label is always one of
// the targets, so "other" is never right. With --map-rule restrict the prediction is
// instead the target whose classes hold the most probability (the lab knows every
// image is one of its targets: ImageNet-R's convention of scoring over its classes).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/data/dataset.h"
#include "engine/dist/dist.h"

namespace vit {

// JSON: {"name": "...", "targets": [labels of the other set],
//        "map": {"<model class name>": "<target>", ...},        classes left out -> "other"
//        "truth": {"<manifest / folder label>": "<target>", ...}} optional; default: a
//        label that is itself a target name maps to that target.
struct LabelMap {
  std::string name;
  std::vector<std::string> targets;
  std::vector<int> class_to_target;                  // per model class; -1 = other
  nlohmann::json truth;                              // label name -> target name (may be empty)
  int truth_target(const std::string& label) const;  // -1 when the label is not covered
  // A folder's target: "truth" keyed by the folder's own name (the lab's spelling, "NEUTROPHIL")
  // first, then by the class the folder was read as (`label`).
  int truth_target(const std::string& label, const std::string& folder) const;
};
LabelMap read_label_map(const std::string& path, const std::vector<std::string>& class_names);

// How an image is called a target of a map (--map-rule): "other" calls it its top class's target
// (none when the map leaves that class out), "restrict" the target whose classes hold the most
// probability. Throws for any other rule.
bool restrict_map_rule(const std::string& rule);
// Each target's summed probability, from one image's K class probabilities; with restrict,
// renormalised over the targets (their probabilities given that the image is one of them).
std::vector<double> target_mass(const LabelMap& m, const double* probs, int K, bool restrict_to_targets);
// The target index the rule calls an image with top class `top` and target masses `mass`; -1:
// "other" (rule other, top class unmapped).
int mapped_target(const LabelMap& m, const std::vector<double>& mass, int top, bool restrict_to_targets);
// One image's call under a map, from its class probabilities (what predict, differential and serve
// report): the target's name ("other" when the rule finds none), its probability, and every
// target's (target_mass).
struct MappedCall {
  std::string name = "other";
  double prob = 0;
  std::vector<double> masses;
};
MappedCall map_call(const LabelMap& m, bool restrict_to_targets, const std::vector<float>& probs);

struct Metrics;
struct EvalApp;

// Labelled images to score: one split of a prepared folder or manifest, or every image of a
// folder of class folders (hidden files and folders skipped; the label is the folder's class).
struct EvalSet {
  std::vector<Sample> samples;
  std::vector<std::string> truth_names;  // label as the data names it
  std::vector<std::string> folders;      // class folders: each image's folder name as written; else empty
  enum class Source { manifest, class_folders } source = Source::manifest;
};
// Throws naming --data when it is none of those, or when the split or the folders hold no images.
EvalSet load_eval_set(const std::string& data, const std::string& split, const std::string& data_root,
                      const EvalApp& app);

// What an application adds to an evaluation (engine/wbc provides the white-blood-cell one; the
// CLI passes it in). Every member is optional.
struct EvalApp {
  // The class a folder of images holds, from the folder's name ("" = the name itself).
  std::function<std::string(const std::string& folder)> folder_class;
  // The coarse group of a class ("" = none): a true class that is not a model output is scored
  // as the output named after its group (models trained on groups).
  std::function<std::string(const std::string& class_name)> group_of;
  // Class names for a checkpoint that has none (models converted from other formats).
  std::vector<std::string> names_if_unnamed;
  // Extra keys for metrics.json, from the model's class names and the metrics over them.
  std::function<void(const std::vector<std::string>& names, const Metrics& m, nlohmann::json& j)> add_metrics;
  // Extra rows of summary.md's metric table, and extra text after its per-class table.
  std::function<std::string(const nlohmann::json&j)> summary_rows, summary_notes;
  // Extra words for the console's closing line ("" = none): a lab whose folders name coarse
  // groups reads its own number there, not only the fine-class accuracy.
  std::function<std::string(const nlohmann::json&j)> headline;
};

struct EvalRequest {
  std::string model;               // .vit checkpoint
  std::string data;                // prepared folder, manifest.csv, or a folder of class folders
  std::string split = "test";      // manifest split (ignored for a folder of class folders)
  std::string data_root;           // optional: replaces every manifest row's src folder
  std::string map;                 // optional label map
  std::string map_rule = "other";  // other (an unmapped top class is an error) | restrict (see above)
  std::string out;                 // output folder
  std::string device = "cpu";      // cpu | cuda
  std::string precision = "fp32";  // cuda only: fp32 | bf16
  int batch_size = 64;
  int threads = 2;
  int ece_bins = 15;
  std::string tta = "none";  // test-time augmentation: none | flip | d4 (engine/eval/tta.h)
  // none | reinhard | macenko: map each image onto the stain reference the checkpoint stores.
  std::string stain_norm = "none";
  // none | normalize: rescale each image so its cell spans the fraction the checkpoint stores;
  // auto: the model's own (resolve_cell_size, engine/eval/inference.h).
  std::string cell_size = "auto";
  std::function<void(const std::string&)> log;
  EvalApp app;  // application extras (none: a plain evaluation)
  // Data parallelism: every rank evaluates its share of the batches; rank 0 writes the same files
  // one process would. Null: one process.
  dist::Comm* comm = nullptr;
};

// Returns what it wrote to out/metrics.json. Throws on bad input; never exits.
nlohmann::json evaluate(const EvalRequest& req);

}  // namespace vit
