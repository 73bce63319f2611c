// Inference on new images: model lookup, preprocessing, batched forward and
// temperature-calibrated probabilities. Shared by `vitengine predict`, `explain`,
// `differential` and `serve`; owns no threads (serve's Batcher adds them).
#pragma once
#include <string>
#include <vector>

#include <functional>
#include <memory>

#include "engine/data/cell_size.h"
#include "engine/data/image.h"
#include "engine/data/stain.h"
#include "engine/eval/ood.h"
#include "engine/runtime/backend.h"
#include "weights/checkpoint.h"

namespace vit {

// Where a model is taken from when the user names none, in order: $VITENGINE_MODEL,
// <binary dir>/model.vit, <binary dir>/../weights/shipped/model.vit,
// VITENGINE_SOURCE_DIR/weights/shipped/model.vit. `explicit_path` wins if not empty.
// Throws std::runtime_error listing every place looked at when none exists.
std::string resolve_model_path(const std::string& explicit_path);

// p = softmax(logits / T), computed with the max subtracted. T <= 0 is rejected.
void calibrated_softmax(const float* logits, int C, float temperature, float* probs);

// Indices of the k largest values, largest first (ties: lower index first).
std::vector<int> top_k(const std::vector<float>& values, int k);

// One image's result.
struct Prediction {
  std::vector<float> probs;   // calibrated, model output order
  std::vector<float> logits;  // the (mean over views) logits they come from, before the temperature
  std::vector<float> features;  // the (mean over views) class-token features the head read
  int top = -1;              // argmax
  float confidence = 0;      // probs[top]
  double ood_score = 0;      // the model's out-of-distribution score (engine/eval/ood.h; energy when it
                             // stores none): higher is less familiar
  bool unlike_training = false;  // ood_score over the model's stored threshold (never without one)
};

// A loaded model, ready for new images. Not thread-safe: one caller at a time.
class Predictor {
 public:
  // Loads the checkpoint (throws what load_model throws) and checks that the
  // class names and temperature make sense. A checkpoint without class names (converted from
  // another format) takes `names_if_unnamed` when it has as many outputs.
  explicit Predictor(const std::string& checkpoint_path, const std::vector<std::string>& names_if_unnamed = {});
  // Takes an in-memory model (tests, tools).
  Predictor(LoadedModel lm, std::string version);

  const ModelMeta& meta() const { return lm_.meta; }
  const ViTConfig& config() const { return lm_.model->config(); }
  ViT& model() { return *lm_.model; }
  int image_size() const { return config().image_size; }
  int num_classes() const { return config().num_classes; }
  size_t input_floats() const { return size_t(3) * image_size() * image_size(); }
  // "<config name>-<first 12 hex of the checkpoint's SHA-256>" or meta.extra["version"].
  const std::string& version() const { return version_; }
  const std::vector<std::string>& class_names() const { return lm_.meta.class_names; }
  // The out-of-distribution threshold the checkpoint stores (`vitengine ood-ref`); present = false
  // when it stores none, and then no image is flagged.
  const OodReference& ood() const { return ood_; }

  // Pad to square + resize (the cell image the model sees, for overlays).
  Image model_view(const Image& img) const;
  // Stain normalisation (engine/data/stain.h) of every image's model view onto the reference the
  // checkpoint stores; throws std::runtime_error when it stores none.
  void set_stain_norm(const std::string& mode);
  // Cell-size normalisation (engine/data/cell_size.h) of every image's model view onto the cell
  // fraction the checkpoint stores ("none" | "normalize" | "auto": the model's own, as
  // resolve_cell_size says; auto from construction); throws std::runtime_error when it stores none.
  void set_cell_size(const std::string& mode);
  CellSizeNorm cell_size() const { return cell_size_; }
  // A home (training-lab) image as the model was trained on it: its own cell-size mode
  // (resolve_cell_size's auto), no stain map; what adapt shows rehearsed and home val images.
  Image home_view(const Image& img) const;
  // model_view + stain normalisation: the 8-bit image prepare() normalises (what a training-time
  // augmentation of the model's input starts from).
  Image normalized_view(const Image& img) const;
  // A normalized_view (augmented or not) as the model's input: CHW floats normalised with the
  // checkpoint's mean and spread, input_floats() of them.
  void to_input(const Image& view, float* out) const;
  // to_input(normalized_view(img)).
  void prepare(const Image& img, float* out) const;

