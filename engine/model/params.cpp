#include "engine/model/params.h"

#include <cstdlib>
#include <stdexcept>

#include "engine/model/vit.h"

namespace vit {

std::string layer_prefix(int i) { return "encoder.layers.encoder_layer_" + std::to_string(i) + "."; }

int layer_id(const std::string& name, int depth) {
  if (name.rfind("conv_proj.", 0) == 0 || name == "class_token" || name == "encoder.pos_embedding") return 0;
  const std::string blocks = "encoder.layers.encoder_layer_";
  if (name.rfind(blocks, 0) == 0) return 1 + std::atoi(name.c_str() + blocks.size());
  return depth + 1;
}

void add_param(std::vector<ParamInfo>& t, std::string name, std::vector<int64_t> shape, bool decay) {
  ParamInfo p;
  p.name = std::move(name);
  p.shape = std::move(shape);
  p.numel = 1;
  for (auto s : p.shape) p.numel *= (size_t)s;
  p.decay = decay;
  t.push_back(std::move(p));
}

void add_block_weights(std::vector<ParamInfo>& t, const std::string& prefix, int64_t D, int64_t M) {
  add_param(t, prefix + "self_attention.in_proj_weight", {3 * D, D}, true);
  add_param(t, prefix + "self_attention.out_proj.weight", {D, D}, true);
  add_param(t, prefix + "mlp.0.weight", {M, D}, true);
  add_param(t, prefix + "mlp.3.weight", {D, M}, true);
}

void add_block_rest(std::vector<ParamInfo>& t, const std::string& prefix, int64_t D, int64_t M) {
  add_param(t, prefix + "ln_1.weight", {D}, false);
  add_param(t, prefix + "ln_1.bias", {D}, false);
  add_param(t, prefix + "self_attention.in_proj_bias", {3 * D}, false);
  add_param(t, prefix + "self_attention.out_proj.bias", {D}, false);
  add_param(t, prefix + "ln_2.weight", {D}, false);
  add_param(t, prefix + "ln_2.bias", {D}, false);
  add_param(t, prefix + "mlp.0.bias", {M}, false);
  add_param(t, prefix + "mlp.3.bias", {D}, false);
}

void assign_offsets(std::vector<ParamInfo>& t) {
  size_t off = 0;
  for (auto& p : t) {
    p.offset = off;
    off += p.numel;
  }
}

std::vector<ParamInfo> param_table(const ViTConfig& c) {
  const int64_t D = c.dim, M = c.mlp_dim, P = c.patch, N = c.seq_len();
  std::vector<ParamInfo> t;
  // Weight matrices first (they get weight decay), so AdamW is one pass with a boundary.
  add_param(t, "conv_proj.weight", {D, c.channels, P, P}, true);
  for (int i = 0; i < c.depth; i++) add_block_weights(t, layer_prefix(i), D, M);
  add_param(t, "heads.head.weight", {c.num_classes, D}, true);
  // Then biases, norms and embeddings (no decay).
  add_param(t, "conv_proj.bias", {D}, false);
  add_param(t, "class_token", {1, 1, D}, false);
  add_param(t, "encoder.pos_embedding", {1, N, D}, false);
  for (int i = 0; i < c.depth; i++) add_block_rest(t, layer_prefix(i), D, M);
  add_param(t, "encoder.ln.weight", {D}, false);
  add_param(t, "encoder.ln.bias", {D}, false);
  add_param(t, "heads.head.bias", {c.num_classes}, false);
  assign_offsets(t);
  return t;
}

size_t param_offset(const std::vector<ParamInfo>& table, const std::string& name) {
  for (const auto& p : table)
    if (p.name == name) return p.offset;
  throw std::logic_error("param_offset: no tensor '" + name + "' in the table");
}

BlockOffsets block_offsets(const std::vector<ParamInfo>& t, const std::string& l) {
  auto off = [&](const std::string& name) { return param_offset(t, l + name); };
  return {off("ln_1.weight"), off("ln_1.bias"), off("self_attention.in_proj_weight"),
          off("self_attention.in_proj_bias"), off("self_attention.out_proj.weight"),
          off("self_attention.out_proj.bias"), off("ln_2.weight"), off("ln_2.bias"), off("mlp.0.weight"),
          off("mlp.0.bias"), off("mlp.3.weight"), off("mlp.3.bias")};
}

ParamOffsets param_offsets(const std::vector<ParamInfo>& table, int depth) {
  auto off = [&](const std::string& name) { return param_offset(table, name); };
  ParamOffsets o;
  o.conv_w = off("conv_proj.weight");
  o.conv_b = off("conv_proj.bias");
  o.cls = off("class_token");
  o.pos = off("encoder.pos_embedding");
  o.lnf_w = off("encoder.ln.weight");
  o.lnf_b = off("encoder.ln.bias");
  o.head_w = off("heads.head.weight");
  o.head_b = off("heads.head.bias");
  for (int i = 0; i < depth; i++) o.blocks.push_back(block_offsets(table, layer_prefix(i)));
  return o;
}

BlockParams bind_block(const BlockOffsets& b, float* base) {
  return {base + b.ln1_w, base + b.ln1_b, base + b.qkv_w,  base + b.qkv_b,  base + b.proj_w, base + b.proj_b,
          base + b.ln2_w, base + b.ln2_b, base + b.fc1_w,  base + b.fc1_b,  base + b.fc2_w,  base + b.fc2_b};
}

ModelParams bind(const ParamOffsets& o, float* base) {
  ModelParams p;
  p.conv_w = base + o.conv_w, p.conv_b = base + o.conv_b, p.cls = base + o.cls, p.pos = base + o.pos;
  p.lnf_w = base + o.lnf_w, p.lnf_b = base + o.lnf_b, p.head_w = base + o.head_w, p.head_b = base + o.head_b;
  for (const BlockOffsets& b : o.blocks) p.blocks.push_back(bind_block(b, base));
  return p;
}

}  // namespace vit
