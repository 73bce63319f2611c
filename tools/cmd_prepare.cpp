// vitengine prepare: clean, deduplicate and split an image data set into a manifest.
#include <cstdio>

#include "engine/data/labels.h"
#include "engine/data/prepare.h"
#include "engine/util/file.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {

const char* kLabelsHelp =
    "Where each image's class comes from:\n"
    "  folders   SRC/<class>/... at any depth (torchvision's ImageFolder); the class names are the folder\n"
    "            names (any UTF-8), in sorted byte order\n"
    "  csv:FILE  a CSV with the columns path,label and optionally split (train|val|test|empty: fixed\n"
    "            there, else prepare's split); paths relative to SRC or absolute\n"
    "  wbc14     the white-blood-cell taxonomy: file-name prefixes (BNE_123.jpg) and their aliases, or a\n"
    "            class/group folder name\n"
    "  auto      wbc14 when the taxonomy's rules label at least half of the image files under SRC,\n"
    "            otherwise folders";

// --labels VALUE as a labeler; auto decides by how much of the data the taxonomy's rules label.
// `out` is --out: when it lies inside a SRC, an earlier run's topup/ class folders there are no data.
Labeler make_labeler(const std::string& how, const std::vector<std::string>& srcs, const std::string& out) {
  const std::string skip = absolute_path(out);
  if (how == "wbc14") return wbc::labeler();
  if (how == "folders") return folder_labeler(srcs, skip);
  if (how.rfind("csv:", 0) == 0) {
    if (how.size() == 4) throw UsageError("--labels csv:FILE needs a file name");
    return csv_labeler(how.substr(4), srcs);
  }
  if (how != "auto") throw UsageError("--labels must be auto, folders, wbc14 or csv:FILE, not '" + how + "'");
  Labeler wbc = wbc::labeler();
  const auto files = image_files_under(srcs, skip);
  const size_t hit = count_labelled(wbc, files);
  const bool cells = !files.empty() && 2 * hit >= files.size();
  std::fprintf(stderr, "prepare: --labels auto: the wbc14 rules label %zu of %zu image files, so %s\n", hit,
               files.size(), cells ? "wbc14" : "folders (SRC/<class>/...)");
  return cells ? wbc : folder_labeler(srcs, skip);
}

}  // namespace

Command register_prepare(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("prepare", "Clean, deduplicate and split an image data set into a manifest");
  struct Args {
    std::vector<std::string> srcs;
    std::string out, split = "70/10/20", labels = "auto", small = "train-only";
    uint64_t seed = 0;
    float near_diff = 8.f;
    int size = 224, near = 12, top_up = 0, min_side = 32, threads = 2;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  c.app->add_option("SRC", a->srcs, "Image folders (searched recursively; see --labels)")
      ->required()
      ->check(CLI::ExistingDirectory);
  c.app->add_option("--out", a->out, "Output directory for manifest.csv and report.json")->required();
  c.app->add_option("--labels", a->labels, "auto | folders | wbc14 | csv:FILE (below)")->capture_default_str();
  c.app
      ->add_option("--small-classes", a->small,
                   "a class too small to give val and test an image: train-only (keep it in train alone, "
                   "listed in report.json) or refuse")
      ->check(CLI::IsMember({"train-only", "refuse"}))
      ->capture_default_str();
  c.app->footer(kLabelsHelp);
  c.app->add_option("--seed", a->seed, "Seed for the split, subsets and top-up")->capture_default_str();
  c.app->add_option("--split", a->split, "train/val/test percentages")->capture_default_str();
  c.app->add_option("--size", a->size, "Model input size (stats and top-up images)")
      ->capture_default_str()
      ->check(CLI::Range(8, 4096));
  c.app->add_option("--near-threshold", a->near, "Max pHash Hamming distance for near-duplicates (-1: off)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 64));
  c.app
      ->add_option(
          "--near-max-diff", a->near_diff,
          "...and max mean |difference| of shift-aligned 32x32 luma thumbnails, grey levels (255: pHash alone)")
      ->capture_default_str()
      ->check(CLI::Range(0.f, 255.f));
  c.app->add_option("--top-up", a->top_up, "Top each train class up to N images with TrivialAugmentWide variants")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c.app->add_option("--min-side", a->min_side, "Reject images with a side below this many pixels")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c.app->add_option("--threads", a->threads, "Worker threads")->capture_default_str()->check(CLI::Range(1, 256));
  c.app->add_flag("--quiet", a->quiet, "No progress output");
  c.run = [a]() -> int {
    PrepareOptions o;
    check_out_folder(a->srcs, a->out);  // before the labeler, which leaves out what lies under --out
    o.labeler = make_labeler(a->labels, a->srcs, a->out);
    o.small_classes = a->small == "refuse" ? SmallClasses::kRefuse : SmallClasses::kTrainOnly;
    o.srcs = a->srcs;
    o.out = a->out;
    o.seed = a->seed;
    try {
      parse_split(a->split, o.split);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    o.size = a->size;
    o.near_threshold = a->near;
    o.near_max_diff = a->near_diff;
    o.top_up = a->top_up;
    o.min_side = a->min_side;
    o.threads = a->threads;
    if (!a->quiet) o.progress = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
    auto rep = prepare_dataset(o);
    std::printf(
        "files %zu, unreadable %zu, unknown label %zu, exact-duplicate groups %zu, near-duplicate groups %zu "
        "(threshold %d), label conflicts %zu\n",
        rep["files_scanned"].get<size_t>(), rep["unreadable"].size(), rep["unknown_label"].size(),
        rep["exact_duplicate_groups"].get<size_t>(), rep["near_duplicate_groups"].get<size_t>(),
        rep["near_threshold"].get<int>(), rep["label_conflicts"].size());
    std::printf("split train %zu / val %zu / test %zu (+%zu top-up)\n", rep["split_counts"]["train"].get<size_t>(),
                rep["split_counts"]["val"].get<size_t>(), rep["split_counts"]["test"].get<size_t>(),
                rep["split_counts"]["train_topup"].get<size_t>());
    std::printf("train mean %s std %s\n", rep["mean"].dump().c_str(), rep["std"].dump().c_str());
    std::printf("%zu classes (labels: %s)%s\n", rep["classes"].size(), a->labels.c_str(),
                rep["small_classes"].empty() ? "" : ", some too small to split: see small_classes in report.json");
    return 0;
  };
  return c;
}

}  // namespace vit::cli