  // Run forward passes on "cpu" (default) or "cuda" (the same backend `vitengine eval
  // --device cuda` uses; fp32; batches up to max_batch). On cuda the attention
  // probabilities are not kept, so explain/rollout stay on the CPU. Throws on an unknown
  // device or when CUDA is unavailable.
  void use_device(const std::string& device, int max_batch);
  // Test-time augmentation for run(): none (default) | flip | d4 (engine/eval/tta.h); probabilities
  // then come from the mean logits of the views. Throws on an unknown mode.
  void set_tta(const std::string& mode);
  const std::string& tta() const { return tta_; }
  // Forward B prepared images (B * input_floats() floats) in one pass (one per view with
  // test-time augmentation, the unturned view last). With keep_attention, on the CPU, the attention
  // probabilities of the unturned view stay readable through model() until the next call; without
  // it the CPU runs the inference path (ForwardOptions::inference), which keeps none.
  std::vector<Prediction> run(const float* chw, int B, bool keep_attention = true);
  // Prepare and run in chunks of at most `batch` images.
  std::vector<Prediction> predict(const std::vector<Image>& images, int batch);

 private:
  void check_meta(const std::vector<std::string>& names_if_unnamed);
  // At construction: --cell-size auto, and the fraction of the model's own views for home_view.
  void use_own_views();
  LoadedModel lm_;
  std::unique_ptr<TrainBackend> backend_;  // set by use_device("cuda")
  std::string version_;
  std::string source_;  // the checkpoint's path (its version when made in memory): what refusals name
  std::string tta_ = "none";
  int tta_views_ = 1;
  StainNorm stain_ = StainNorm::kNone;
  StainReference stain_ref_;
  CellSizeNorm cell_size_ = CellSizeNorm::kNone;
  double cell_fraction_ = 0;
  double home_fraction_ = 0;  // trained on cell-size-normalised views: their fraction; 0: plain views
  OodReference ood_;
};

// The stain reference a checkpoint stores (meta.extra "stain_reference", written by
// `vitengine stain-ref`), with the lab's colour calibration (meta.extra "stain_calibration",
// written by `vitengine stain-calibrate`) when `mode` is calibrated; throws std::runtime_error
// naming the file when what the mode needs is not there.
StainReference stain_reference_of(const ModelMeta& meta, const std::string& model_path, StainNorm mode);
// The cell-size reference a checkpoint stores (meta.extra "cell_size", written by `vitengine
// stain-ref`); throws std::runtime_error naming the file when there is none.
CellSizeReference cell_size_reference_of(const ModelMeta& meta, const std::string& model_path);
// --cell-size's mode for a model: "auto" is the model's own, normalize when it was trained on
// cell-size-normalised views (train's cell_size=normalize; meta.extra.cell_size.trained), none
// otherwise, so that such a model is never shown views it was not trained on by default; "none" and
// "normalize" as given. Throws std::invalid_argument for another word.
CellSizeNorm resolve_cell_size(const std::string& mode, const ModelMeta& meta);
// Whether the model was trained on cell-size-normalised views (meta.extra.cell_size.trained).
bool trained_on_cell_size_views(const ModelMeta& meta);

// Expands folders (recursively, sorted) into the image files under them (.jpg, .jpeg,
// .png, .bmp, any case); other paths are kept as given, even if missing, so that the
// caller reports each unreadable one. Throws if a folder cannot be listed.
// With `skipped`, it receives the files under the folders that were left out for their extension.
std::vector<std::string> list_image_files(const std::vector<std::string>& paths,
                                          std::vector<std::string>* skipped = nullptr);
// list_image_files, or when it finds nothing a std::runtime_error that says how many files were
// skipped, names one with its extension, and the extensions read (a folder of .webp or .tiff).
std::vector<std::string> require_image_files(const std::vector<std::string>& paths);

// Decodes files[begin, end): each readable image goes to `images` and its path to `paths`
// (same order); each unreadable one is handed to on_error(path, what) and skipped, so one
// bad file never stops a batch. Shared by predict and differential.
void load_images(const std::vector<std::string>& files, size_t begin, size_t end, std::vector<Image>& images,
                 std::vector<std::string>& paths,
                 const std::function<void(const std::string& path, const std::string& what)>& on_error);

}  // namespace vit
