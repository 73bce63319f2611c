#include "engine/train/train_config.h"

#include <charconv>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/util/json.h"

namespace vit {
namespace {

const char* type_name(const nlohmann::json& v) { return v.type_name(); }

// ---- reading one typed value from JSON or from a --set string ----
void read_json(const std::string& key, const nlohmann::json& v, std::string& out) {
  if (!v.is_string()) throw ConfigError("config field '" + key + "': expected a string, got " + type_name(v));
  out = v.get<std::string>();
}
// What an int field holds: a round bound inside int's range, named in the out-of-range message.
constexpr long kIntLimit = 2000000000L;
std::string out_of_range(const std::string& got) {
  return "out of range: must be in [" + std::to_string(-kIntLimit) + ", " + std::to_string(kIntLimit) + "], got " +
         got;
}

void read_json(const std::string& key, const nlohmann::json& v, int& out) {
  if (!v.is_number()) throw ConfigError("config field '" + key + "': expected an integer, got " + type_name(v));
  double d = v.get<double>();
  if (d != std::floor(d)) throw ConfigError("config field '" + key + "': expected an integer, got " + v.dump());
  if (std::fabs(d) > double(kIntLimit)) throw ConfigError("config field '" + key + "': " + out_of_range(v.dump()));
  out = int(d);
}
void read_json(const std::string& key, const nlohmann::json& v, float& out) {
  if (!v.is_number()) throw ConfigError("config field '" + key + "': expected a number, got " + type_name(v));
  out = v.get<float>();
}
void read_json(const std::string& key, const nlohmann::json& v, bool& out) {
  if (!v.is_boolean()) throw ConfigError("config field '" + key + "': expected true or false, got " + type_name(v));
  out = v.get<bool>();
}

void read_text(const std::string& key, const std::string& s, std::string& out) { out = s; }
void read_text(const std::string& key, const std::string& s, int& out) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0') throw ConfigError("--set " + key + ": expected an integer, got '" + s + "'");
  // strtol saturates with ERANGE on a number wider than long: out of range as well
  if (errno == ERANGE || v < -kIntLimit || v > kIntLimit) throw ConfigError("--set " + key + ": " + out_of_range(s));
  out = int(v);
}
void read_text(const std::string& key, const std::string& s, float& out) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno != 0)
    throw ConfigError("--set " + key + ": expected a number, got '" + s + "'");
  out = float(v);
}
void read_text(const std::string& key, const std::string& s, bool& out) {
  if (s == "true" || s == "1")
    out = true;
  else if (s == "false" || s == "0")
    out = false;
  else
    throw ConfigError("--set " + key + ": expected true or false, got '" + s + "'");
}

template <typename T>
const char* type_label();
template <>
const char* type_label<std::string>() {
  return "string";
}
template <>
const char* type_label<int>() {
  return "int";
}
template <>
const char* type_label<float>() {
  return "float";
}
template <>
const char* type_label<bool>() {
  return "bool";
}

std::string default_text(const std::string& v) { return "\"" + v + "\""; }
std::string default_text(int v) { return std::to_string(v); }
std::string default_text(bool v) { return v ? "true" : "false"; }
// A float as the shortest decimal that reads back as the same float (2.5e-06, not
// 2.499999936844688e-06): config.json shows the value as it was typed.
double as_typed(float v) {
  char b[32];
  const auto r = std::to_chars(b, b + sizeof b, v);
  return std::strtod(std::string(b, r.ptr).c_str(), nullptr);
}
template <class T>
const T& as_typed(const T& v) {
  return v;
}
std::string default_text(float v) { return nlohmann::json(as_typed(v)).dump(); }

[[noreturn]] void bad(const std::string& field, const std::string& why) {
  throw ConfigError("config field '" + field + "' " + why);
}

}  // namespace

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j = nlohmann::json::object();
#define VIT_WRITE_FIELD(type, name, def, doc) j[#name] = as_typed(name);
  VIT_TRAIN_CONFIG_FIELDS(VIT_WRITE_FIELD)
#undef VIT_WRITE_FIELD
  return j;
}

