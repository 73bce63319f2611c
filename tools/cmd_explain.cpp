// vitengine explain: attention maps of one image as PNG overlays.
//   vitengine explain [--model CKPT] IMAGE --out DIR
// Writes DIR/rollout.png (attention rollout, Abnar & Zuidema 2020), DIR/layerLL_mean.png
// and DIR/layerLL_headHH.png (class-token attention), DIR/grid.png (all of them) and
// DIR/explain.json (the prediction and what each file is).
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/eval/inference.h"
#include "engine/eval/overlay.h"
#include "engine/eval/rollout.h"
#include "engine/util/json.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {

struct ExplainArgs {
  std::string stain_norm = "none", cell_size = "auto";
  std::string model, image, out;
  float alpha = 0.55f;
  int tile = 112;
};

std::string two(int v) {
  char b[16];  // room for any int: GCC warns that 8 could truncate
  std::snprintf(b, sizeof b, "%02d", v);
  return b;
}

int run_explain(const ExplainArgs& a) {
  // Written so that NaN fails too: "--alpha nan" passed `alpha < 0 || alpha > 1` and every overlay
  // came out black. A tile past 1024 px only magnifies a 224 px view, and grid.png grows as its square.
  if (!(a.alpha >= 0 && a.alpha <= 1)) throw UsageError("--alpha must be in [0, 1]");
  if (a.tile < 16 || a.tile > 1024) throw UsageError("--tile must be in [16, 1024]");
  Predictor pred(resolve_model_path(a.model), wbc::class_names());
  pred.set_stain_norm(a.stain_norm);
  pred.set_cell_size(a.cell_size);
  Image img = load_image(a.image);
  Image view = pred.model_view(img);
  std::vector<float> x(pred.input_floats());
  pred.prepare(img, x.data());
  Prediction p = pred.run(x.data(), 1)[0];

  const ViTConfig& cfg = pred.config();
  const int H = cfg.heads, N = cfg.seq_len(), g = cfg.grid();
  std::filesystem::create_directories(a.out);
  nlohmann::json files = nlohmann::json::array();
  std::vector<Image> tiles;
  auto tile = [&](const Image& im) { return im.width == a.tile ? im : resize_rgb(im, a.tile, a.tile); };
  auto save = [&](const std::string& name, const Image& im, const std::string& what) {
    write_file_atomic(a.out + "/" + name, encode_png(im));
    files.push_back({{"file", name}, {"shows", what}});
  };

  std::vector<const float*> layers;
  for (int l = 0; l < cfg.depth; ++l) layers.push_back(pred.model().attention_probs(l));
  for (int l = 0; l < cfg.depth; ++l) {
    for (int h = 0; h < H; ++h) {
      Image o = heat_overlay(view, cls_attention(layers[l], H, N, h), g, a.alpha);
      save("layer" + two(l) + "_head" + two(h) + ".png", o,
           "class-token attention, layer " + std::to_string(l) + ", head " + std::to_string(h));
      tiles.push_back(tile(o));
    }
    Image m = heat_overlay(view, cls_attention(layers[l], H, N, -1), g, a.alpha);
    save("layer" + two(l) + "_mean.png", m, "class-token attention, layer " + std::to_string(l) + ", mean of heads");
    tiles.push_back(tile(m));
  }
  Image roll = heat_overlay(view, cls_rollout(layers, H, N), g, a.alpha);
  save("rollout.png", roll, "attention rollout (Abnar & Zuidema 2020), class token over patches, all layers");
  // Last row of the grid: the model's view of the cell, then the rollout.
  tiles.push_back(tile(view));
  tiles.push_back(tile(roll));
  Image blank;
  blank.width = blank.height = a.tile;
  blank.rgb.assign(size_t(a.tile) * a.tile * 3, 255);
  while (tiles.size() % size_t(H + 1)) tiles.push_back(blank);
  save("grid.png", tile_grid(tiles, H + 1),
       "rows: layers 0.." + std::to_string(cfg.depth - 1) + " (columns: heads 0.." + std::to_string(H - 1) +
           ", then their mean); last row: the cell as the model sees it, rollout");

  const auto& names = pred.class_names();
  // As predict says it: a map of an image unlike the training data explains a call to distrust.
  // null when the model stores no threshold (`vitengine ood-ref`): unknown, not "no".
  const nlohmann::json unlike = pred.ood().present ? nlohmann::json(p.unlike_training) : nlohmann::json();
  nlohmann::json meta = {{"image", a.image},
                         {"model", pred.version()},
                         {"prediction", names[p.top]},
                         {"confidence", p.confidence},
                         {"ood_score", p.ood_score},
                         {"unlike_training_data", unlike},
                         {"grid", g},
                         {"files", files}};
  write_text_atomic(a.out + "/explain.json", json_text(meta, 2) + "\n");
  std::printf("%s: %s (%.1f%%)%s; wrote %zu files to %s (see grid.png, rollout.png)\n", a.image.c_str(),
              names[p.top].c_str(), 100 * p.confidence,
              p.unlike_training ? ", unlike the training data: expect lower accuracy" : "", files.size() + 1,
              a.out.c_str());
  return 0;
}

}  // namespace

Command register_explain(CLI::App& root) {
  auto a = std::make_shared<ExplainArgs>();
  Command c;
  c.app = root.add_subcommand("explain", "Attention maps of one image (rollout + each layer and head) as PNG overlays");
  c.app->add_option("image", a->image, "Cell image")->required();
  c.app->add_option("--out", a->out, "Output folder (created)")->required();
  c.app->add_option("--model", a->model, "Model checkpoint (.vit); default: the shipped model");
  add_stain_norm_option(c.app, &a->stain_norm);
  add_cell_size_option(c.app, &a->cell_size);
  c.app->add_option("--alpha", a->alpha, "Heat-map opacity over the cell")->capture_default_str();
  c.app->add_option("--tile", a->tile, "Tile size in grid.png (pixels)")->capture_default_str();
  c.run = [a]() { return run_explain(*a); };
  return c;
}

}  // namespace vit::cli
