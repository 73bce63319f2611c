// The training run configuration: one typed struct, every field defaulted and
// documented, validated on load (errors name the field), written to RUN/config.json.
//
// Sources, later wins: the defaults below, a JSON file (--config), then
// `--set key=value` overrides. Unknown keys, keys given twice and wrong types are
// errors, so a typo never silently trains with a default. Defaults follow the seed project (AdamW
// lr 3e-4, weight decay 1e-2, cross-entropy, 224 input, batch 32, constant lr);
// the warmup + cosine schedule, label smoothing, clipping, EMA and dropout are
// there to be switched on by a config (configs/wbc14_vit_ti16.json = the reference recipe).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/model/vit.h"

namespace vit {

// Thrown for a bad config value, unknown key or wrong type; the message names the field.
struct ConfigError : std::invalid_argument {
  explicit ConfigError(const std::string& what) : std::invalid_argument(what) {}
};

// X(type, name, default, doc). The one list that defines the struct, its JSON
// reader and writer, --set parsing and the documentation table.
#define VIT_TRAIN_CONFIG_FIELDS(X)                                                                                     \
  /* ---- model ---- */                                                                                                \
  X(std::string, model, "vit_ti16", "model preset: vit_ti16 | vit_s16 | vit_b16 (fields below override it)")           \
  X(int, image_size, 0, "input side in pixels; 0 = the preset's (224)")                                                \
  X(int, patch, 0, "patch side; 0 = the preset's (16)")                                                                \
  X(int, dim, 0, "token width; 0 = the preset's")                                                                      \
  X(int, depth, 0, "encoder blocks; 0 = the preset's")                                                                 \
  X(int, heads, 0, "attention heads; 0 = the preset's")                                                                \
  X(int, mlp_dim, 0, "MLP hidden width; 0 = the preset's")                                                             \
  X(float, dropout, 0.0f, "dropout probability inside the model (torchvision's `dropout`)")                            \
  X(float, drop_path, 0.0f,                                                                                            \
    "stochastic depth: block l drops its residual branches per sample with rate drop_path*l/(depth-1) (the reference " \
    "recipe: 0.1)")                                                                                                    \
  /* ---- optimisation ---- */                                                                                         \
  X(int, epochs, 10, "training epochs (the lr schedule spans all of them)")                                            \
  X(int, batch_size, 32, "images per optimizer step")                                                                  \
  X(float, lr, 3e-4f, "peak AdamW learning rate")                                                                      \
  X(float, weight_decay, 1e-2f, "AdamW decoupled weight decay, on weight matrices only")                               \
  X(float, beta1, 0.9f, "AdamW beta1")                                                                                 \
  X(float, beta2, 0.999f, "AdamW beta2")                                                                               \
  X(float, adam_eps, 1e-8f, "AdamW epsilon")                                                                           \
  X(std::string, schedule, "constant", "learning-rate schedule after warmup: constant | cosine")                       \
  X(float, warmup_epochs, 0.0f, "linear warmup from 0 to lr over this many epochs (fractions allowed)")                \
  X(float, min_lr_ratio, 0.01f, "cosine floor, as a fraction of lr")                                                   \
  X(float, label_smoothing, 0.0f, "cross-entropy label smoothing (0 = plain cross-entropy)")                           \
  X(float, grad_clip, 0.0f, "clip the global gradient norm to this; 0 = off")                                          \
  X(float, ema_decay, 0.0f, "EMA of the weights (e.g. 0.999); 0 = off. With EMA, val and best.vit use it")             \
  X(int, ema_every, 1, "update the EMA every N steps (decay^N per update); >1 saves GPU downloads")                    \
  /* ---- data ---- */                                                                                                 \
  X(int, subset, 100, "train on the 5, 20 or 100 percent subset written by `vitengine prepare`")                       \
  X(std::string, train_split, "train", "manifest split to train on")                                                   \
  X(std::string, data_root, "", "replaces every manifest row's src folder (a prepared set moved to another machine)")  \
  X(std::string, val_split, "val", "manifest split for validation, best.vit and temperature fitting")                  \
  X(float, balance_power, 0.0f, "class-balanced sampling: weight = count^-power; 0 = natural order, 1 = balanced")     \
  X(std::string, augment, "light", "augmentation strength: none | light | strong")                                     \
  X(std::string, rotate_flip, "auto",                                                                                  \
    "augment light/strong: a random rotation in [0, 360) and horizontal flip: on | off | auto (on when the prepared "  \
    "set says its images have no orientation, as cells on a slide (report.json orientation_free: --labels wbc14); "    \
    "off for any other set: a turned 6 is a 9)")                                                                       \
  X(float, translate, -1.0f,                                                                                           \
    "augment light/strong: shift each image by up to +-translate of its side in x and y; -1 = auto: 0 on "             \
    "orientation-free sets (the rotation moves cells already; the reference recipe sets 0.03), 0.1 on any other")      \
  X(bool, scale_jitter, true, "augment light/strong: random zoom (light 0.87-1.15, strong 0.7-1.4, log-uniform)")      \
  X(bool, color_jitter, true,                                                                                          \
    "augment light/strong: brightness, contrast, saturation (light +-0.2, strong +-0.35), hue and per-channel stain "  \
    "gain")                                                                                                            \
  X(bool, reflect_border, false,                                                                                       \
    "augment light/strong: pixels the geometry moves in from outside the frame mirror the image (the reference's "     \
    "padding_mode='reflection') instead of taking its border colour")                                                  \
  X(float, hed_jitter, 0.0f,                                                                                           \
    "augment light/strong: HED stain jitter (Tellez et al. 2019): each image's haematoxylin, eosin and DAB "           \
    "concentrations c -> a*c + b, a ~ U[1-h, 1+h], b ~ U[-h, h]; 0.05 = their HED-light, 0.2 HED-strong; 0 = off; "   \
    "the CPU loader only (not data_on_device)")                                                                        \
  X(std::string, cell_size, "none",                                                                                    \
    "none | normalize: rescale every train and val image so that its white cell spans the median fraction of a "      \
    "seeded sample of 300 train images (engine/data/cell_size.h; the sample stain-ref takes), before augmentation; "   \
    "the fraction is stored in the checkpoint, and eval, predict, serve, ... then rescale by default (--cell-size "   \
    "auto); the CPU loader only (not data_on_device)")                                                                 \
  X(std::string, label_level, "class",                                                                                 \
    "what to learn: class (the data set's classes) | group (the application's coarse groups, e.g. the 9 "              \
    "white-blood-cell groups; to pre-train for fine-tuning)")                                                          \
  X(bool, use_packs, true,                                                                                             \
    "read DATA/<split>.pack (vitengine pack) when it holds exactly the split's images at the model's size; same "      \
    "pixels, no JPEG decoding")                                                                                        \
  X(bool, drop_last, true, "drop the last incomplete training batch of each epoch")                                    \
  X(int, threads, 2, "image decoding / augmentation threads of the loader")                                            \
  X(int, prefetch, 2, "batches the loader prepares ahead")                                                             \
  X(bool, data_on_device, false,                                                                                       \
    "device=cuda only: upload the train images to GPU memory once and augment each batch there in one kernel (same "   \
    "draws and pixels as the CPU loader); augment none or light")                                                      \
  /* ---- run ---- */                                                                                                  \
  X(int, seed, 0, "seed of init, data order, augmentation and dropout")                                                \
  X(std::string, device, "cpu", "cpu | cuda")                                                                          \
  X(std::string, attention, "own",                                                                                     \
    "device=cuda, bf16: the attention kernels: own (kernels/cuda/attention.cu) | cudnn (cuDNN's fused SDPA through "   \
    "cudnn-frontend, when built with it)")                                                                             \
  X(std::string, precision, "bf16",                                                                                    \
    "cuda arithmetic: bf16 (fp32 master weights and moments) | fp32; cpu is always fp32")                              \
  X(int, eval_every, 1, "validate every N epochs (and always after the last)")                                         \
  X(int, checkpoint_every, 0, "also write RUN/last.vit every N steps inside an epoch; 0 = at epoch ends only")         \
  X(int, log_every, 10, "progress line every N steps")                                                                 \
  X(int, max_steps, 0, "stop after this many steps in total (schedule unchanged); 0 = run all epochs")                 \
  X(float, time_budget_s, 0.0f,                                                                                        \
    "after epoch 1, lower epochs so training fits this many seconds (the schedule spans the new count, as the "        \
    "reference recipe's budget); 0 = off")                                                                             \
  X(bool, calibrate, true, "fit temperature scaling on val at the end and store it in best.vit")                       \
  X(int, ece_bins, 15, "equal-width confidence bins for ECE and the reliability diagram")                              \
  /* ---- fine-tuning ---- */                                                                                          \
  X(std::string, init, "",                                                                                            \
    "initial weights: a .vit, or torchvision's or timm's .pth or .safetensors (same patch, width, depth and MLP; "     \
    "position embeddings interpolated to image_size; head kept if the class count matches, else a new zero head)")    \
  X(int, freeze_backbone_epochs, 0, "with init: train only the head for this many epochs")                             \
  X(float, backbone_lr_mult, 1.0f, "with init: backbone lr = lr * this (head gets lr)")                               \
  X(float, layer_decay, 1.0f,                                                                                          \
    "layer-wise lr decay (MAE / BEiT fine-tuning): block l trains at lr * layer_decay^(depth - l), the patch and "     \
    "position embeddings at lr * layer_decay^(depth + 1), the final norm and head at lr; 1 = off")                    \
  /* ---- masked-autoencoder pretraining (vitengine pretrain; docs/pretraining.md) ---- */                            \
  X(float, mask_ratio, 0.75f, "pretrain: fraction of each image's patches hidden from the encoder")                    \
  X(bool, norm_pix_loss, true, "pretrain: reconstruct each patch's pixels normalised to zero mean, unit variance")     \
  X(int, decoder_dim, 128, "pretrain: decoder width")                                                                  \
  X(int, decoder_depth, 2, "pretrain: decoder blocks")                                                                 \
  X(int, decoder_heads, 4, "pretrain: decoder attention heads")                                                        \
  X(int, decoder_mlp_dim, 512, "pretrain: decoder MLP width")                                                          \
  X(int, pictures_every, 5, "pretrain: write RUN/pictures/epoch_NNN.png (originals, masked, reconstructions) every N " \
    "epochs and after the last; 0 = only after the last")

struct TrainConfig {
#define VIT_DECLARE_FIELD(type, name, def, doc) type name = def;
  VIT_TRAIN_CONFIG_FIELDS(VIT_DECLARE_FIELD)
#undef VIT_DECLARE_FIELD