void TrainConfig::update_from_json(const nlohmann::json& j) {
  if (!j.is_object())
    throw ConfigError("config: expected a JSON object at the top level, got " + std::string(j.type_name()));
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (!key.empty() && key[0] == '_') continue;  // "_comment" and friends
    // Test hooks that older runs wrote into their config.json: no longer config fields
    // (TrainRequest::hooks), accepted and dropped so that those files still load.
    if (key == "debug_nan_at_step" || key == "debug_sleep_ms") continue;
    bool known = false;
#define VIT_READ_FIELD(type, name, def, doc) \
  if (key == #name) {                        \
    read_json(key, it.value(), name);        \
    known = true;                            \
  }
    VIT_TRAIN_CONFIG_FIELDS(VIT_READ_FIELD)
#undef VIT_READ_FIELD
    if (!known) throw ConfigError("config: unknown field '" + key + "' (see `vitengine train --help-config`)");
  }
}

void TrainConfig::set(const std::string& kv) {
  auto eq = kv.find('=');
  if (eq == std::string::npos || eq == 0) throw ConfigError("--set expects key=value, got '" + kv + "'");
  std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
  bool known = false;
#define VIT_SET_FIELD(type, name, def, doc) \
  if (key == #name) {                       \
    read_text(key, value, name);            \
    known = true;                           \
  }
  VIT_TRAIN_CONFIG_FIELDS(VIT_SET_FIELD)
#undef VIT_SET_FIELD
  if (!known) throw ConfigError("--set: unknown field '" + key + "' (see `vitengine train --help-config`)");
}

TrainConfig TrainConfig::load(const std::string& json_path, const std::vector<std::string>& overrides) {
  TrainConfig c;
  if (!json_path.empty()) {
    nlohmann::json j;
    try {
      j = read_hand_written_json(json_path, "config file");
    } catch (const std::runtime_error& e) {
      throw ConfigError(e.what());
    }
    try {
      c.update_from_json(j);
    } catch (const ConfigError& e) {
      throw ConfigError(json_path + ": " + e.what());
    }
  }
  for (const auto& o : overrides) c.set(o);
  c.validate();
  return c;
}

