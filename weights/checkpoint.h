// vitengine's own model / checkpoint format (.vit): header with magic, version,
// config (JSON) and a per-tensor checksum; then raw little-endian tensors.
// Written atomically (temp file + rename).
//
// Layout (docs/weights.md has the details):
//   0   "VITENGIN"                 magic, 8 bytes
//   8   u32 version                kCheckpointVersion; any other value is refused
//   12  u32 flags                  0 (reserved)
//   16  u64 header_len             bytes of header JSON
//   24  32 bytes                   SHA-256 of the header JSON
//   56  header JSON                config, meta, has_optimizer, train_state, tensor table
//       zero padding to a multiple of 64
//   D   data                       each tensor 64-byte aligned, offsets relative to D,
//                                  each with its own SHA-256 in the table
// Every byte is covered by a check (magic, version, header hash, zero padding,
// tensor hashes, exact file length), so any corruption is refused by name.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/model/vit.h"

namespace vit {

// What a model needs besides its weights to be used on new images.
struct ModelMeta {
  std::vector<std::string> class_names;  // output order
  float mean[3] = {0.5f, 0.5f, 0.5f};    // channel statistics of the train split
  float std[3] = {0.25f, 0.25f, 0.25f};
  float temperature = 1.0f;  // calibration (fitted on val)
  nlohmann::json extra;      // free-form: run config, version, metrics
};

// A tensor stored beside the model's own, under the name "extra/<name>" (fp32): what a checkpoint
// of a larger training setup needs besides the ViT, e.g. the masked autoencoder's decoder and its
// moments (engine/train/pretrain.cpp). Loaders that know nothing of it ignore it.
struct ExtraTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
// What save_model writes of one: values are read from `data` (numel = the shape's product).
struct ExtraTensorRef {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
};

struct LoadedModel {
  std::unique_ptr<ViT> model;
  ModelMeta meta;
  nlohmann::json train_state;  // empty unless saved with the optimizer
  bool has_optimizer = false;
  std::map<std::string, ExtraTensor> extras;  // by name, without "extra/"
};

// with_optimizer also stores AdamW m and v and train_state (step, RNG, config).
void save_model(const std::string& path, const ViT& model, const ModelMeta& meta, bool with_optimizer = false,
                const nlohmann::json& train_state = {}, const std::vector<ExtraTensorRef>& extras = {});
// Throws std::runtime_error naming the file and the fault (bad magic, version,
// checksum, truncated). Weights are fp32 or bf16 on disk; always fp32 in memory.
LoadedModel load_model(const std::string& path);

// ---- additions (weights layer) ----
constexpr uint32_t kCheckpointVersion = 1;

// load_model from bytes in memory (tests, fuzzing); `what` names the source in errors.
LoadedModel load_model_memory(const uint8_t* data, size_t n, const std::string& what);

// Weights stored as bfloat16 (round to nearest even): half the size, for shipping a
// trained model. No optimizer state (resuming needs fp32 moments). Loads as fp32.
void save_model_bf16(const std::string& path, const ViT& model, const ModelMeta& meta);

// Every ViTConfig field, by name. from_json throws std::runtime_error naming `what`
// and the missing / mistyped field.
nlohmann::json config_to_json(const ViTConfig& cfg);
ViTConfig config_from_json(const nlohmann::json& j, const std::string& what);
nlohmann::json meta_to_json(const ModelMeta& meta);
ModelMeta meta_from_json(const nlohmann::json& j, const std::string& what);

// Throws std::runtime_error unless `got` has the same architecture as `expected`
// (ViTConfig::same_architecture); the message names `what` and both configs.
void require_same_architecture(const ViTConfig& expected, const ViTConfig& got, const std::string& what);
// Copies the weights (and AdamW moments if src has them and with_optimizer) of a loaded
// checkpoint into an existing model, after require_same_architecture.
void load_weights_into(ViT& dst, const LoadedModel& src, bool with_optimizer = false);

}  // namespace vit
