// vitengine stain-calibrate: fit one lab's colour calibration onto the training images' colours
// from a folder of that lab's images (no labels) and store it in a model, so that eval, predict,
// explain, differential, serve, adapt and ood-ref map each of its images with
// --stain-norm calibrated. The weights are copied bit for bit; only the metadata grows.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "engine/data/dataset.h"
#include "engine/data/stain.h"
#include "engine/eval/inference.h"
#include "engine/eval/overlay.h"
#include "engine/util/rng.h"
#include "tools/cli.h"
#include "weights/checkpoint.h"

namespace vit::cli {

namespace {
// The cell anchor is a mean over the lab's cells: over a handful, one cell type's own colour
// would set the map (an eosinophil-rich sample would turn the lab's neutrophils grey).
constexpr int kMinImages = 20;

// --preview: the map seen rather than read. A row per image (the first eight of the sample, by
// name): the image as the model sees it, then mapped; 160 px tiles. `ref` holds the calibration.
void write_preview(const std::string& path, const std::vector<Image>& views, const StainReference& ref) {
  std::vector<Image> tiles;
  for (size_t i = 0; i < std::min<size_t>(views.size(), 8); ++i) {
    Image mapped = views[i];
    stain_normalize(mapped, StainNorm::kCalibrated, ref);
    tiles.push_back(resize_aa(views[i], 160, 160));
    tiles.push_back(resize_aa(mapped, 160, 160));
  }
  write_png(path, tile_grid(tiles, 2));
}
}  // namespace

Command register_stain_calibrate(CLI::App& root) {
  struct Opts {
    std::string model, data, out, split = "train", preview;
    int images = 1000;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  Command c;
  c.app = root.add_subcommand("stain-calibrate",
                              "Fit a lab's colour map onto the training images' colours from its own images (no "
                              "labels) and store it in a model (for --stain-norm calibrated)");
  c.app->add_option("--model", o->model, "model with a stain reference (.vit; `vitengine stain-ref`)")
      ->required()
      ->check(CLI::ExistingFile);
  c.app->add_option("--data", o->data,
                    "the lab's images: a folder (searched recursively; folder names are ignored) or a prepared "
                    "folder (with --split)")
      ->required();
  c.app->add_option("--out", o->out, "the model with the calibration (.vit); may be --model itself")->required();
  c.app->add_option("--split", o->split, "split of a prepared --data (labels unused)")->capture_default_str();
  c.app->add_option("--images", o->images, "at most this many images (a seeded sample)")
      ->capture_default_str()
      ->check(CLI::Range(kMinImages, 1000000));
  c.app->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  c.app->add_option("--preview", o->preview,
                    "also write this PNG: the first 8 sampled images (by name) as the model sees them, before "
                    "and after the map, a row each");
  c.run = [o]() -> int {
    namespace fs = std::filesystem;
    LoadedModel lm = load_model(o->model);
    if (!lm.model) throw std::runtime_error("'" + o->model + "' holds no model");
    const StainReference ref = stain_reference_of(lm.meta, o->model, StainNorm::kReinhard);
    if (!ref.has_anchors)
      throw std::runtime_error("'" + o->model +
                               "' stores a stain reference without the training images' colour anchors (written "
                               "before they existed); add them with `vitengine stain-ref --model " + o->model +
                               " --data PREPARED --out M2`");
    std::vector<std::string> files;
    if (fs::exists(manifest_path(o->data))) {
      for (const Sample& s : select(read_manifest_resolved(manifest_path(o->data)), o->split))
        files.push_back(s.full_path());
      if (files.empty()) throw UsageError("'" + o->data + "' has no '" + o->split + "' rows");
    } else if (fs::is_directory(o->data)) {
      files = list_image_files({o->data});
    } else {
      throw UsageError("--data '" + o->data + "' is neither a folder of images nor a prepared folder (manifest.csv)");
    }
    if (int(files.size()) < kMinImages)
      throw UsageError("'" + o->data + "' holds " + std::to_string(files.size()) + " images; the calibration needs " +
                       std::to_string(kMinImages) +
                       " or more, so that the lab's mix of cells, not one cell's colour, sets the map (a hundred "
                       "or so is better)");
    Rng r(mix_seed(o->seed, 0xCA1Bull));
    shuffle(files, r);
    files.resize(std::min(files.size(), size_t(o->images)));
    std::sort(files.begin(), files.end());  // the sample is seeded; its order does not matter
    std::vector<Image> views;
    for (const auto& f : files) {
      try {
        views.push_back(preprocess(load_image(f), lm.model->config().image_size));
      } catch (const std::exception& e) {
        throw std::runtime_error("cannot read '" + f + "': " + e.what() + " (remove it or fix it, then run again)");
      }
    }
    LabAnchors lab;
    try {
      lab = lab_anchors(views);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("'" + o->data + "': " + e.what() + "; stain-calibrate needs crops of stained cells");
    }
    LabCalibration k;
    try {
      k = lab_calibration(lab, ref.anchors);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("'" + o->data + "': " + e.what());
    }
    if (!lm.meta.extra.is_object()) lm.meta.extra = nlohmann::json::object();
    lm.meta.extra["stain_calibration"] = k.to_json();
    lm.meta.extra["stain_calibration"]["data"] = o->data;
    save_model(o->out, *lm.model, lm.meta);
    if (!o->preview.empty()) write_preview(o->preview, views, stain_reference_of(lm.meta, o->out, StainNorm::kCalibrated));
    std::printf(
        "colour calibration of %d images of %s (a white cell found in %d) -> %s\n"
        "  cell Lab (%.1f, %.1f, %.1f) -> (%.1f, %.1f, %.1f), background (%.1f, %.1f, %.1f) -> (%.1f, %.1f, %.1f)\n"
        "  L' = %.3f L %+.2f, a' = %.3f a %+.2f, b' = %.3f b %+.2f; use it with --stain-norm calibrated\n",
        lab.images, o->data.c_str(), lab.cells, o->out.c_str(), lab.cell[0], lab.cell[1], lab.cell[2],
        ref.anchors.cell[0], ref.anchors.cell[1], ref.anchors.cell[2], lab.background[0], lab.background[1],
        lab.background[2], ref.anchors.background[0], ref.anchors.background[1], ref.anchors.background[2],
        k.scale[0], k.shift[0], k.scale[1], k.shift[1], k.scale[2], k.shift[2]);
    if (lab.cells < lab.images / 2)
      std::fprintf(stderr,
                   "stain-calibrate: warning: a white cell was found in only %d of %d images; are these crops of "
                   "single white cells?\n",
                   lab.cells, lab.images);
    return 0;
  };
  return c;
}

}  // namespace vit::cli
