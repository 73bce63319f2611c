// vitengine train: train a ViT (from scratch or --init) on a prepared data set.
// The logic is in engine/train/trainer.cpp; this file only maps flags onto TrainConfig.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "engine/train/train_config.h"
#include "engine/train/trainer.h"
#include "engine/runtime/backend.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {
// Test hooks (engine/train/trainer.h TrainHooks) for the tests that drive this CLI; not options,
// so that no user run carries them.
int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : 0;
}
TrainHooks test_hooks_from_env() {
  TrainHooks h;
  h.nan_at_step = env_int("VITENGINE_TEST_NAN_AT_STEP");
  h.sleep_ms = env_int("VITENGINE_TEST_SLEEP_MS");
  return h;
}

struct TrainArgs {
  std::string config, data, out, init, device;
  std::vector<std::string> sets;
  bool resume = false, help_config = false, print_config = false;
  int epochs = 0, batch_size = 0, seed = -1;
  std::string lr;  // kept as typed: a number printed back (std::to_string) loses digits
};
// The last line of a finished run: which epoch best.vit holds. Without val images nothing picked
// one, and best.vit is the end of the run (engine/train/run_report.cpp).
void print_done(const TrainSummary& s, const TrainConfig& c) {
  if (s.best_epoch > 0) {
    std::printf("[train] done: %lld steps in %.1f s; best.vit = epoch %d, val macro-F1 %.4f, temperature %.4f\n",
                (long long)s.steps, s.elapsed_s, s.best_epoch, s.best_val_macro_f1, s.temperature);
    return;
  }
  const std::string why = c.val_split.empty() ? "val_split is empty" : "split '" + c.val_split + "' has none";
  std::printf("[train] done: %lld steps in %.1f s; no val images (%s), so best.vit is the %sweights after the last "
              "epoch (%d), not calibrated (temperature 1)\n",
              (long long)s.steps, s.elapsed_s, why.c_str(), c.ema_decay > 0 ? "EMA " : "", s.epochs_done);
}

}  // namespace

Command register_train(CLI::App& root) {
  auto a = std::make_shared<TrainArgs>();
  Command c;
  c.app = root.add_subcommand("train", "Train a ViT (from scratch or --init) on a prepared data set");
  auto* app = c.app;
  app->footer(
      "Config: defaults < --config FILE < the flags below < --set key=value.\n"
      "Writes RUN/config.json, last.vit (resumable), best.vit (use this one), metrics.csv,\n"
      "steps.csv, loss.svg, accuracy.svg, report/ and summary.md. See docs/training.md.");
  app->add_option("--config", a->config, "JSON config file (see --help-config)")->check(CLI::ExistingFile);
  app->add_option("--data", a->data, "prepared data folder (manifest.csv + report.json) or a manifest.csv");
  app->add_option("--out", a->out, "run folder");
  app->add_flag("--resume", a->resume, "continue the run in --out from its last.vit");
  app->add_option("--set", a->sets, "override a config field: key=value (repeatable)")->take_all();
  app->add_option("--epochs", a->epochs, "= --set epochs=N")->check(CLI::PositiveNumber);
  app->add_option("--batch-size", a->batch_size, "= --set batch_size=N")->check(CLI::PositiveNumber);
  app->add_option("--lr", a->lr, "= --set lr=X")->check(CLI::PositiveNumber);
  app->add_option("--seed", a->seed, "= --set seed=N")->check(CLI::NonNegativeNumber);
  app->add_option("--device", a->device, "= --set device=cpu|cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app->add_option("--init", a->init, "= --set init=FILE (initial weights)");
  app->add_flag("--help-config", a->help_config, "print every config field with its default and meaning");
  app->add_flag("--print-config", a->print_config,
                "print the resolved config (defaults < --config < flags < --set) as JSON, then exit");
  c.run = [a]() -> int {
    if (a->help_config) {
      std::fputs(TrainConfig::docs_markdown().c_str(), stdout);
      return 0;
    }
    std::vector<std::string> sets;
    if (a->epochs) sets.push_back("epochs=" + std::to_string(a->epochs));
    if (a->batch_size) sets.push_back("batch_size=" + std::to_string(a->batch_size));
    if (!a->lr.empty()) sets.push_back("lr=" + a->lr);
    if (a->seed >= 0) sets.push_back("seed=" + std::to_string(a->seed));
    if (!a->device.empty()) sets.push_back("device=" + a->device);
    if (!a->init.empty()) sets.push_back("init=" + a->init);
    for (const auto& s : a->sets) sets.push_back(s);
    TrainRequest req;
    try {
      req.config = TrainConfig::load(a->config, sets);
    } catch (const ConfigError& e) {
      throw UsageError(e.what());
    }
    if (a->print_config) {
      std::printf("%s\n", req.config.to_json().dump(2).c_str());
      return 0;
    }
    if (a->data.empty() || a->out.empty()) throw UsageError("--data and --out are required");
    req.data = a->data;
    req.out = a->out;
    req.resume = a->resume;
    req.groups = wbc::class_groups();  // label_level=group learns the 9 white-blood-cell groups
    req.hooks = test_hooks_from_env();
    req.comm = &world();
    TrainSummary s = train(req);
    if (world().rank() != 0) return 0;  // rank 0 speaks for the job
    if (!s.finished) {
      std::printf("[train] stopped at step %lld (max_steps); resume with --resume\n", (long long)s.steps);
      return 0;
    }
    print_done(s, req.config);
    std::printf("[train] model: %s\n", s.best_path.c_str());
    return 0;
  };
  return c;
}

}  // namespace vit::cli
