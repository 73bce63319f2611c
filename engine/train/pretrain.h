// The masked-autoencoder pretraining run behind `vitengine pretrain` (docs/pretraining.md).
//
// A run folder RUN holds:
//   config.json    the resolved TrainConfig (the model fields, the optimiser, the mask_ratio and
//                  decoder_* fields) and the data it read
//   last.vit       the encoder with its AdamW moments, the decoder and its moments as extra tensors,
//                  and the loop state; at every epoch end and every checkpoint_every steps,
//                  atomically: `--resume` continues on the same losses
//   encoder.vit    the encoder alone (a plain ViT file, no head to speak of): what
//                  `vitengine train --init RUN/encoder.vit` fine-tunes; at every epoch end
//   metrics.csv    epoch, step, train_loss, lr, img_s, elapsed_s;  steps.csv: step, epoch, loss, lr
//   loss.svg       the reconstruction loss per epoch
//   pictures/epoch_NNN.png  originals, masked inputs and reconstructions of a fixed set of images
//
// Masks are drawn per image from (seed, epoch, the image's position in the data), so a resumed or
// re-run pretraining hides the same patches.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "engine/train/train_config.h"

namespace vit {

struct PretrainRequest {
  TrainConfig config;
  // A prepared folder or manifest (its train_split, subset applies), or any folder of images
  // (searched recursively; labels, if any, are ignored).
  std::string data;
  std::string out;      // run folder
  bool resume = false;  // continue from out/last.vit
  int nan_at_step = 0;  // test hook: the loss of this 1-based step becomes NaN
  std::function<void(const std::string&)> log;  // progress lines; default stdout
};

struct PretrainSummary {
  int64_t steps = 0;
  int epochs_done = 0;
  bool finished = false;  // every epoch ran (not stopped by max_steps)
  double last_epoch_loss = 0;
  double elapsed_s = 0;
  std::string encoder_path, last_path;
};

// Runs or resumes a pretraining. Throws ConfigError, CheckpointMismatch, TrainingDiverged (a NaN
// loss: the last checkpoint stays), std::runtime_error (data, I/O); never exits.
PretrainSummary pretrain(const PretrainRequest& req);

}  // namespace vit
