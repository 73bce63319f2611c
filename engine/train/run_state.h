// The state of a training run that last.vit carries beside the weights and AdamW moments, so
// that `--resume` continues on the same losses: where the loop is, the running sums of the
// epoch in progress, the best validation score so far, and the history behind metrics.csv.
#pragma once
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <nlohmann/json.hpp>
#include <vector>

namespace vit {

// One row of metrics.csv (NaN: not measured, e.g. no val split).
struct EpochRow {
  int epoch = 0;  // 1-based
  int64_t step = 0;
  double train_loss = NAN, train_acc = NAN, val_loss = NAN, val_acc = NAN, val_macro_f1 = NAN;
  double lr = 0, img_s = 0, elapsed_s = 0;

  nlohmann::json to_json() const;
  static EpochRow from_json(const nlohmann::json& j);
};

struct RunState {
  int64_t step = 0;            // optimizer steps done
  int epoch = 0;               // 0-based epoch in progress
  int64_t batch_in_epoch = 0;  // batches of it done
  double epoch_loss_sum = 0;   // running sums of the epoch in progress
  int64_t epoch_correct = 0, epoch_seen = 0, epoch_batches = 0;
  double best_val_macro_f1 = -1;
  int best_epoch = -1;   // 1-based; -1 = none yet
  double elapsed_s = 0;  // training time before this process
  std::vector<EpochRow> history;

  // The checkpoint's train_state. elapsed_s is written as `elapsed_now` (this process included);
  // steps_per_epoch, the seed and the config are written for readers and for the resume check.
  nlohmann::json to_json(int64_t steps_per_epoch, double elapsed_now, uint64_t seed,
                         const nlohmann::json& config) const;
  // Throws nlohmann::json's exceptions on a missing or mistyped field.
  static RunState from_json(const nlohmann::json& j);
};

// Removes what writes killed mid-way (SIGKILL, power loss) left of the run's own files in RUN:
// last.vit.tmp.<pid> and the like, whose process is gone; logs each. Files it does not know stay.
void remove_stale_temporaries(const std::string& run_folder, const std::function<void(const std::string&)>& log);

// RUN/steps.csv (step,epoch,loss,lr), opened for appending. On resume, the rows after the
// checkpoint's step `upto_step` (written before a kill, or torn) are dropped first, so that the
// file always matches the state; otherwise it starts empty. Throws if it cannot be written.
std::ofstream open_steps_csv(const std::string& path, bool resume, int64_t upto_step);

}  // namespace vit
