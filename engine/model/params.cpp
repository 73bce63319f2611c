#include "engine/model/params.h"

#include <stdexcept>
#include <unordered_map>

#include "engine/model/vit.h"

namespace vit {

std::string layer_prefix(int i) { return "encoder.layers.encoder_layer_" + std::to_string(i) + "."; }

std::vector<ParamInfo> param_table(const ViTConfig& c) {
  const int64_t D = c.dim, M = c.mlp_dim, P = c.patch, N = c.seq_len();
  std::vector<ParamInfo> t;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    ParamInfo p;
    p.name = std::move(name);
    p.shape = std::move(shape);
    p.numel = 1;
    for (auto s : p.shape) p.numel *= (size_t)s;
    p.decay = decay;
    t.push_back(std::move(p));
  };
  auto layer = layer_prefix;
  // Weight matrices first (they get weight decay), so AdamW is one pass with a boundary.
  add("conv_proj.weight", {D, c.channels, P, P}, true);
  for (int i = 0; i < c.depth; i++) {
    add(layer(i) + "self_attention.in_proj_weight", {3 * D, D}, true);
    add(layer(i) + "self_attention.out_proj.weight", {D, D}, true);
    add(layer(i) + "mlp.0.weight", {M, D}, true);
    add(layer(i) + "mlp.3.weight", {D, M}, true);
  }
  add("heads.head.weight", {c.num_classes, D}, true);
  // Then biases, norms and embeddings (no decay).
  add("conv_proj.bias", {D}, false);
  add("class_token", {1, 1, D}, false);
  add("encoder.pos_embedding", {1, N, D}, false);
  for (int i = 0; i < c.depth; i++) {
    add(layer(i) + "ln_1.weight", {D}, false);
    add(layer(i) + "ln_1.bias", {D}, false);
    add(layer(i) + "self_attention.in_proj_bias", {3 * D}, false);
    add(layer(i) + "self_attention.out_proj.bias", {D}, false);
    add(layer(i) + "ln_2.weight", {D}, false);
    add(layer(i) + "ln_2.bias", {D}, false);
    add(layer(i) + "mlp.0.bias", {M}, false);
    add(layer(i) + "mlp.3.bias", {D}, false);
  }
  add("encoder.ln.weight", {D}, false);
  add("encoder.ln.bias", {D}, false);
  add("heads.head.bias", {c.num_classes}, false);
  size_t off = 0;
  for (auto& p : t) {
    p.offset = off;
    off += p.numel;
  }
  return t;
}

ParamOffsets param_offsets(const std::vector<ParamInfo>& table, int depth) {
  std::unordered_map<std::string, size_t> at;
  for (const auto& p : table) at[p.name] = p.offset;
  auto off = [&](const std::string& name) {
    auto it = at.find(name);
    if (it == at.end()) throw std::logic_error("param_offsets: no tensor '" + name + "' in the table");
    return it->second;
  };
  ParamOffsets o;
  o.conv_w = off("conv_proj.weight");
  o.conv_b = off("conv_proj.bias");
  o.cls = off("class_token");
  o.pos = off("encoder.pos_embedding");
  o.lnf_w = off("encoder.ln.weight");
  o.lnf_b = off("encoder.ln.bias");
  o.head_w = off("heads.head.weight");
  o.head_b = off("heads.head.bias");
  for (int i = 0; i < depth; i++) {
    const std::string l = layer_prefix(i);
    o.blocks.push_back({off(l + "ln_1.weight"), off(l + "ln_1.bias"), off(l + "self_attention.in_proj_weight"),
                        off(l + "self_attention.in_proj_bias"), off(l + "self_attention.out_proj.weight"),
                        off(l + "self_attention.out_proj.bias"), off(l + "ln_2.weight"), off(l + "ln_2.bias"),
                        off(l + "mlp.0.weight"), off(l + "mlp.0.bias"), off(l + "mlp.3.weight"),
                        off(l + "mlp.3.bias")});
  }
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