  // Throws ConfigError naming the first bad field.
  void validate() const;
  // Replaces the data-dependent "auto" values (rotate_flip, translate) by what they mean for a set
  // whose images have (or have not) an orientation; the run writes the result.
  void resolve_auto(bool orientation_free);
  // The model this config trains (preset + overrides + num_classes), validated.
  ViTConfig model_config(int num_classes) const;

  nlohmann::json to_json() const;
  // Reads only the keys present; throws ConfigError on unknown keys or wrong types.
  void update_from_json(const nlohmann::json& j);
  // "key=value"; the value is parsed as the field's type. Throws ConfigError.
  void set(const std::string& key_value);

  // Defaults, then the file (if non-empty), then the overrides; validated.
  static TrainConfig load(const std::string& json_path, const std::vector<std::string>& overrides = {});

  // Field names that may differ between a checkpoint and a --resume without
  // changing the numbers (device, logging, checkpoint cadence, test hooks, max_steps).
  static bool resume_safe(const std::string& field);
  // Names of the fields whose values differ (resume-safe ones excluded when asked).
  static std::vector<std::string> differing_fields(const nlohmann::json& a, const nlohmann::json& b,
                                                   bool skip_resume_safe);
  // "f (checkpoint <value in saved>, now <value in now>), ..." for a --resume refusal.
  static std::string describe_differences(const std::vector<std::string>& fields, const nlohmann::json& saved,
                                          const nlohmann::json& now);

  struct FieldDoc {
    std::string name, type, default_value, doc;
  };
  static std::vector<FieldDoc> docs();
  // A markdown table of every field (docs/training.md, `vitengine train --help-config`).
  static std::string docs_markdown();
};

}  // namespace vit
