// The training run behind train() (engine/train/trainer.h), one class split by job across files:
//   run_setup.cpp   the data and its loaders, the model (new, --init or --resume), the run folder;
//   run_loop.cpp    the steps and epochs, the EMA, the checkpoints written along the way;
//   run_report.cpp  the end: calibration, the validation report, summary.md.
// Internal to engine/train: nothing outside it includes this header.
#pragma once
#include "engine/train/trainer.h"
#include "engine/train/run_state.h"
#include "engine/eval/tta.h"
#include "engine/util/async_writer.h"
#include "engine/util/file.h"
#include "engine/util/rng.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "engine/eval/calibration.h"
#include "engine/eval/metrics.h"
#include "engine/data/pack.h"
#include "engine/eval/plots.h"
#include "weights/checkpoint.h"
#if __has_include("weights/torchvision.h")
#include "weights/torchvision.h"
#define VITENGINE_HAS_LOAD_INIT 1
#endif

namespace vit::train_detail {
namespace fs = std::filesystem;

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t);
// One metrics.csv cell ("" for NaN), the whole metrics.csv, and a duration for the log ("1m05s").
std::string cell(double v, const char* f = "%.6f");
std::string metrics_csv(const std::vector<EpochRow>& rows);
std::string duration(double s);
// Copy every parameter of `src` whose name and shape match into `dst`; returns the
// names of dst's parameters that were not copied.
std::vector<std::string> copy_matching(const ViT& src, ViT& dst);

class Run {
 public:
  explicit Run(const TrainRequest& r) : req_(r), cfg_(r.config), out_(r.out), comm_(r.comm) {
    log_ = req_.log ? req_.log : [](const std::string& s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fputc('\n', stdout);
      std::fflush(stdout);
    };
    if (!lead()) log_ = [](const std::string&) {};  // rank 0 speaks for the job
  }

  TrainSummary go() {
    t_start_ = Clock::now();
    cfg_.validate();
    check_ranks();
    load_data();
    setup_model();
    // Only now that the data, the config and any checkpoint have been accepted: a run that
    // cannot start leaves no empty --out folder behind.
    fs::create_directories(out_);
    if (lead()) remove_stale_temporaries(out_, log_);
    open_steps_log();
    if (cfg_.data_on_device) upload_train_images();
    write_config();
    loop();
    return finish();
  }

 private:
  // ---------------------------------------------------------------- ranks (run_dist.cpp)
  // Rank 0 alone writes files and logs; the others train and evaluate their share.
  bool lead() const { return !comm_ || comm_->rank() == 0; }
  int ranks() const { return comm_ ? comm_->size() : 1; }
  // The step's gradients and loss go through the collectives (any launched job, one rank too).
  bool reducing() const { return comm_ && comm_->active(); }
  // Refuses a batch the ranks cannot share evenly and ranks that run another config or binary.
  void check_ranks();
  // Every rank starts from rank 0's parameters and moments, bit for bit.
  void share_weights();
  // Before backward: the gradients of this rank's `n` images become the whole batch's mean
  // (`global_n` images) once the backend's finish_gradient_allreduce returns.
  void start_gradient_allreduce(int n, int global_n);
  // The batch's loss and correct predictions over every rank: the mean loss of the whole batch.
  float reduce_loss(float loss, int n, int global_n, int64_t* correct);
  // Rank 0's value of v on every rank (a measured time that decides what all ranks do next).
  double rank0_value(double v);
  // Waits until every rank is here (rank 0 has finished a file the others read next).
  void wait_for_ranks(const std::string& what);

  // ---------------------------------------------------------------- setup
  void load_data();
  // cell_size=normalize: the fraction the views are rescaled to, from the train split's reference
  // sample; and a loader config set to rescale with it (no-op for cell_size=none).
  void measure_cell_size(const Manifest& man);
  void apply_cell_size(LoaderConfig& lc) const;

  // DATA/<split>.pack, if it holds exactly `samples` (same paths, same order, same
  // labels) at the model's input size: the loader then skips JPEG decoding and
  // resizing; the pixels, order and augmentations are the same as from the files.
  std::shared_ptr<const PackFile> find_pack(const std::string& split, const std::vector<Sample>& samples);

