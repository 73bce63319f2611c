// vitengine stain-ref: store the training images' stain reference and the median size of their
// cells in a model, so that eval, predict, explain, differential and serve can map another lab's
// images onto them (--stain-norm reinhard|macenko, --cell-size normalize). The weights are copied
// bit for bit; only the metadata grows.
#include <cstdio>
#include <filesystem>

#include "engine/data/cell_size.h"
#include "engine/data/dataset.h"
#include "engine/data/stain.h"
#include "engine/eval/inference.h"
#include "tools/cli.h"
#include "weights/checkpoint.h"

namespace vit::cli {

namespace {

// The median cell size of the sampled images into meta.extra["cell_size"] (erased when no image
// holds a cell: other images than blood cells; the stain reference stands), unless the model was
// trained on views rescaled to a fraction (train's cell_size=normalize): that one is the model's own.
CellSizeReference store_cell_size(ModelMeta& meta, const std::vector<Image>& imgs, const std::string& csv,
                                  bool* trained) {
  *trained = trained_on_cell_size_views(meta);
  if (*trained) return CellSizeReference::from_json(meta.extra["cell_size"]);
  try {
    CellSizeReference cells = cell_size_reference(imgs);
    meta.extra["cell_size"] = cells.to_json();
    meta.extra["cell_size"]["data"] = csv;
    return cells;
  } catch (const std::runtime_error&) {
    meta.extra.erase("cell_size");
    return {};
  }
}

}  // namespace

Command register_stain_ref(CLI::App& root) {
  struct Opts {
    std::string model, data, out, split = "train";
    int images = 300;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  Command c;
  c.app = root.add_subcommand("stain-ref",
                              "Store the training images' stain reference and cell size in a model (for "
                              "--stain-norm, --cell-size)");
  c.app->add_option("--model", o->model, "model (.vit)")->required()->check(CLI::ExistingFile);
  c.app->add_option("--data", o->data, "the prepared data set it was trained on (folder or manifest.csv)")->required();
  c.app->add_option("--out", o->out, "the model with the reference (.vit); may be --model itself")->required();
  c.app->add_option("--split", o->split, "manifest split to sample")->capture_default_str();
  c.app->add_option("--images", o->images, "images sampled (seeded) for the reference")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  c.app->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  c.run = [o]() -> int {
    namespace fs = std::filesystem;
    const std::string csv = fs::is_directory(o->data) ? (fs::path(o->data) / "manifest.csv").string() : o->data;
    LoadedModel lm = load_model(o->model);
    if (!lm.model) throw std::runtime_error("'" + o->model + "' holds no model");
    std::vector<Sample> rows = select(read_manifest_resolved(csv), o->split);
    if (rows.empty()) throw UsageError("'" + csv + "' has no '" + o->split + "' rows");
    const std::vector<Image> imgs =
        reference_images(std::move(rows), lm.model->config().image_size, size_t(o->images), o->seed);
    const StainReference ref = stain_reference(imgs);
    if (!lm.meta.extra.is_object()) lm.meta.extra = nlohmann::json::object();
    lm.meta.extra["stain_reference"] = ref.to_json();
    lm.meta.extra["stain_reference"]["data"] = csv;
    bool trained = false;
    const CellSizeReference cells = store_cell_size(lm.meta, imgs, csv, &trained);
    save_model(o->out, *lm.model, lm.meta);
    std::printf(
        "stain reference of %d '%s' images of %s -> %s: Lab mean (%.1f, %.1f, %.1f), hematoxylin (%.3f, %.3f, %.3f)\n",
        ref.images, o->split.c_str(), csv.c_str(), o->out.c_str(), ref.lab.mean[0], ref.lab.mean[1], ref.lab.mean[2],
        ref.basis.v[0][0], ref.basis.v[0][1], ref.basis.v[0][2]);
    if (trained)
      std::printf("cell size: kept the model's own, %.3f of the view's side (it was trained on views rescaled to it)\n",
                  cells.fraction);
    else if (cells.found)
      std::printf("cell size: a white cell found in %d of %d images; median diameter %.3f of the view's side\n",
                  cells.found, cells.images, cells.fraction);
    else
      std::printf("cell size: no white cell found in the images; none stored (--cell-size normalize refuses it)\n");
    return 0;
  };
  return c;
}

}  // namespace vit::cli
