#include "weights/torchvision.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

#include "weights/torch_pth.h"

namespace vit {
namespace {

const HostTensor& need(const StateDict& sd, const std::string& key, size_t ndim) {
  auto it = sd.find(key);
  if (it == sd.end())
    throw std::runtime_error("missing key '" + key + "' (is this a torchvision VisionTransformer state dict?)");
  if (it->second.shape.size() != ndim)
    throw std::runtime_error("key '" + key + "' has shape " + shape_str(it->second.shape) + ", expected " +
                             std::to_string(ndim) + " dimensions");
  return it->second;
}

std::string layer_key(int i, const std::string& rest) { return layer_prefix(i) + rest; }

// Compatible backbones: everything that fixes a parameter shape except the pos-embedding
// length (image size) and the head (classes), which adapt_state_dict changes.
void require_compatible(const ViTConfig& src, const ViTConfig& target, const std::string& what) {
  if (src.patch != target.patch || src.channels != target.channels || src.dim != target.dim ||
      src.depth != target.depth || src.mlp_dim != target.mlp_dim)
    throw std::runtime_error(what + ": backbone does not match: the file has " + src.to_string() + ", the target is " +
                             target.to_string() + " (patch, channels, dim, depth and mlp_dim must agree)");
}

// Resizes the position embeddings and replaces the head in place so that `sd` fits
// `target`. Returns true if the head was replaced.
bool adapt_state_dict(StateDict& sd, const ViTConfig& src, const ViTConfig& target) {
  if (src.grid() != target.grid()) {
    HostTensor& pos = sd.at("encoder.pos_embedding");
    std::vector<float> out(size_t(target.seq_len()) * target.dim);
    interpolate_pos_embedding(pos.data.data(), src.grid(), out.data(), target.grid(), target.dim);
    pos.data = std::move(out);
    pos.shape = {1, target.seq_len(), target.dim};
  }
  if (src.num_classes == target.num_classes) return false;
  // torchvision zero-initialises a new head: the first steps then train the head alone
  // from features the backbone already produces, without random-logit noise.
  sd["heads.head.weight"] =
      HostTensor{{target.num_classes, target.dim}, std::vector<float>(size_t(target.num_classes) * target.dim, 0.0f)};
  sd["heads.head.bias"] = HostTensor{{target.num_classes}, std::vector<float>(size_t(target.num_classes), 0.0f)};
  return true;
}

HostTensor zeros(std::vector<int64_t> shape) {
  return HostTensor{shape, std::vector<float>(size_t(checked_numel(shape, "head")), 0.0f)};
}

// A backbone saved without a classifier (timm's num_classes=0, the MAE and DINO encoders) gets the
// zero-initialised head of `num_classes` that replacing a head gives: a head it never had is as new
// as a replaced one. Returns true if it added one; without num_classes there is no head to make.
bool add_missing_head(StateDict& sd, int num_classes, const std::string& path) {
  const auto conv = sd.find("conv_proj.weight");
  if (sd.count("heads.head.weight") || sd.count("heads.head.bias") || conv == sd.end() || conv->second.shape.empty())
    return false;  // a head, or not a ViT at all: infer_torchvision_config names what is missing
  if (num_classes <= 0)
    throw std::runtime_error(path + ": the checkpoint has no classification head (heads.head or head): a backbone, "
                                    "as timm's num_classes=0 and the MAE and DINO encoders save them; give the "
                                    "number of classes of a new head (--num-classes N)");
  const int64_t dim = conv->second.shape[0];
  sd["heads.head.weight"] = zeros({num_classes, dim});
  sd["heads.head.bias"] = zeros({num_classes});
  return true;
}

}  // namespace

StateDict read_torch_weights(const std::string& path) {
  std::vector<uint8_t> b = read_file_bytes(path);
  if (b.size() >= 4 && b[0] == 'P' && b[1] == 'K') return read_pth_memory(b.data(), b.size(), path);
  if (b.size() >= 8 && std::memcmp(b.data(), "VITENGIN", 8) == 0)
    throw std::runtime_error(path + ": this is already a vitengine model (.vit), not a torchvision checkpoint");
  if (b.size() >= 9 && b[8] == '{') return parse_safetensors(b.data(), b.size(), path);
  if (b.size() >= 2 && b[0] == 0x80 && b[1] <= 5)
    throw std::runtime_error(path + ": a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current PyTorch");
  throw std::runtime_error(path + ": neither a PyTorch zip checkpoint nor a safetensors file");
}

namespace {

// timm's VisionTransformer names (timm/models/vision_transformer.py) beside torchvision's, per block
// (after "blocks.N." / layer_prefix(N)) and outside the blocks. The tensors have the same layout:
// q, k and v are stacked in the same order in both, so renaming is the whole conversion.
const std::pair<const char*, const char*> kTimmBlockKeys[] = {{"norm1.weight", "ln_1.weight"},
                                                              {"norm1.bias", "ln_1.bias"},
                                                              {"attn.qkv.weight", "self_attention.in_proj_weight"},
                                                              {"attn.qkv.bias", "self_attention.in_proj_bias"},
                                                              {"attn.proj.weight", "self_attention.out_proj.weight"},
                                                              {"attn.proj.bias", "self_attention.out_proj.bias"},
                                                              {"norm2.weight", "ln_2.weight"},
                                                              {"norm2.bias", "ln_2.bias"},
                                                              {"mlp.fc1.weight", "mlp.0.weight"},
                                                              {"mlp.fc1.bias", "mlp.0.bias"},
                                                              {"mlp.fc2.weight", "mlp.3.weight"},
                                                              {"mlp.fc2.bias", "mlp.3.bias"}};
const std::pair<const char*, const char*> kTimmTopKeys[] = {{"cls_token", "class_token"},
                                                            {"pos_embed", "encoder.pos_embedding"},
                                                            {"patch_embed.proj.weight", "conv_proj.weight"},
                                                            {"patch_embed.proj.bias", "conv_proj.bias"},
                                                            {"norm.weight", "encoder.ln.weight"},
                                                            {"norm.bias", "encoder.ln.bias"},
                                                            {"head.weight", "heads.head.weight"},
                                                            {"head.bias", "heads.head.bias"}};

// timm features the engine's ViT does not have, by a key they bring, with what to say.
const std::pair<const char*, const char*> kTimmUnsupported[] = {
    {"fc_norm.", "global average pooling (fc_norm): vitengine classifies from the class token"},
    {"reg_token", "register tokens"},
    {".ls1.", "layer scale (init_values)"},
    {".q_norm.", "query/key normalisation (qk_norm)"},
    {"norm_pre.", "a pre-norm before the blocks (CLIP-style)"},
    {"attn_pool.", "attention pooling (global_pool='map')"}};

bool is_timm_vit(const StateDict& sd) { return sd.count("patch_embed.proj.weight") > 0; }

// "blocks.N.rest" -> (N, rest); N = -1 when the key is not a block's.
std::pair<int, std::string> timm_block(const std::string& key) {
  if (key.rfind("blocks.", 0) != 0) return {-1, ""};
  const size_t dot = key.find('.', 7);
  if (dot == std::string::npos || dot == 7) return {-1, ""};
  for (size_t i = 7; i < dot; ++i)
    if (key[i] < '0' || key[i] > '9') return {-1, ""};
  return {std::stoi(key.substr(7, dot - 7)), key.substr(dot + 1)};
}

std::string timm_to_torchvision_key(const std::string& key) {
  for (const auto& [what, why] : kTimmUnsupported)
    if (key.find(what) != std::string::npos)
      throw std::runtime_error("timm checkpoint uses " + std::string(why) + " (key '" + key +
                               "'), which vitengine's ViT does not have");
  for (const auto& [t, tv] : kTimmTopKeys)
    if (key == t) return tv;
  const auto [n, rest] = timm_block(key);
  if (n >= 0)
    for (const auto& [t, tv] : kTimmBlockKeys)
      if (rest == t) return layer_prefix(n) + tv;
  return key;  // unknown: check_state_dict reports it by name
}

}  // namespace

StateDict timm_state_dict_from_vit(const ViT& model) {
  StateDict out;
  for (auto& [key, t] : state_dict_from_vit(model)) {
    std::string name;
    for (const auto& [tm, tv] : kTimmTopKeys)
      if (key == tv) name = tm;
    for (int n = 0; name.empty() && n < model.config().depth; ++n)
      if (key.rfind(layer_prefix(n), 0) == 0)
        for (const auto& [tm, tv] : kTimmBlockKeys)
          if (key.substr(layer_prefix(n).size()) == tv) name = "blocks." + std::to_string(n) + "." + tm;
    if (name.empty()) throw std::logic_error("no timm name for parameter '" + key + "'");
    out.emplace(name, std::move(t));
  }
  return out;
}

namespace {

// A model saved from inside a wrapper has the wrapper's attribute path before every key:
// DistributedDataParallel's "module." (timm's load_checkpoint strips it), a Lightning module's
// "model." or whatever it named its ViT, or both. The path is what precedes the patch embedding's
// key; it is stripped when every key carries it.
void strip_wrapper_prefix(StateDict& sd) {
  std::string prefix;
  for (const std::string key : {".conv_proj.weight", ".patch_embed.proj.weight"})
    for (const auto& [k, v] : sd)
      if (k.size() > key.size() && k.compare(k.size() - key.size(), key.size(), key) == 0)
        prefix = k.substr(0, k.size() - key.size() + 1);
  if (prefix.empty()) return;
  for (const auto& [k, v] : sd)
    if (k.rfind(prefix, 0) != 0) return;
  StateDict out;
  for (auto& [k, v] : sd) out.emplace(k.substr(prefix.size()), std::move(v));
  sd = std::move(out);
}

}  // namespace

void normalize_torchvision_keys(StateDict& sd) {
  strip_wrapper_prefix(sd);
  const bool timm = is_timm_vit(sd);
  StateDict out;
  for (auto& [k, v] : sd) {
    std::string key = timm ? timm_to_torchvision_key(k) : k;
    for (auto [from, to] :
         {std::pair<const char*, const char*>{".mlp.linear_1.", ".mlp.0."}, {".mlp.linear_2.", ".mlp.3."}}) {
      size_t p = key.find(from);
      if (p != std::string::npos) key = key.substr(0, p) + to + key.substr(p + std::strlen(from));
    }
    if (!out.emplace(key, std::move(v)).second)
      throw std::runtime_error("key '" + key + "' appears under both its old and new name");
  }
  sd = std::move(out);
}

ViTConfig infer_torchvision_config(const StateDict& sd, int heads) {
  ViTConfig c;
  c.name = "torchvision";
  const HostTensor& conv = need(sd, "conv_proj.weight", 4);
  if (conv.shape[2] != conv.shape[3])
    throw std::runtime_error("conv_proj.weight " + shape_str(conv.shape) + " has a non-square patch");
  c.dim = int(conv.shape[0]);
  c.channels = int(conv.shape[1]);
  c.patch = int(conv.shape[2]);
  const HostTensor& pos = need(sd, "encoder.pos_embedding", 3);
  int64_t np = pos.shape[1] - 1;
  int64_t g = int64_t(std::llround(std::sqrt(double(std::max<int64_t>(np, 0)))));
  if (pos.shape[0] != 1 || pos.shape[2] != c.dim || np < 1 || g * g != np)
    throw std::runtime_error("encoder.pos_embedding " + shape_str(pos.shape) + " is not (1, grid^2 + 1, " +
                             std::to_string(c.dim) + ")");
  c.image_size = int(g) * c.patch;
  c.depth = 0;
  while (sd.count(layer_key(c.depth, "ln_1.weight"))) ++c.depth;
  if (c.depth == 0) throw std::runtime_error("missing key '" + layer_key(0, "ln_1.weight") + "': no encoder layers");
  c.mlp_dim = int(need(sd, layer_key(0, "mlp.0.weight"), 2).shape[0]);
  c.num_classes = int(need(sd, "heads.head.weight", 2).shape[0]);
  if (heads > 0) {
    c.heads = heads;
  } else if (c.dim % 64 == 0) {
    c.heads = c.dim / 64;
  } else {
    throw std::runtime_error("cannot infer the head count for dim " + std::to_string(c.dim) +
                             " (not a multiple of 64): give it (--heads)");
  }
  try {
    c.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error("inferred config " + c.to_string() + " is invalid: " + e.what());
  }
  // Name it after the preset whose backbone it is (image size and classes aside), so
  // that logs say vit_b16 for torchvision's vit_b_16.
  for (const char* p : {"vit_ti16", "vit_s16", "vit_b16"}) {
    ViTConfig q = ViTConfig::preset(p);
    if (q.patch == c.patch && q.dim == c.dim && q.depth == c.depth && q.heads == c.heads && q.mlp_dim == c.mlp_dim)
      c.name = p;
  }
  return c;
}

namespace {

// A NaN or an infinity in a weight makes every prediction NaN ("nan%"), and nothing else would say
// why: a diverged run's or a corrupt checkpoint is refused here, naming the tensor and the place.
void require_finite(const StateDict& sd, const std::string& what) {
  for (const auto& [k, t] : sd) {
    const auto bad = std::find_if(t.data.begin(), t.data.end(), [](float v) { return !std::isfinite(v); });
    if (bad != t.data.end())
      throw std::runtime_error(what + ": tensor '" + k + "' holds " + (std::isnan(*bad) ? "NaN" : "an infinity") +
                               " at element " + std::to_string(bad - t.data.begin()) + " of " +
                               std::to_string(t.data.size()) + ": a diverged or corrupt checkpoint");
  }
}

}  // namespace

void check_state_dict(const StateDict& sd, const ViTConfig& cfg, const std::string& what) {
  const auto table = param_table(cfg);
  std::set<std::string> names;
  std::vector<std::string> missing, wrong, extra;
  for (const auto& p : table) {
    names.insert(p.name);
    auto it = sd.find(p.name);
    if (it == sd.end())
      missing.push_back(p.name);
    else if (it->second.shape != p.shape)
      wrong.push_back(p.name + " " + shape_str(it->second.shape) + " (expected " + shape_str(p.shape) + ")");
  }
  for (const auto& [k, v] : sd)
    if (!names.count(k)) extra.push_back(k);
  if (!missing.empty() || !wrong.empty() || !extra.empty()) {
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + v[i];
      if (v.size() > 8) s += ", ... (" + std::to_string(v.size()) + " in all)";
      return s;
    };
    std::string msg = what + ": state dict does not fit " + cfg.to_string() + ":";
    if (!missing.empty()) msg += " missing keys: " + list(missing) + ";";
    if (!extra.empty()) msg += " unexpected keys: " + list(extra) + ";";
    if (!wrong.empty()) msg += " wrong shapes: " + list(wrong) + ";";
    msg.pop_back();
    throw std::runtime_error(msg);
  }
  require_finite(sd, what);
}

