// vitengine predict: classify cell images with calibrated probabilities.
//   vitengine predict [--model CKPT] IMAGE|DIR... [--top-k 3] [--format table|json|csv] [--batch 16]
//                     [--device cpu|cuda] [--tta none|flip|d4] [--map FILE [--map-rule other|restrict]]
// An unreadable file gets an error line (stderr; in JSON also a {"file","error"} record)
// and the rest still run; the exit code is 1 at the end if any file failed.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "engine/runtime/backend.h"
#include "engine/util/json.h"
#include "engine/util/text.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {

struct PredictArgs {
  std::string model;
  std::vector<std::string> inputs;
  int top_k = 3;
  std::string format = "table";
  int batch = 16;
  float review_below = 0.5f;
  int time_runs = 0;
  std::string device = "cpu";
  std::string tta = "none", stain_norm = "none", cell_size = "auto";
  std::string map, map_rule = "other";  // label map: also name each image's target (eval's rule)
};

// Every target's probability, by name, for the JSON row.
nlohmann::json masses_json(const LabelMap& m, const MappedCall& c) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t t = 0; t < c.masses.size(); ++t) j[m.targets[t]] = c.masses[t];
  return j;
}

// An image this small (a thumbnail, an icon, a 1x1 pixel) is upscaled many times to the model's view
// and still gets a confident call (a blank 1x1 came out Platelet at 98.6%): said on stderr, so the
// output formats stay as they are. prepare refuses such images by default (--min-side 32).
constexpr int kSmallSide = 32;
void warn_small(const std::vector<Image>& imgs, const std::vector<std::string>& files) {
  for (size_t j = 0; j < imgs.size(); ++j)
    if (std::min(imgs[j].width, imgs[j].height) < kSmallSide)
      std::fprintf(stderr,
                   "vitengine predict: warning: %s is %dx%d, under %d px a side: upscaled to the model's view, its "
                   "call is not to be trusted\n",
                   files[j].c_str(), imgs[j].width, imgs[j].height, kSmallSide);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

int run_predict(const PredictArgs& a) {
  if (a.top_k < 1) throw UsageError("--top-k must be >= 1");
  if (a.batch < 1) throw UsageError("--batch must be >= 1");
  Predictor pred(resolve_model_path(a.model), wbc::class_names());
  pred.use_device(a.device, a.batch);
  pred.set_tta(a.tta);
  pred.set_stain_norm(a.stain_norm);
  pred.set_cell_size(a.cell_size);
  const auto& names = pred.class_names();
  const int k = std::min(a.top_k, pred.num_classes());
  const bool mapped = !a.map.empty(), restrict_to_targets = restrict_map_rule(a.map_rule);
  const LabelMap lmap = mapped ? read_label_map(a.map, names) : LabelMap{};
  const std::vector<std::string> files = require_image_files(a.inputs);

  if (a.format == "csv") {
    std::printf("file,prediction,confidence,review");
    for (int i = 1; i <= k; ++i) std::printf(",class_%d,prob_%d", i, i);
    std::printf(",ood_score,unlike_training_data%s\n", mapped ? ",target,target_prob" : "");
  }
  int failed = 0;
  for (size_t i = 0; i < files.size(); i += size_t(a.batch)) {
    std::vector<Image> imgs;
    std::vector<std::string> ok;
    load_images(files, i, i + size_t(a.batch), imgs, ok, [&](const std::string& file, const std::string& what) {
      ++failed;
      std::string msg = what;  // the image reader usually names the file already
      if (msg.find(file) == std::string::npos) msg = file + ": " + msg;
      std::fprintf(stderr, "vitengine predict: error: %s\n", msg.c_str());
      if (a.format == "json") std::printf("%s\n", json_text({{"file", file}, {"error", what}}).c_str());
    });
    warn_small(imgs, ok);
    std::vector<Prediction> preds = pred.predict(imgs, a.batch);
    for (size_t j = 0; j < preds.size(); ++j) {
      const Prediction& p = preds[j];
      std::vector<int> top = top_k(p.probs, k);
      bool review = p.confidence < a.review_below;
      // null when the model stores no threshold (`vitengine ood-ref`): unknown, not "no".
      const nlohmann::json unlike = pred.ood().present ? nlohmann::json(p.unlike_training) : nlohmann::json();
      const MappedCall m = mapped ? map_call(lmap, restrict_to_targets, p.probs) : MappedCall{};
      if (a.format == "json") {
        nlohmann::json t = nlohmann::json::array(), probs = nlohmann::json::object();
        for (int c : top) t.push_back({{"class", names[c]}, {"prob", p.probs[c]}});
        for (size_t c = 0; c < names.size(); ++c) probs[names[c]] = p.probs[c];
        nlohmann::json row{{"file", ok[j]},
                           {"prediction", names[p.top]},
                           {"confidence", p.confidence},
                           {"review", review},
                           {"top", t},
                           {"probabilities", probs},
                           {"ood_score", p.ood_score},
                           {"unlike_training_data", unlike},
                           {"model", pred.version()}};
        if (mapped)
          row["target"] = m.name, row["target_probability"] = m.prob, row["target_probabilities"] = masses_json(lmap, m);
        std::printf("%s\n", json_text(row).c_str());
      } else if (a.format == "csv") {
        std::printf("%s,%s,%.6f,%d", csv_field(ok[j]).c_str(), csv_field(names[p.top]).c_str(), p.confidence, review);
        for (int c : top) std::printf(",%s,%.6f", csv_field(names[c]).c_str(), p.probs[c]);
        std::printf(",%.6f,%s", p.ood_score, pred.ood().present ? (p.unlike_training ? "1" : "0") : "");
        if (mapped) std::printf(",%s,%.6f", csv_field(m.name).c_str(), m.prob);
        std::printf("\n");
      } else {
        std::printf("%s%s\n", ok[j].c_str(), p.unlike_training ? "   (unlike the training data: expect lower accuracy)" : "");
        for (int r = 0; r < k; ++r)
          std::printf("  %d. %s %6.2f%%%s\n", r + 1, pad_to_width(names[top[r]], 22).c_str(),
                      100 * p.probs[top[r]], (r == 0 && review) ? "   (low confidence: review)" : "");
        if (mapped) std::printf("  -> %s %6.2f%% (label map '%s', rule %s)\n", m.name.c_str(), 100 * m.prob,
                                lmap.name.c_str(), a.map_rule.c_str());
      }
    }
    std::fflush(stdout);
    if (a.time_runs > 0 && i == 0 && !imgs.empty()) {
      // Forward-pass latency of this first batch, preprocessing excluded (tools/latency_vs_torch.py).
      std::vector<float> x(imgs.size() * pred.input_floats());
      for (size_t j = 0; j < imgs.size(); ++j) pred.prepare(imgs[j], x.data() + j * pred.input_floats());
      pred.run(x.data(), int(imgs.size()), /*keep_attention=*/false);  // warm-up
      std::vector<double> ms;
      for (int r = 0; r < a.time_runs; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        pred.run(x.data(), int(imgs.size()), /*keep_attention=*/false);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      const ViTConfig& cfg = pred.config();
      nlohmann::json t = {
          {"forward_latency",
           {{"batch", imgs.size()}, {"runs", a.time_runs}, {"median_ms", ms[ms.size() / 2]}, {"min_ms", ms.front()}}},
          {"config",
           {{"name", cfg.name},
            {"image_size", cfg.image_size},
            {"patch", cfg.patch},
            {"dim", cfg.dim},
            {"depth", cfg.depth},
            {"heads", cfg.heads},
            {"mlp_dim", cfg.mlp_dim},
            {"num_classes", cfg.num_classes}}}};
      std::fprintf(stderr, "vitengine predict: timing %s\n", t.dump().c_str());
    }
  }
  if (failed) std::fprintf(stderr, "vitengine predict: %d of %zu file(s) could not be read\n", failed, files.size());
  return failed ? 1 : 0;
}

}  // namespace

Command register_predict(CLI::App& root) {
  auto a = std::make_shared<PredictArgs>();
  Command c;
  c.app =
      root.add_subcommand("predict", "Classify images (top-k of the model's classes with calibrated probabilities)");
  c.app->add_option("inputs", a->inputs, "Image files or folders (searched recursively for .jpg/.png/.bmp/.tif)")
      ->required();
  c.app->add_option("--model", a->model, "Model checkpoint (.vit); default: the shipped model");
  c.app->add_option("--top-k", a->top_k, "Classes to show per image")->capture_default_str();
  c.app->add_option("--format", a->format, "Output: table, json (JSON lines) or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->capture_default_str();
  c.app->add_option("--batch", a->batch, "Images per forward pass")->capture_default_str();
  c.app->add_option("--review-below", a->review_below, "Flag predictions whose top probability is below this")
      ->capture_default_str();
  c.app->add_option("--time-runs", a->time_runs, "Also time the first batch's forward pass N times (stderr)");
  c.app->add_option("--device", a->device, "Run the forward passes on cpu or cuda (fp32)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  add_map_options(c.app, &a->map, &a->map_rule, "also name each image's target, as eval --map does");
  add_tta_option(c.app, &a->tta);
  add_stain_norm_option(c.app, &a->stain_norm);
  add_cell_size_option(c.app, &a->cell_size);
  c.run = [a]() { return run_predict(*a); };
  return c;
}

}  // namespace vit::cli
