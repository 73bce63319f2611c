// The training loop behind `vitengine train`.
//
// A run folder RUN holds:
//   config.json      the resolved TrainConfig + model config (written at start)
//   last.vit         model + AdamW moments + train_state (step, epoch, batch in epoch,
//                    epoch accumulators, history, RNG scheme, config); every
//                    checkpoint_every steps and at each epoch end, atomically
//   last_ema.vit     the EMA weights at the same step (only with ema_decay > 0)
//   best.vit         the eval weights (EMA if on) with the best val macro-F1, with the
//                    fitted temperature after the run: the model to use
//   metrics.csv      one row per epoch; steps.csv: step, epoch, loss, lr per step
//   loss.svg, accuracy.svg, report/ (val confusion, per-class table, reliability), summary.md
//
// Determinism: the loader's order and augmentations are a pure function of (seed,
// epoch, position), dropout masks of (seed, step), and every other piece of state is
// in last.vit, so `--resume` after a kill reproduces the uninterrupted run's losses.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/data/dataset.h"
#include "engine/dist/dist.h"
#include "engine/eval/predict.h"
#include "engine/runtime/backend.h"
#include "engine/train/train_config.h"
#include "engine/model/vit.h"

namespace vit {

// A non-finite loss or gradient: the run stops; the last good checkpoint stays.
struct TrainingDiverged : std::runtime_error {
  explicit TrainingDiverged(const std::string& what) : std::runtime_error(what) {}
};
// A checkpoint that does not belong to this run (other model or config).
struct CheckpointMismatch : std::runtime_error {
  explicit CheckpointMismatch(const std::string& what) : std::runtime_error(what) {}
};

// The loader's augmentation for a strength name: none | light | strong.
AugmentConfig augment_preset(const std::string& strength);
// The training loader's augmentation for a config (resolve_auto done): the preset of `augment`
// with the config's rotate_flip, scale_jitter, color_jitter, translate, reflect_border and hed_jitter.
// train and pretrain both read their images through it.
AugmentConfig train_augment(const TrainConfig& c);

// Learning rate of the 0-based step under the config's warmup + schedule.
float lr_at(const TrainConfig& cfg, int64_t step, int64_t steps_per_epoch);
// Seed of the dropout masks of a step: a hash of (seed, step).
uint64_t dropout_seed(uint64_t seed, int64_t step);

struct TrainSummary {
  int64_t steps = 0;
  int epochs_done = 0;
  bool finished = false;  // all epochs ran (not stopped by max_steps)
  double best_val_macro_f1 = -1;
  int best_epoch = -1;
  double temperature = 1.0;
  double elapsed_s = 0;
  std::string best_path, last_path;
};

// The coarse groups of the data's classes, for label_level=group (the CLI passes engine/wbc's).
struct ClassGroups {
  std::vector<std::string> names;                              // the groups, in output order
  std::function<int(const std::string& class_name)> group_of;  // index into names, -1 for none
};

// Test hooks: never in a config or a run's files. tools/cmd_train.cpp reads them from the
// environment (VITENGINE_TEST_NAN_AT_STEP, VITENGINE_TEST_SLEEP_MS) for the tests that drive the CLI.
struct TrainHooks {
  int nan_at_step = 0;  // make the loss of this 1-based step NaN; 0 = off
  int sleep_ms = 0;     // sleep this long after each step (kill-and-resume test); 0 = off
};

struct TrainRequest {
  TrainConfig config;
  std::string data;     // prepared folder (manifest.csv + report.json) or a manifest.csv
  std::string out;      // run folder
  bool resume = false;  // continue from out/last.vit
  ClassGroups groups;   // needed by label_level=group only
  TrainHooks hooks;
  // Data parallelism (docs/distributed.md): every rank of the job calls train() with the same
  // request; batch_size is the global batch. Null: one process.
  dist::Comm* comm = nullptr;
  // Progress lines go here (default: stdout, flushed).
  std::function<void(const std::string&)> log;
};

// Runs (or resumes) a training run. Throws TrainingDiverged, CheckpointMismatch,
// ConfigError, std::runtime_error (I/O, data), never exits.
TrainSummary train(const TrainRequest& req);

}  // namespace vit