std::unique_ptr<ViT> vit_from_state_dict(const StateDict& sd, const ViTConfig& cfg, const std::string& what) {
  check_state_dict(sd, cfg, what);
  auto m = std::make_unique<ViT>(cfg);
  const auto& table = m->params();
  for (const auto& p : table) {
    const HostTensor& t = sd.at(p.name);
    std::memcpy(m->param_data() + p.offset, t.data.data(), p.numel * sizeof(float));
  }
  return m;
}

StateDict state_dict_from_vit(const ViT& model) {
  StateDict sd;
  for (const auto& p : model.params()) {
    const float* src = model.param_data() + p.offset;
    sd[p.name] = HostTensor{p.shape, std::vector<float>(src, src + p.numel)};
  }
  return sd;
}

void interpolate_pos_embedding(const float* src, int gs, float* dst, int gd, int dim) {
  if (gs < 1 || gd < 1 || dim < 1) throw std::runtime_error("interpolate_pos_embedding: bad grid or dim");
  std::memcpy(dst, src, size_t(dim) * sizeof(float));  // class token: unchanged
  // Cubic convolution weights (Keys, a = -0.75, PyTorch's choice) for the 4 taps around
  // a source coordinate with fractional part t.
  auto weights = [](double t, double w[4]) {
    const double A = -0.75;
    auto near = [A](double x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };       // |x| <= 1
    auto far = [A](double x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };  // 1 < |x| < 2
    w[0] = far(t + 1);
    w[1] = near(t);
    w[2] = near(1 - t);
    w[3] = far(2 - t);
  };
  // align_corners=True: the corner patches map onto each other exactly.
  const double scale = gd > 1 ? double(gs - 1) / double(gd - 1) : 0.0;
  std::vector<int> idx(size_t(gd) * 4);
  std::vector<double> w(size_t(gd) * 4);
  for (int o = 0; o < gd; ++o) {
    double x = scale * o;
    int i0 = int(std::floor(x));
    weights(x - i0, &w[size_t(o) * 4]);
    for (int k = 0; k < 4; ++k) idx[size_t(o) * 4 + k] = std::min(std::max(i0 - 1 + k, 0), gs - 1);  // edge clamp
  }
  const float* s = src + dim;  // (gs, gs, D) row-major: row y, column x
  float* d = dst + dim;
  std::vector<double> acc(static_cast<size_t>(dim));
  for (int oy = 0; oy < gd; ++oy)
    for (int ox = 0; ox < gd; ++ox) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int ky = 0; ky < 4; ++ky)
        for (int kx = 0; kx < 4; ++kx) {
          double wt = w[size_t(oy) * 4 + ky] * w[size_t(ox) * 4 + kx];
          const float* row = s + (size_t(idx[size_t(oy) * 4 + ky]) * gs + size_t(idx[size_t(ox) * 4 + kx])) * dim;
          for (int c = 0; c < dim; ++c) acc[size_t(c)] += wt * row[c];
        }
      float* out = d + (size_t(oy) * gd + ox) * dim;
      for (int c = 0; c < dim; ++c) out[c] = float(acc[size_t(c)]);
    }
}

