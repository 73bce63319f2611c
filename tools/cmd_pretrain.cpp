// vitengine pretrain: masked-autoencoder pretraining of a ViT on unlabelled images.
// The logic is in engine/train/pretrain.cpp; this file only maps flags onto TrainConfig.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "engine/train/pretrain.h"
#include "tools/cli.h"

namespace vit::cli {

namespace {
struct PretrainArgs {
  std::string config, data, out, device;
  std::vector<std::string> sets;
  bool resume = false;
  int epochs = 0, batch_size = 0, seed = -1;
  std::string lr, mask_ratio;
};
}  // namespace

Command register_pretrain(CLI::App& root) {
  auto a = std::make_shared<PretrainArgs>();
  Command c;
  c.app = root.add_subcommand("pretrain", "Masked-autoencoder pretraining of a ViT on unlabelled images");
  auto* app = c.app;
  app->footer(
      "Config: the train config's fields (vitengine train --help-config; mask_ratio, norm_pix_loss and decoder_*\n"
      "are pretraining's): defaults < --config FILE < the flags below < --set key=value.\n"
      "Writes RUN/config.json, last.vit (resumable), encoder.vit (fine-tune it: vitengine train --init\n"
      "RUN/encoder.vit), metrics.csv, steps.csv, loss.svg and pictures/. See docs/pretraining.md.");
  app->add_option("--config", a->config, "JSON config file")->check(CLI::ExistingFile);
  app->add_option("--data", a->data,
                  "prepared data folder or manifest.csv (its train split), or any folder of images")
      ->required();
  app->add_option("--out", a->out, "run folder")->required();
  app->add_flag("--resume", a->resume, "continue the run in --out from its last.vit");
  app->add_option("--set", a->sets, "override a config field: key=value (repeatable)")->take_all();
  app->add_option("--epochs", a->epochs, "= --set epochs=N")->check(CLI::PositiveNumber);
  app->add_option("--batch-size", a->batch_size, "= --set batch_size=N")->check(CLI::PositiveNumber);
  app->add_option("--lr", a->lr, "= --set lr=X")->check(CLI::PositiveNumber);
  app->add_option("--mask-ratio", a->mask_ratio, "= --set mask_ratio=X (default 0.75)");
  app->add_option("--seed", a->seed, "= --set seed=N")->check(CLI::NonNegativeNumber);
  app->add_option("--device", a->device, "= --set device=cpu (cuda: not built for pretraining yet)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  c.run = [a]() -> int {
    std::vector<std::string> sets;
    if (a->epochs) sets.push_back("epochs=" + std::to_string(a->epochs));
    if (a->batch_size) sets.push_back("batch_size=" + std::to_string(a->batch_size));
    if (!a->lr.empty()) sets.push_back("lr=" + a->lr);
    if (!a->mask_ratio.empty()) sets.push_back("mask_ratio=" + a->mask_ratio);
    if (a->seed >= 0) sets.push_back("seed=" + std::to_string(a->seed));
    if (!a->device.empty()) sets.push_back("device=" + a->device);
    for (const auto& s : a->sets) sets.push_back(s);
    PretrainRequest req;
    try {
      req.config = TrainConfig::load(a->config, sets);
    } catch (const ConfigError& e) {
      throw UsageError(e.what());
    }
    if (req.config.device != "cpu")
      throw NotBuilt("pretrain runs on the CPU only so far (device=" + req.config.device +
                     "): the CUDA masked autoencoder needs a GPU to be tested; see docs/pretraining.md");
    req.data = a->data;
    req.out = a->out;
    req.resume = a->resume;
    if (const char* v = std::getenv("VITENGINE_TEST_NAN_AT_STEP")) req.nan_at_step = std::atoi(v);
    const PretrainSummary s = pretrain(req);
    if (!s.finished) {
      std::printf("[pretrain] stopped at step %lld (max_steps); resume with --resume\n", (long long)s.steps);
      return 0;
    }
    std::printf("[pretrain] done: %lld steps in %.1f s; last epoch's reconstruction loss %.4f\n", (long long)s.steps,
                s.elapsed_s, s.last_epoch_loss);
    std::printf("[pretrain] encoder: %s  (fine-tune: vitengine train --init %s ...)\n", s.encoder_path.c_str(),
                s.encoder_path.c_str());
    return 0;
  };
  return c;
}

}  // namespace vit::cli
