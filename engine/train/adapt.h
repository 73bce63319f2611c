// `vitengine adapt`: fine-tune a trained model on a few labelled images of a new domain (another
// lab's cells, say), on the CPU, in minutes.
//
// The labels may be the model's own classes, or the targets of a label map (configs/bccd5.json):
// then an image labelled "Neutrophil" teaches the model that its probability mass belongs on the
// classes the map sends to Neutrophil (band and segmented), without saying which. The loss is the
// negative log of that mass, -log sum_{c in group} softmax(z)_c, whose gradient on the logits is
// p_c - p_c / P_group for c in the group and p_c elsewhere. With singleton groups it is ordinary
// cross-entropy. So the adapted model keeps all of its classes (and their clinical notes).
//
// What trains:
//   all-but-head  the head alone, on class-token features computed once per image and view (the
//                 frozen encoder never runs again: the fast path, seconds on a laptop);
//   last-k        the last k encoder blocks, the final LayerNorm and the head, through the full
//                 forward and backward (no feature cache);
//   none          every parameter (the default: on bccd's adaptation cells it beat the head alone
//                 by 9 points, with the trainer's augmentation drawn anew each step; minutes on
//                 a 2-core CPU for 100 cells);
//   all-but-norm  the LayerNorm weights and biases alone (the default of `--unlabelled`).
// Frozen tensors are never written (AdamW scale 0): bitwise the original's.
//
// Without labels (`--unlabelled`, TENT: Wang et al., "Tent: fully test-time adaptation by entropy
// minimization", ICLR 2021, which did it for batch norm): the LayerNorm parameters are trained to
// make the model's predictions on the new lab's images more confident, i.e. to lower the entropy
// of its class probabilities. The normalisation layers alone move: trained on entropy, every
// weight would let the model call every image one class, which is as confident as it gets. The
// entropy is that of the model's own classes, not of a label map's targets: on bccd's adaptation
// cells the targets' entropy pulled every cell onto the commonest target (docs/robustness.md), so
// --map is refused here and belongs to predict / eval (--map-rule restrict) afterwards.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vit {

