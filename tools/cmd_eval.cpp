// vitengine eval: evaluate a model on a split (or a folder of class folders):
// metrics.json, pictures and summary.md. The logic is in engine/eval/evaluate.cpp.
#include <memory>

#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "engine/wbc/app.h"
#include "engine/runtime/backend.h"
#include "tools/cli.h"

namespace vit::cli {

Command register_eval(CLI::App& root) {
  auto r = std::make_shared<EvalRequest>();
  r->app = wbc::eval_app();  // class folders, groups and the hard-class report of the 14 classes
  Command c;
  c.app = root.add_subcommand("eval", "Evaluate a model on a split: metrics.json and pictures");
  auto* app = c.app;
  app->footer(
      "--data: a prepared folder (manifest.csv), a manifest.csv, or a folder of class folders\n"
      "(e.g. ../shared/data/bccd-cropped, labels = folder names; use --map configs/bccd5.json).\n"
      "With --map, predictions of classes the map leaves out are 'other' and count as errors.");
  app->add_option("--model", r->model, "model checkpoint (.vit), e.g. RUN/best.vit; default: the shipped model")
      ->check(CLI::ExistingFile);
  app->add_option("--data", r->data, "prepared folder, manifest.csv or folder of class folders")->required();
  app->add_option("--split", r->split, "manifest split")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "val", "test"}));
  app->add_option("--data-root", r->data_root, "replaces every manifest row's src folder");
  add_map_options(app, &r->map, &r->map_rule,
                  "score against another set's labels (a top class the map leaves out is 'other', an error)");
  app->add_option("--out", r->out, "output folder")->required();
  app->add_option("--device", r->device, "cpu | cuda")->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  app->add_option("--precision", r->precision, "cuda arithmetic: fp32 | bf16")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app->add_option("--batch-size", r->batch_size, "images per forward")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--threads", r->threads, "loader threads")->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--ece-bins", r->ece_bins, "confidence bins")->capture_default_str()->check(CLI::Range(1, 1000));
  add_tta_option(app, &r->tta);
  add_stain_norm_option(app, &r->stain_norm);
  add_cell_size_option(app, &r->cell_size);
  c.run = [r]() -> int {
    r->comm = &world();
    r->model = resolve_model_path(r->model);  // as predict, explain, differential and serve find it
    evaluate(*r);
    return 0;
  };
  return c;
}

}  // namespace vit::cli
