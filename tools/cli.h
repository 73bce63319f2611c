// The vitengine CLI: one file per subcommand (tools/cmd_<name>.cpp), each exporting
// a register function that adds its options and returns what to run.
// Exit codes: 0 ok, 1 runtime error (message names the thing at fault),
// 2 bad arguments (one line), 3 subcommand not built yet.
#pragma once
#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>

#include "engine/dist/dist.h"

namespace vit::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// Thrown by a subcommand that is not built yet; main maps it to exit code 3.
struct NotBuilt : std::runtime_error {
  explicit NotBuilt(const std::string& what) : std::runtime_error(what) {}
};
// Thrown for argument errors found after parsing (e.g. two options that conflict): exit 2.
struct UsageError : std::runtime_error {
  explicit UsageError(const std::string& what) : std::runtime_error(what) {}
};

// An --out that names the command's input: the output, in another format, would be renamed over the
// input (convert, export, pack), and the only copy of a checkpoint or manifest would be gone. Compared
// as files, so "./m.vit", a link to it and a hard link count too. Throws UsageError.
inline void require_out_is_not_input(const std::string& out, const std::string& in, const std::string& in_is) {
  std::error_code ec;
  if (std::filesystem::equivalent(out, in, ec))
    throw UsageError("--out '" + out + "' is the " + in_is + " itself: write to another file, so that " + in +
                     " stays as it is");
}

// --tta for eval, predict and serve: one name, one set of modes (engine/eval/tta.h), one help text.
inline CLI::Option* add_tta_option(CLI::App* app, std::string* mode) {
  return app
      ->add_option("--tta", *mode,
                   "Test-time augmentation: none, flip (2 views) or d4 (8: quarter turns x mirror); mean logits, one "
                   "forward pass per view")
      ->check(CLI::IsMember({"none", "flip", "d4"}))
      ->capture_default_str();
}

// The job this process belongs to (engine/dist/dist.h): one rank outside mpirun / srun. main()
// creates it before running a subcommand; train and eval share their work over it.
dist::Comm& world();

// --stain-norm for eval, predict, explain, differential and serve: one name, one help text.
inline CLI::Option* add_stain_norm_option(CLI::App* app, std::string* mode) {
  return app
      ->add_option("--stain-norm", *mode,
                   "Map each image's stain and colour onto the training set's (stored in the model by "
                   "`vitengine stain-ref`): none, reinhard (Lab statistics), macenko (stain vectors) or calibrated "
                   "(the lab's colour map fitted by `vitengine stain-calibrate`); for another lab's images, no "
                   "retraining")
      ->check(CLI::IsMember({"none", "reinhard", "macenko", "calibrated"}))
      ->capture_default_str();
}

// --cell-size for eval, predict, explain, differential, serve, adapt and ood-ref: one name, one help text.
inline CLI::Option* add_cell_size_option(CLI::App* app, std::string* mode) {
  return app
      ->add_option("--cell-size", *mode,
                   "Rescale each image so that its white cell spans the fraction of the view that the training "
                   "images' cells span (stored in the model by `vitengine stain-ref`): none or normalize, for "
                   "another lab's magnification, no retraining; auto: the model's own (normalize for a model "
                   "trained on such views, train's cell_size=normalize; none for any other)")
      ->check(CLI::IsMember({"auto", "none", "normalize"}))
      ->capture_default_str();
}

// --map and --map-rule for eval, predict, differential and serve: one rule text; `map_does` says
// what the map adds to that command's output.
inline void add_map_options(CLI::App* app, std::string* map, std::string* rule, const std::string& map_does) {
  app->add_option("--map", *map, "label map JSON (e.g. configs/bccd5.json): " + map_does)->check(CLI::ExistingFile);
  app->add_option("--map-rule", *rule,
                  "with --map: other (the top class's target; 'other' when the map leaves it out) or restrict (the "
                  "target whose classes hold the most probability: every image is one of the targets)")
      ->check(CLI::IsMember({"other", "restrict"}))
      ->capture_default_str();
}

Command register_prepare(CLI::App& root);
Command register_train(CLI::App& root);
Command register_eval(CLI::App& root);
Command register_predict(CLI::App& root);
Command register_explain(CLI::App& root);
Command register_differential(CLI::App& root);
Command register_convert(CLI::App& root);
Command register_export(CLI::App& root);
Command register_bench(CLI::App& root);
Command register_serve(CLI::App& root);
Command register_pack(CLI::App& root);
Command register_stain_ref(CLI::App& root);
Command register_stain_calibrate(CLI::App& root);
Command register_adapt(CLI::App& root);
Command register_ood_ref(CLI::App& root);
Command register_pretrain(CLI::App& root);

}  // namespace vit::cli