void TrainConfig::validate() const {
  static const std::set<std::string> presets = {"vit_ti16", "vit_s16", "vit_b16"};
  if (!presets.count(model)) bad("model", "must be vit_ti16, vit_s16 or vit_b16, got '" + model + "'");
  for (auto [v, n] : {std::pair{image_size, "image_size"},
                      {patch, "patch"},
                      {dim, "dim"},
                      {depth, "depth"},
                      {heads, "heads"},
                      {mlp_dim, "mlp_dim"}})
    if (v < 0) bad(n, "must be >= 0 (0 = the preset's), got " + std::to_string(v));
  if (!(dropout >= 0 && dropout < 1)) bad("dropout", "must be in [0, 1), got " + default_text(dropout));
  if (!(drop_path >= 0 && drop_path < 1)) bad("drop_path", "must be in [0, 1), got " + default_text(drop_path));
  if (epochs < 1) bad("epochs", "must be >= 1, got " + std::to_string(epochs));
  if (batch_size < 1) bad("batch_size", "must be >= 1, got " + std::to_string(batch_size));
  if (!(lr > 0 && std::isfinite(lr))) bad("lr", "must be a finite number > 0, got " + default_text(lr));
  if (!(weight_decay >= 0)) bad("weight_decay", "must be >= 0, got " + default_text(weight_decay));
  if (!(beta1 >= 0 && beta1 < 1)) bad("beta1", "must be in [0, 1), got " + default_text(beta1));
  if (!(beta2 >= 0 && beta2 < 1)) bad("beta2", "must be in [0, 1), got " + default_text(beta2));
  if (!(adam_eps > 0)) bad("adam_eps", "must be > 0, got " + default_text(adam_eps));
  if (schedule != "constant" && schedule != "cosine")
    bad("schedule", "must be constant or cosine, got '" + schedule + "'");
  if (!(warmup_epochs >= 0 && warmup_epochs <= epochs))
    bad("warmup_epochs", "must be in [0, epochs=" + std::to_string(epochs) + "], got " + default_text(warmup_epochs));
  if (!(min_lr_ratio >= 0 && min_lr_ratio <= 1))
    bad("min_lr_ratio", "must be in [0, 1], got " + default_text(min_lr_ratio));
  if (!(label_smoothing >= 0 && label_smoothing < 1))
    bad("label_smoothing", "must be in [0, 1), got " + default_text(label_smoothing));
  if (!(grad_clip >= 0)) bad("grad_clip", "must be >= 0 (0 = off), got " + default_text(grad_clip));
  if (!(ema_decay >= 0 && ema_decay < 1))
    bad("ema_decay", "must be in [0, 1) (0 = off), got " + default_text(ema_decay));
  if (ema_every < 1) bad("ema_every", "must be >= 1, got " + std::to_string(ema_every));
  if (subset != 5 && subset != 20 && subset != 100)
    bad("subset", "must be 5, 20 or 100, got " + std::to_string(subset));
  if (train_split.empty()) bad("train_split", "must not be empty");
  if (!(balance_power >= 0 && balance_power <= 1))
    bad("balance_power", "must be in [0, 1], got " + default_text(balance_power));
  if (augment != "none" && augment != "light" && augment != "strong")
    bad("augment", "must be none, light or strong, got '" + augment + "'");
  if (!(translate == -1.0f || (translate >= 0 && translate <= 0.5)))
    bad("translate", "must be -1 (auto) or in [0, 0.5] (a fraction of the image side), got " + default_text(translate));
  if (attention != "own" && attention != "cudnn") bad("attention", "must be own or cudnn, got '" + attention + "'");
  if (attention == "cudnn" && device != "cuda") bad("attention", "cudnn runs on device=cuda only");
  if (rotate_flip != "auto" && rotate_flip != "on" && rotate_flip != "off")
    bad("rotate_flip", "must be auto, on or off, got '" + rotate_flip + "'");
  if (augment == "none" && (translate > 0 || reflect_border))
    bad(translate > 0 ? "translate" : "reflect_border", "only acts with augment light or strong, and augment is none");
  if (threads < 1) bad("threads", "must be >= 1, got " + std::to_string(threads));
  if (prefetch < 1) bad("prefetch", "must be >= 1, got " + std::to_string(prefetch));
  if (device != "cpu" && device != "cuda") bad("device", "must be cpu or cuda, got '" + device + "'");
  if (precision != "bf16" && precision != "fp32") bad("precision", "must be bf16 or fp32, got '" + precision + "'");
  if (data_on_device && device != "cuda")
    bad("data_on_device", "needs device=cuda (the train images are kept in GPU memory), got device=" + device);
  if (!(hed_jitter >= 0 && hed_jitter < 1)) bad("hed_jitter", "must be in [0, 1), got " + std::to_string(hed_jitter));
  if (augment == "none" && hed_jitter > 0) bad("hed_jitter", "only acts with augment light or strong, and augment is none");
  if (data_on_device && hed_jitter > 0)
    bad("data_on_device", "does not apply hed_jitter (only the CPU loader does): set data_on_device=false or hed_jitter=0");
  if (cell_size != "none" && cell_size != "normalize")
    bad("cell_size", "must be none or normalize, got '" + cell_size + "'");
  if (data_on_device && cell_size != "none")
    bad("data_on_device", "does not apply cell_size (only the CPU loader does): set data_on_device=false or cell_size=none");
  if (data_on_device && augment == "strong")
    bad("data_on_device", "supports augment none or light: augment=strong blurs, which only the CPU loader does");
  if (eval_every < 1) bad("eval_every", "must be >= 1, got " + std::to_string(eval_every));
  if (checkpoint_every < 0)
    bad("checkpoint_every", "must be >= 0 (0 = epoch ends only), got " + std::to_string(checkpoint_every));
  if (log_every < 1) bad("log_every", "must be >= 1, got " + std::to_string(log_every));
  if (max_steps < 0) bad("max_steps", "must be >= 0 (0 = no limit), got " + std::to_string(max_steps));
  if (label_level != "class" && label_level != "group")
    bad("label_level", "must be class or group, got '" + label_level + "'");
  if (!(time_budget_s >= 0)) bad("time_budget_s", "must be >= 0 (0 = off), got " + std::to_string(time_budget_s));
  if (ece_bins < 1 || ece_bins > 1000) bad("ece_bins", "must be in [1, 1000], got " + std::to_string(ece_bins));
  if (freeze_backbone_epochs < 0)
    bad("freeze_backbone_epochs", "must be >= 0, got " + std::to_string(freeze_backbone_epochs));
  if (freeze_backbone_epochs > 0 && init.empty())
    bad("freeze_backbone_epochs", "needs `init` (freezing a random backbone makes no sense)");
  if (!(backbone_lr_mult >= 0)) bad("backbone_lr_mult", "must be >= 0, got " + default_text(backbone_lr_mult));
  if (!(layer_decay > 0 && layer_decay <= 1)) bad("layer_decay", "must be in (0, 1] (1 = off), got " + default_text(layer_decay));
  if (!(mask_ratio > 0 && mask_ratio < 1)) bad("mask_ratio", "must be in (0, 1), got " + default_text(mask_ratio));
  if (decoder_dim < 1) bad("decoder_dim", "must be >= 1, got " + std::to_string(decoder_dim));
  if (decoder_depth < 1) bad("decoder_depth", "must be >= 1, got " + std::to_string(decoder_depth));
  if (decoder_heads < 1 || decoder_dim % decoder_heads)
    bad("decoder_heads", "must divide decoder_dim=" + std::to_string(decoder_dim) + ", got " + std::to_string(decoder_heads));
  if (decoder_mlp_dim < 1) bad("decoder_mlp_dim", "must be >= 1, got " + std::to_string(decoder_mlp_dim));
  if (pictures_every < 0) bad("pictures_every", "must be >= 0, got " + std::to_string(pictures_every));
  // The model fields must make a valid architecture too.
  try {
    model_config(14);
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError(std::string("config: the model fields do not make a valid ViT: ") + e.what());
  }
}