std::unique_ptr<ViT> import_torchvision(const std::string& path, const ImportOptions& opt, ViTConfig* source_cfg) {
  StateDict sd = read_torch_weights(path);
  normalize_torchvision_keys(sd);
  add_missing_head(sd, opt.num_classes, path);
  ViTConfig src;
  try {
    src = infer_torchvision_config(sd, opt.heads);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  if (source_cfg) *source_cfg = src;
  // Check the file as it is first, so that a bad key is reported before any adaptation.
  check_state_dict(sd, src, path);
  ViTConfig target = src;
  if (opt.image_size > 0) target.image_size = opt.image_size;
  if (opt.num_classes > 0) target.num_classes = opt.num_classes;
  if (opt.dropout >= 0) target.dropout = opt.dropout;
  if (target.image_size != src.image_size || target.num_classes != src.num_classes) {
    try {
      target.validate();
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ": target config " + target.to_string() + " is invalid: " + e.what());
    }
    adapt_state_dict(sd, src, target);
  }
  return vit_from_state_dict(sd, target, path);
}

ModelMeta imagenet_meta(int num_classes) {
  ModelMeta m;
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  for (int c = 0; c < 3; ++c) m.mean[c] = mean[c], m.std[c] = sd[c];
  for (int i = 0; i < num_classes; ++i) m.class_names.push_back("class_" + std::to_string(i));
  return m;
}

