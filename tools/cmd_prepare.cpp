// vitengine prepare: clean, deduplicate and split an image data set into a manifest.
#include <cstdio>

#include "engine/data/prepare.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

Command register_prepare(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("prepare", "Clean, deduplicate and split an image data set into a manifest");
  struct Args {
    std::vector<std::string> srcs;
    std::string out, split = "70/10/20";
    uint64_t seed = 0;
    float near_diff = 8.f;
    int size = 224, near = 12, top_up = 0, min_side = 32, threads = 2;
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  c.app->add_option("SRC", a->srcs, "Image folders (searched recursively; label from file-name prefix or folder)")
      ->required()
      ->check(CLI::ExistingDirectory);
  c.app->add_option("--out", a->out, "Output directory for manifest.csv and report.json")->required();
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
    o.labeler = wbc::labeler();
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
    return 0;
  };
  return c;
}

}  // namespace vit::cli