struct AdaptRequest {
  std::string model;                   // trained model (.vit); left untouched
  std::string data;                    // prepared folder / manifest.csv, or a folder of class folders
  std::string out;                     // adapted model (.vit), written atomically; not `model`
  std::string map;                     // optional label map: labels are its targets
  std::string data_root;               // optional: replaces every manifest row's src folder
  std::string split = "train";         // manifest split adapted on
  std::string holdout_split = "test";  // manifest split held out for the before/after numbers
  double holdout = 0.25;               // class folders: share of each class held out (seeded, stratified)
  std::string freeze = "auto";          // all-but-head | last-k | none | all-but-norm; auto: none, or
                                        // all-but-norm when unlabelled
  // No labels: every image of `data` (a prepared split, or every image under a folder, labels
  // ignored) trains the LayerNorm parameters by entropy minimisation; nothing is held out, and the
  // card records the mean entropy and the share flagged unlike the training data, before and after.
  bool unlabelled = false;
  int last_k = 1;                       // blocks trained with freeze=last-k
  int shots = 0;                        // at most this many adaptation images per class (0: all)
  int min_per_class = 2;                // a class with fewer adaptation images is refused
  int epochs = 0;                       // 0: 100 (all-but-head), 10 (unlabelled) or 30
  float lr = 0;                         // 0: 1e-3 (all-but-head) or 3e-4
  // constant, or cosine: lr * (1 + cos(pi * step / steps)) / 2, decaying to 0 by the last step, so
  // the weights settle instead of ending on a full-size step (the home model was trained that way).
  std::string lr_schedule = "constant";
  int batch = 16;
  uint64_t seed = 0;
  std::string stain_norm = "none";  // applied to every image, as eval and predict would
  std::string cell_size = "auto";   // none | normalize (engine/data/cell_size.h), likewise
  std::string views = "d4";         // training views per image: none | flip | d4 (engine/eval/tta.h)
  // last-k / none: "views" (each step sees a random one of `views`) or "train" (each step sees a
  // fresh draw of the trainer's augmentation: rotation, flip, scale jitter, colour and stain
  // jitter, blur; engine/data/augment.h). all-but-head trains on cached features of `views`.
  // "auto": train when the encoder trains, else views.
  std::string augment = "auto";
  // Rehearsal (optional): the prepared data the model was trained on. keep_per_class images of
  // each class of its train split train beside the new cells, with their own classes, so that
  // the model does not forget the home lab; its val split is scored before and after.
  std::string keep_data;
  int keep_per_class = 200;  // 0: the whole train split (docs/robustness.md: what each keeps at home)
  // With the encoder training (last-k, none): each epoch rehearses only the next keep_per_epoch of
  // the kept images (rehearsal_schedule), so that the whole home split can be kept at the cost of a
  // few hundred images per epoch. 0: every kept image, every epoch.
  int keep_per_epoch = 0;
  // Optional folder (labelled adaptation only): the held-out cells evaluated before and after, with
  // eval's pictures (engine/train/adapt_report.h). Written after `out`; needs held-out cells.
  std::string report;
  // A run that trains the encoder (last-k, none, all-but-norm) keeps its progress in
  // `out`.progress.vit after each epoch (weights, AdamW moments, the random stream's place):
  // resume continues a stopped or killed run with the same settings, to the bits an uninterrupted
  // run would give; stop_after ends the run after that many epochs (0: never), keeping the
  // progress (e.g. to fit a run into a night). Without resume, a progress file is refused.
  bool resume = false;
  int stop_after = 0;
  std::function<void(const std::string&)> log;
  // The class a folder of class folders holds, from its name ("" = the name itself), as eval
  // reads it: the CLI passes the 14 classes' reading ("neutrophils", "EOSINOPHIL").
  std::function<std::string(const std::string& folder)> folder_class;
};

// The file an encoder-training adapt keeps its progress in (AdaptRequest::resume).
std::string adapt_progress_path(const std::string& out);

// Adapts, writes req.out and returns the card it stored in the model's metadata
// (meta.extra["adaptation"]: data, cells per class, settings, held-out accuracy before and
// after, wall time). Throws std::runtime_error naming the culprit on bad input (no images, one
// class, a label the model or map does not know, a class under min_per_class, a corrupt image)
// before anything is written.
nlohmann::json adapt(const AdaptRequest& req);

// The loss of one row of C logits whose label is `label`: -log of the softmax mass on the classes
// c with group[c] == label. Writes its gradient on the logits, divided by `scale` (the batch
// size), to dz, and returns the loss.
double group_cross_entropy(const float* z, int C, const std::vector<int>& group, int label, float scale, float* dz);

// The kept (rehearsed) images each of `epochs` epochs visits, as indices into the n_kept of them,
// when an epoch takes per_epoch of them (0, or per_epoch >= n_kept: all, every epoch): consecutive
// slices of a seeded permutation, drawn anew when used up, so that each n_kept consecutive visits
// rehearse every kept image once, and no epoch takes one twice.
std::vector<std::vector<size_t>> rehearsal_schedule(size_t n_kept, size_t per_epoch, int epochs, uint64_t seed);

// adapt holds every image it trains on at once (as floats, or as 8-bit views): throws
// std::runtime_error, saying how much is needed and what to change, when `images` x
// `bytes_per_image` is more than the memory the system has available (nothing when unknown).
void check_adapt_memory(size_t images, size_t bytes_per_image, const std::string& what);

// The learning rate of step `step` of `steps` under `schedule` (constant | cosine; AdaptRequest).
float adapt_lr(float lr, const std::string& schedule, size_t step, size_t steps);

// The entropy H = -sum_c p_c log p_c of the softmax p of one row of C logits. Writes dH/dz
// divided by `scale` (the batch size) to dz and returns H.
double softmax_entropy(const float* z, int C, float scale, float* dz);

}  // namespace vit