LoadedModel load_init(const std::string& path, const ViTConfig& target) {
  try {
    target.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error("load_init: target config " + target.to_string() + " is invalid: " + e.what());
  }
  LoadedModel out;
  StateDict sd;
  ViTConfig src;
  bool new_head = false;
  char magic[8] = {};
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    size_t got = std::fread(magic, 1, 8, f);
    (void)got;
    std::fclose(f);
  }
  if (std::memcmp(magic, "VITENGIN", 8) == 0) {
    LoadedModel lm = load_model(path);
    src = lm.model->config();
    if (src.heads != target.heads)
      throw std::runtime_error(path + ": the model has " + std::to_string(src.heads) + " heads, the target " +
                               std::to_string(target.heads) + " (" + src.to_string() + " vs " + target.to_string() +
                               ")");
    out.meta = lm.meta;
    sd = state_dict_from_vit(*lm.model);  // lm (and its optimizer arena) is freed below
  } else {
    sd = read_torch_weights(path);
    normalize_torchvision_keys(sd);
    new_head = add_missing_head(sd, target.num_classes, path);
    try {
      src = infer_torchvision_config(sd, target.heads);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ": " + e.what());
    }
    check_state_dict(sd, src, path);  // strict key / shape check of the file itself
    out.meta = imagenet_meta(src.num_classes);
  }
  require_compatible(src, target, path);
  if (adapt_state_dict(sd, src, target) || new_head) out.meta.class_names.clear();
  out.model = vit_from_state_dict(sd, target, path);
  out.meta.extra["init_from"] = path;
  out.meta.extra["init_config"] = src.to_string();
  return out;
}

void export_safetensors(const std::string& path, const ViT& model, const ModelMeta& meta, SafetensorsDtype dtype,
                        KeyLayout layout) {
  std::map<std::string, std::string> md = {{"format", "pt"},
                                           {"vitengine_config", config_to_json(model.config()).dump()},
                                           {"class_names", nlohmann::json(meta.class_names).dump()},
                                           {"mean", nlohmann::json({meta.mean[0], meta.mean[1], meta.mean[2]}).dump()},
                                           {"std", nlohmann::json({meta.std[0], meta.std[1], meta.std[2]}).dump()}};
  write_safetensors(path, layout == KeyLayout::kTimm ? timm_state_dict_from_vit(model) : state_dict_from_vit(model),
                    dtype, md);
}

}  // namespace vit