  // data_on_device: every train image at the model's size (straight from the train pack, else
  // decoded once here on `threads` workers) goes to GPU memory with its border colour; each step
  // then sends only the batch's indices and augmentation draws (TrainBackend::forward_uploaded).
  // Image i here is sample i of the train loader, whose indices the batches carry.
  void upload_train_images();

  void setup_model();

  void load_init_weights();

  void resume_from_checkpoint();
  void check_resumed_classes(const std::vector<std::string>& saved) const;

  void write_config();

  // steps.csv: one line per optimizer step. On resume, lines after the checkpoint's
  // step (written before a kill) are dropped, so the file always matches the state.
  void open_steps_log();

  // ---------------------------------------------------------------- checkpoints

  // Writes last.vit (and last_ema.vit) from a snapshot of this moment on the background writer,
  // so that the next epoch trains while the file is hashed, written and fsynced. Callers that
  // then log the checkpoint as written (checkpoint_every, max_steps) wait for it first. The snapshot
  // is a copy because the CPU backend trains host_ itself. One write at a time: a second call
  // first waits for the previous write (and rethrows its error).
  void save_last();

  // The weights validation and best.vit use: the EMA when it is on.
  TrainBackend& eval_backend();
  const ViT& eval_weights_host();

  void update_ema();

  // ---------------------------------------------------------------- loop
  int eval_batch() const { return std::max(cfg_.batch_size, 64); }
  int max_batch() const { return std::max(cfg_.batch_size, eval_batch()); }
  double elapsed() const { return st_.elapsed_s + since(t_start_); }

  std::vector<float> lr_scales() const;

  [[noreturn]] void diverged(const std::string& what) {
    std::string keep = last_saved_step_ >= 0 ? "the last good checkpoint '" + last_path_ + "' (step " +
                                                   std::to_string(last_saved_step_) + ") is kept"
                                             : "no checkpoint had been written yet";
    try {
      writer_.wait();  // the last good checkpoint is complete on disk before anyone hears of this
    } catch (const std::exception& e) {
      keep = "writing the checkpoint of step " + std::to_string(last_saved_step_) + " failed (" + e.what() +
             "); an earlier '" + last_path_ + "', if any, is kept";
    }
    throw TrainingDiverged(what + " at step " + std::to_string(st_.step + 1) + " (epoch " +
                           std::to_string(st_.epoch + 1) + ", batch " + std::to_string(st_.batch_in_epoch + 1) +
                           " of " + std::to_string(spe_) + "); training stopped; " + keep +
                           ". Lower lr or set grad_clip.");
  }

  float train_step(const Batch& batch, float lr, int64_t* correct);
  void loop();

  void end_epoch(int64_t imgs, double secs);

  void save_best(const EpochRow& r);

  // ---------------------------------------------------------------- the end
  TrainSummary finish();

  // Loads best.vit, fits the temperature on val, stores it, writes the val report.
  void report_on_val(TrainSummary& s);

  void write_summary(const TrainSummary& s);

  // ---------------------------------------------------------------- state
  TrainRequest req_;
  TrainConfig cfg_;
  std::string out_;
  dist::Comm* comm_;  // null: one process
  std::function<void(const std::string&)> log_;
  std::vector<Sample> train_samples_, val_samples_;
  std::vector<std::string> names_;  // output names: the 14 classes, or the 9 groups (label_level)
  DataStats stats_;
  CellSizeReference cell_ref_;  // cell_size=normalize only
  ViTConfig model_cfg_;
  ModelMeta meta_;
  std::shared_ptr<const PackFile> train_pack_;  // null when the train images come from files
  std::unique_ptr<Loader> train_loader_, val_loader_;
  std::unique_ptr<ViT> host_, eval_host_;
  std::unique_ptr<TrainBackend> backend_, eval_backend_;
  std::vector<float> ema_;
  bool uses_scaled_ = false, stopped_early_ = false;
  std::string last_path_, ema_path_, best_path_;
  std::ofstream steps_log_;
  int64_t spe_ = 0, total_steps_ = 0;
  RunState st_;  // everything a resume restores besides the weights and moments
  int64_t last_saved_step_ = -1;
  float last_lr_ = 0;
  Clock::time_point t_start_;
  nlohmann::json val_metrics_;
  std::unique_ptr<ViT> snapshot_;  // what the writer is saving (save_last)
  std::vector<float> ema_snapshot_;
  AsyncWriter writer_;  // last: destroyed (joined) before the snapshot it reads
};

}  // namespace vit::train_detail