ViTConfig TrainConfig::model_config(int num_classes) const {
  ViTConfig m = ViTConfig::preset(model);
  bool custom = false;
  auto over = [&](int v, int& field) {
    if (v > 0 && v != field) {
      field = v;
      custom = true;
    }
  };
  over(image_size, m.image_size);
  over(patch, m.patch);
  over(dim, m.dim);
  over(depth, m.depth);
  over(heads, m.heads);
  over(mlp_dim, m.mlp_dim);
  if (custom) m.name = model + "_custom";
  m.dropout = dropout;
  m.num_classes = num_classes;
  m.validate();
  return m;
}

bool TrainConfig::resume_safe(const std::string& f) {
  static const std::set<std::string> safe = {
      "device",    "precision",        "attention", "data_root",  "use_packs", "threads",   "prefetch", "data_on_device",
      "log_every", "checkpoint_every", "eval_every", "max_steps", "calibrate", "ece_bins", "time_budget_s", "pictures_every"};
  return safe.count(f) > 0;
}

std::string TrainConfig::describe_differences(const std::vector<std::string>& fields, const nlohmann::json& saved,
                                              const nlohmann::json& now) {
  std::string d;
  for (const auto& f : fields)
    d += (d.empty() ? "" : ", ") + f + " (checkpoint " + (saved.contains(f) ? saved[f].dump() : "absent") + ", now " +
         (now.contains(f) ? now[f].dump() : "absent") + ")";
  return d;
}

std::vector<std::string> TrainConfig::differing_fields(const nlohmann::json& a, const nlohmann::json& b,
                                                       bool skip_resume_safe) {
  std::vector<std::string> out;
  for (const auto& d : docs()) {
    if (skip_resume_safe && resume_safe(d.name)) continue;
    bool ina = a.contains(d.name), inb = b.contains(d.name);
    // A field the checkpoint's config lacks did not exist when it was written; its default keeps
    // the behaviour of that time, so it is no difference.
    if (!ina && inb) continue;
    // Floats compare as floats: a config written before values were printed as typed holds
    // 0.0010000000474974513 for the same 1e-3.
    if (ina && inb && a[d.name].is_number_float() && b[d.name].is_number_float() &&
        a[d.name].get<float>() == b[d.name].get<float>())
      continue;
    if (ina != inb || (ina && a[d.name] != b[d.name])) out.push_back(d.name);
  }
  return out;
}

std::vector<TrainConfig::FieldDoc> TrainConfig::docs() {
  std::vector<FieldDoc> d;
#define VIT_DOC_FIELD(type, name, def, doc) d.push_back({#name, type_label<type>(), default_text(type(def)), doc});
  VIT_TRAIN_CONFIG_FIELDS(VIT_DOC_FIELD)
#undef VIT_DOC_FIELD
  return d;
}

std::string TrainConfig::docs_markdown() {
  std::ostringstream s;
  s << "| field | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& f : docs()) {
    std::string doc = f.doc;
    for (size_t p = 0; (p = doc.find('|', p)) != std::string::npos; p += 2) doc.replace(p, 1, "\\|");
    s << "| `" << f.name << "` | " << f.type << " | `" << f.default_value << "` | " << doc << " |\n";
  }
  return s.str();
}

}  // namespace vit

namespace vit {

void TrainConfig::resolve_auto(bool orientation_free) {
  if (rotate_flip == "auto") rotate_flip = orientation_free ? "on" : "off";
  if (translate < 0) translate = augment == "none" || orientation_free ? 0.0f : 0.1f;
}

}  // namespace vit
