// The one parameter layout both model paths use: every tensor's torchvision name, shape, offset
// in the arena and weight-decay flag (param_table), and the same offsets by role (ParamOffsets),
// which the CPU ViT (vit.cpp) and the GPU ViT (vit_cuda.cu) bind to their arenas. Checkpoints,
// the torchvision mapping and the CPU/GPU equality all rest on this layout.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vit {

struct ViTConfig;

// One named parameter tensor inside the arena; names are torchvision state_dict keys.
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;  // in floats, from the arena start
  size_t numel = 0;
  bool decay = false;  // weight decay applies (weight matrices only)
};

// The torchvision name prefix of encoder block i: "encoder.layers.encoder_layer_<i>.".
std::string layer_prefix(int i);
// The depth of a parameter for layer-wise learning-rate decay (BEiT, MAE fine-tuning): 0 for the
// patch embedding, class token and position embedding, i + 1 for block i, depth + 1 for the final
// LayerNorm and the head.
int layer_id(const std::string& name, int depth);

// Parameters in the order the arena stores them: every decayed tensor first.
std::vector<ParamInfo> param_table(const ViTConfig& cfg);

// Offsets (in elements) of one encoder block's tensors.
struct BlockOffsets {
  size_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};
// Offsets of every tensor by role. Add one to an arena base (parameters, gradients, a bf16
// shadow: the same layout) to get the tensor.
struct ParamOffsets {
  size_t conv_w, conv_b, cls, pos, lnf_w, lnf_b, head_w, head_b;
  std::vector<BlockOffsets> blocks;
};
ParamOffsets param_offsets(const std::vector<ParamInfo>& table, int depth);

// Building blocks of a parameter table (the masked autoencoder's decoder uses them too): one
// tensor; a block's four weight matrices (decayed) and its biases and norms, named prefix + the
// torchvision suffix; the offsets in table order; a tensor's offset by name (throws if absent);
// one block's offsets by prefix.
void add_param(std::vector<ParamInfo>& t, std::string name, std::vector<int64_t> shape, bool decay);
void add_block_weights(std::vector<ParamInfo>& t, const std::string& prefix, int64_t D, int64_t M);
void add_block_rest(std::vector<ParamInfo>& t, const std::string& prefix, int64_t D, int64_t M);
void assign_offsets(std::vector<ParamInfo>& t);
size_t param_offset(const std::vector<ParamInfo>& table, const std::string& name);
BlockOffsets block_offsets(const std::vector<ParamInfo>& table, const std::string& prefix);

// Pointers to one block's tensors, and to the whole model's: ParamOffsets added to one arena base
// (parameters or gradients).
struct BlockParams {
  float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
};
BlockParams bind_block(const BlockOffsets& o, float* base);
struct ModelParams {
  float *conv_w, *conv_b, *cls, *pos, *lnf_w, *lnf_b, *head_w, *head_b;
  std::vector<BlockParams> blocks;
};
ModelParams bind(const ParamOffsets& o, float* base);

// The seed of dropout site `site` (0 = after the embedding, then 3 per block) in a step whose
// dropout seed is `seed`: distinct sites draw independent masks, the same on both paths.
inline uint64_t site_seed(uint64_t seed, int site) { return seed * 0x100000001B3ull + 0x9E37u * uint64_t(site + 1); }

}  // namespace vit
