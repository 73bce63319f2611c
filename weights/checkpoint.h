// vitengine's own model / checkpoint format (.vit): header with magic, version,
// config (JSON) and a per-tensor checksum; then raw little-endian tensors.
// Written atomically (temp file + rename).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/vit.h"

namespace vit {

// What a model needs besides its weights to be used on new images.
struct ModelMeta {
  std::vector<std::string> class_names;  // output order
  float mean[3] = {0.5f, 0.5f, 0.5f};    // channel statistics of the train split
  float std[3] = {0.25f, 0.25f, 0.25f};
  float temperature = 1.0f;              // calibration (fitted on val)
  nlohmann::json extra;                  // free-form: run config, version, metrics
};

struct LoadedModel {
  std::unique_ptr<ViT> model;
  ModelMeta meta;
  nlohmann::json train_state;  // empty unless saved with the optimizer
  bool has_optimizer = false;
};

// with_optimizer also stores AdamW m and v and train_state (step, RNG, config).
void save_model(const std::string& path, const ViT& model, const ModelMeta& meta,
                bool with_optimizer = false, const nlohmann::json& train_state = {});
// Throws std::runtime_error naming the file and the fault (bad magic, version,
// checksum, truncated). Weights are fp32 or bf16 on disk; always fp32 in memory.
LoadedModel load_model(const std::string& path);

}  // namespace vit
