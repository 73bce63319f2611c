// The .vit format: see the layout in weights/checkpoint.h. Saving streams straight from
// the model's arena; loading reads each tensor straight into the new model's arena, so
// a ViT-B/16 with AdamW moments (~1.3 GB) is never held twice.
#include "weights/checkpoint.h"
#include "engine/util/json.h"
#include "engine/util/sha256.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>

#include "weights/state_dict.h"

namespace vit {
namespace {

constexpr char kMagic[8] = {'V', 'I', 'T', 'E', 'N', 'G', 'I', 'N'};
constexpr size_t kPrefix = 56;  // magic, version, flags, header_len, header SHA-256
constexpr size_t kAlign = 64;
constexpr uint64_t kMaxHeader = 64u << 20;
const std::string kExtraPrefix = "extra/";  // ExtraTensor names on disk  // class names + train state: KBs in practice

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

void put_le(uint8_t* p, uint64_t v, int k) {
  for (int i = 0; i < k; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint64_t get_le(const uint8_t* p, int k) {
  uint64_t v = 0;
  for (int i = 0; i < k; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

// One tensor to write: fp32 source values, disk dtype.
struct Out {
  std::string name;
  std::vector<int64_t> shape;
  const float* src;
  size_t numel;
  bool bf16;
};

void save_impl(const std::string& path, const ViT& model, const ModelMeta& meta, bool with_optimizer,
               const nlohmann::json& train_state, bool bf16, const std::vector<ExtraTensorRef>& extras = {}) {
  std::vector<Out> outs;
  for (const auto& p : model.params()) outs.push_back({p.name, p.shape, model.param_data() + p.offset, p.numel, bf16});
  const size_t n = model.num_params();
  if (with_optimizer) {
    // The arena is [params | grads | adam m | adam v] (engine/model/vit.h), so the moments are
    // reachable from the const parameter pointer; they are always kept in fp32.
    outs.push_back({"optimizer.adam_m", {int64_t(n)}, model.param_data() + 2 * n, n, false});
    outs.push_back({"optimizer.adam_v", {int64_t(n)}, model.param_data() + 3 * n, n, false});
  }
  for (const auto& e : extras) {
    size_t numel = 1;
    for (int64_t d : e.shape) numel *= size_t(d);
    outs.push_back({kExtraPrefix + e.name, e.shape, e.data, numel, false});
  }
  // bf16 copies must live until the write; fp32 tensors are written from the arena.
  std::vector<std::vector<uint16_t>> narrow(outs.size());
  std::vector<std::pair<const void*, size_t>> data_chunks;
  static const uint8_t zeros[kAlign] = {};
  nlohmann::json table = nlohmann::json::array();
  size_t off = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    const Out& o = outs[i];
    const void* bytes = o.src;
    size_t nbytes = o.numel * 4;
    if (o.bf16) {
      narrow[i].resize(o.numel);
      for (size_t k = 0; k < o.numel; ++k) narrow[i][k] = float_to_bf16(o.src[k]);  // little-endian host
      bytes = narrow[i].data();
      nbytes = o.numel * 2;
    }
    table.push_back({{"name", o.name},
                     {"shape", o.shape},
                     {"dtype", o.bf16 ? "bfloat16" : "float32"},
                     {"offset", off},
                     {"nbytes", nbytes},
                     {"sha256", sha256_hex(bytes, nbytes)}});
    data_chunks.push_back({bytes, nbytes});
    size_t pad = align_up(off + nbytes) - (off + nbytes);
    if (pad) data_chunks.push_back({zeros, pad});
    off += nbytes + pad;
  }
  nlohmann::json h = {{"format", "vitengine-model"},
                      {"version", kCheckpointVersion},
                      {"config", config_to_json(model.config())},
                      {"meta", meta_to_json(meta)},
                      {"has_optimizer", with_optimizer},
                      {"train_state", with_optimizer ? train_state : nlohmann::json::object()},
                      {"checksum", "sha256"},
                      {"data_size", off},
                      {"tensors", table}};
  std::string hs = json_text(h);  // a path in the meta (converted_from, init_from) may not be UTF-8
  uint8_t prefix[kPrefix];
  std::memcpy(prefix, kMagic, 8);
  put_le(prefix + 8, kCheckpointVersion, 4);
  put_le(prefix + 12, 0, 4);
  put_le(prefix + 16, hs.size(), 8);
  sha256_raw(hs.data(), hs.size(), prefix + 24);
  size_t head = kPrefix + hs.size();
  std::vector<uint8_t> hpad(align_up(head) - head, 0);
  std::vector<std::pair<const void*, size_t>> chunks = {
      {prefix, kPrefix}, {hs.data(), hs.size()}, {hpad.data(), hpad.size()}};
  chunks.insert(chunks.end(), data_chunks.begin(), data_chunks.end());
  write_file_atomic(path, chunks);
}

[[noreturn]] void fail_at(const std::string& path, const std::string& msg) {
  throw std::runtime_error(path + ": " + msg);
}

struct File {
  FILE* f = nullptr;
  ~File() {
    if (f) std::fclose(f);
  }
};

}  // namespace

nlohmann::json config_to_json(const ViTConfig& c) {
  return {{"name", c.name},
          {"image_size", c.image_size},
          {"patch", c.patch},
          {"channels", c.channels},
          {"dim", c.dim},
          {"depth", c.depth},
          {"heads", c.heads},
          {"mlp_dim", c.mlp_dim},
          {"num_classes", c.num_classes},
          {"dropout", c.dropout},
          {"ln_eps", c.ln_eps}};
}

ViTConfig config_from_json(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw std::runtime_error(what + ": config is not a JSON object");
  ViTConfig c;
  // Upper bounds far above any ViT (ViT-G: dim 1664, depth 48, mlp 8192) but low enough
  // that parameter counts cannot overflow: a header is data, not trusted.
  auto get_int = [&](const char* k, int& v, int64_t max) {
    if (!j.contains(k) || !j[k].is_number_integer())
      throw std::runtime_error(what + ": config field '" + k + "' is missing or not an integer");
    int64_t x = j[k].get<int64_t>();
    if (x < 0 || x > max)
      throw std::runtime_error(what + ": config field '" + k + "' = " + std::to_string(x) + " is out of range [0, " +
                               std::to_string(max) + "]");
    v = int(x);
  };
  auto get_float = [&](const char* k, float& v) {
    if (!j.contains(k) || !j[k].is_number())
      throw std::runtime_error(what + ": config field '" + k + "' is missing or not a number");
    v = j[k].get<float>();
  };
  if (!j.contains("name") || !j["name"].is_string())
    throw std::runtime_error(what + ": config field 'name' is missing or not a string");
  c.name = j["name"].get<std::string>();
  get_int("image_size", c.image_size, 8192);
  get_int("patch", c.patch, 1024);
  get_int("channels", c.channels, 64);
  get_int("dim", c.dim, 65536);
  get_int("depth", c.depth, 1024);
  get_int("heads", c.heads, 1024);
  get_int("mlp_dim", c.mlp_dim, 262144);
  get_int("num_classes", c.num_classes, 1 << 20);
  get_float("dropout", c.dropout);
  get_float("ln_eps", c.ln_eps);
  try {
    c.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(what + ": invalid config: " + e.what());
  }
  return c;
}

nlohmann::json meta_to_json(const ModelMeta& m) {
  return {{"class_names", m.class_names},
          {"mean", {m.mean[0], m.mean[1], m.mean[2]}},
          {"std", {m.std[0], m.std[1], m.std[2]}},
          {"temperature", m.temperature},
          {"extra", m.extra}};
}

ModelMeta meta_from_json(const nlohmann::json& j, const std::string& what) {
  ModelMeta m;
  try {
    m.class_names = j.at("class_names").get<std::vector<std::string>>();
    auto mean = j.at("mean").get<std::vector<float>>(), sd = j.at("std").get<std::vector<float>>();
    if (mean.size() != 3 || sd.size() != 3) throw std::runtime_error("mean and std need 3 values");
    for (int c = 0; c < 3; ++c) m.mean[c] = mean[size_t(c)], m.std[c] = sd[size_t(c)];
    m.temperature = j.at("temperature").get<float>();
    m.extra = j.value("extra", nlohmann::json());
  } catch (const std::exception& e) {
    throw std::runtime_error(what + ": bad meta: " + e.what());
  }
  return m;
}

void save_model(const std::string& path, const ViT& model, const ModelMeta& meta, bool with_optimizer,
                const nlohmann::json& train_state, const std::vector<ExtraTensorRef>& extras) {
  save_impl(path, model, meta, with_optimizer, train_state, false, extras);
}

void save_model_bf16(const std::string& path, const ViT& model, const ModelMeta& meta) {
  save_impl(path, model, meta, false, {}, true);
}

namespace {

// Random access to the bytes of a .vit, from a file or from memory (fuzz tests).
struct Source {
  uint64_t size = 0;
  std::function<bool(uint64_t, void*, size_t)> read;  // false on an I/O error
};

LoadedModel load_impl(const Source& src, const std::string& path) {
  const uint64_t fsize = src.size;
  auto read_at = [&](uint64_t at, void* dst, size_t n, const std::string& what) {
    if (at > fsize || n > fsize - at)
      fail_at(path, "truncated: " + what + " needs bytes " + std::to_string(at) + ".." + std::to_string(at + n) +
                        " of a " + std::to_string(fsize) + "-byte file");
    if (n && !src.read(at, dst, n)) fail_at(path, "read error in " + what);
  };

  uint8_t prefix[kPrefix];
  if (fsize < 8) fail_at(path, "truncated: " + std::to_string(fsize) + " bytes, not a vitengine model");
  read_at(0, prefix, 8, "magic");
  if (std::memcmp(prefix, kMagic, 8) != 0) {
    if (prefix[0] == 'P' && prefix[1] == 'K')
      fail_at(path, "bad magic: this is a zip (a PyTorch .pth?); import it with `vitengine convert`");
    fail_at(path, "bad magic: not a vitengine model (expected \"VITENGIN\")");
  }
  read_at(8, prefix + 8, kPrefix - 8, "file header");
  uint32_t version = uint32_t(get_le(prefix + 8, 4));
  if (version != kCheckpointVersion)
    fail_at(path, "format version " + std::to_string(version) + " is " +
                      (version < kCheckpointVersion ? "older" : "newer") + " than this build's version " +
                      std::to_string(kCheckpointVersion) + "; use the vitengine that wrote it to export it");
  if (get_le(prefix + 12, 4) != 0) fail_at(path, "unknown header flags");
  uint64_t hlen = get_le(prefix + 16, 8);
  if (hlen > kMaxHeader) fail_at(path, "header length " + std::to_string(hlen) + " is implausible (corrupt file)");
  std::string hs(size_t(hlen), '\0');
  read_at(kPrefix, hs.data(), hs.size(), "header JSON");
  unsigned char md[32];
  sha256_raw(hs.data(), hs.size(), md);
  if (std::memcmp(md, prefix + 24, 32) != 0) fail_at(path, "header checksum mismatch (file corrupted)");
  const uint64_t data_start = align_up(kPrefix + hlen);
  std::vector<uint8_t> pad(data_start - kPrefix - hlen);
  read_at(kPrefix + hlen, pad.data(), pad.size(), "header padding");
  for (uint8_t b : pad)
    if (b) fail_at(path, "nonzero header padding (file corrupted)");

  nlohmann::json h;
  try {
    h = nlohmann::json::parse(hs);
  } catch (const std::exception& e) {
    fail_at(path, std::string("header is not valid JSON: ") + e.what());
  }
  LoadedModel out;
  ViTConfig cfg;
  uint64_t data_size = 0;
  nlohmann::json table;
  try {
    cfg = config_from_json(h.at("config"), path);
    out.meta = meta_from_json(h.at("meta"), path);
    out.has_optimizer = h.at("has_optimizer").get<bool>();
    out.train_state = h.at("train_state");
    data_size = h.at("data_size").get<uint64_t>();
    table = h.at("tensors");
    if (!table.is_array()) fail_at(path, "tensor table is not an array");
  } catch (const nlohmann::json::exception& e) {
    fail_at(path, std::string("header lacks a field: ") + e.what());
  }
  if (data_size > fsize || fsize - data_size != data_start)
    fail_at(path, fsize < data_start + data_size ? "truncated: " + std::to_string(fsize) + " bytes, the header says " +
                                                       std::to_string(data_start + data_size)
                                                 : "file is " + std::to_string(fsize - data_start - data_size) +
                                                       " bytes longer than the header says (trailing data)");

  // Before allocating the model: the data section must be able to hold its parameters
  // (at 2 bytes each, bf16), so a forged config cannot ask for more memory than the file.
  uint64_t need = 0;
  for (const auto& p : param_table(cfg)) need += p.numel;
  if (need * 2 > data_size)
    fail_at(path, "config " + cfg.to_string() + " has " + std::to_string(need) +
                      " parameters, but the data section holds only " + std::to_string(data_size) + " bytes");
  out.model = std::make_unique<ViT>(cfg);
  ViT& m = *out.model;
  const size_t n = m.num_params();
  // What the config says must be there: every parameter, plus the moments if saved.
  std::map<std::string, std::pair<std::vector<int64_t>, float*>> want;
  for (const auto& p : m.params()) want[p.name] = {p.shape, m.param_data() + p.offset};
  if (out.has_optimizer) {
    want["optimizer.adam_m"] = {{int64_t(n)}, m.adam_m()};
    want["optimizer.adam_v"] = {{int64_t(n)}, m.adam_v()};
  }
  std::set<std::string> seen;
  std::vector<std::pair<uint64_t, uint64_t>> spans;  // [offset, end) of each tensor
  std::vector<uint8_t> buf;
  for (const auto& t : table) {
    std::string name;
    std::vector<int64_t> shape;
    std::string dtype, sha;
    uint64_t off = 0, nbytes = 0;
    try {
      name = t.at("name").get<std::string>();
      shape = t.at("shape").get<std::vector<int64_t>>();
      dtype = t.at("dtype").get<std::string>();
      sha = t.at("sha256").get<std::string>();
      off = t.at("offset").get<uint64_t>();
      nbytes = t.at("nbytes").get<uint64_t>();
    } catch (const nlohmann::json::exception& e) {
      fail_at(path, std::string("bad tensor table entry: ") + e.what());
    }
    if (!seen.insert(name).second) fail_at(path, "tensor '" + name + "' appears twice");
    if (name.rfind(kExtraPrefix, 0) == 0) {  // any shape: bounded by the data section below
      if (dtype != "float32") fail_at(path, "extra tensor '" + name + "' must be float32, not " + dtype);
      ExtraTensor& x = out.extras[name.substr(kExtraPrefix.size())];
      x.shape = shape;
      const size_t numel = size_t(checked_numel(shape, path + ": tensor '" + name + "'"));
      if (nbytes != numel * 4 || off > data_size || nbytes > data_size - off)
        fail_at(path, "extra tensor '" + name + "' does not match its shape or lies outside the data section");
      x.data.resize(numel);
      want[name] = {shape, x.data.data()};
    }
    auto w = want.find(name);
    if (w == want.end()) fail_at(path, "tensor '" + name + "' is not a parameter of " + cfg.to_string());
    if (shape != w->second.first)
      fail_at(path, "tensor '" + name + "' has shape " + shape_str(shape) + " but the config " + cfg.to_string() +
                        " needs " + shape_str(w->second.first));
    const size_t numel = size_t(checked_numel(shape, path + ": tensor '" + name + "'"));
    int es = dtype == "float32" ? 4 : dtype == "bfloat16" ? 2 : 0;
    if (!es) fail_at(path, "tensor '" + name + "' has unsupported dtype " + dtype);
    if (nbytes != numel * size_t(es))
      fail_at(path, "tensor '" + name + "': nbytes " + std::to_string(nbytes) + " does not match its shape and dtype");
    if (off > data_size || nbytes > data_size - off)
      fail_at(path, "tensor '" + name + "' lies outside the data section");
    spans.push_back({off, off + nbytes});
    buf.resize(nbytes);
    read_at(data_start + off, buf.data(), buf.size(), "tensor '" + name + "'");
    if (sha256_hex(buf.data(), buf.size()) != sha)
      fail_at(path, "checksum mismatch in tensor '" + name + "' (file corrupted)");
    float* dst = w->second.second;
    if (es == 4) {
      std::memcpy(dst, buf.data(), nbytes);
    } else {
      for (size_t k = 0; k < numel; ++k) dst[k] = bf16_to_float(uint16_t(buf[2 * k] | (buf[2 * k + 1] << 8)));
    }
  }
  for (const auto& [name, v] : want)
    if (!seen.count(name)) fail_at(path, "tensor '" + name + "' is missing (config " + cfg.to_string() + ")");
  // The bytes between tensors are alignment padding and must be zero; checking them
  // (and that tensors do not overlap) leaves no byte of the file unverified.
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  for (size_t i = 0; i <= spans.size(); ++i) {
    uint64_t next = i < spans.size() ? spans[i].first : data_size;
    if (next < at) fail_at(path, "tensors overlap in the data section");
    if (next - at >= kAlign)
      fail_at(path, "unexplained gap of " + std::to_string(next - at) + " bytes in the data section");
    uint8_t gap[kAlign];
    read_at(data_start + at, gap, size_t(next - at), "data padding");
    for (uint64_t k = 0; k < next - at; ++k)
      if (gap[k]) fail_at(path, "nonzero padding in the data section (file corrupted)");
    if (i < spans.size()) at = spans[i].second;
  }
  return out;
}

}  // namespace

LoadedModel load_model(const std::string& path) {
  File file;
  file.f = std::fopen(path.c_str(), "rb");
  if (!file.f) fail_at(path, std::string("cannot open: ") + std::strerror(errno));
  if (std::fseek(file.f, 0, SEEK_END) != 0) fail_at(path, "cannot seek");
  long end = std::ftell(file.f);
  if (end < 0) fail_at(path, "cannot tell the file size");
  Source src;
  src.size = uint64_t(end);
  FILE* f = file.f;
  src.read = [f](uint64_t at, void* dst, size_t n) {
    return fseeko(f, off_t(at), SEEK_SET) == 0 && std::fread(dst, 1, n, f) == n;
  };
  return load_impl(src, path);
}

LoadedModel load_model_memory(const uint8_t* data, size_t n, const std::string& what) {
  Source src;
  src.size = n;
  src.read = [data](uint64_t at, void* dst, size_t k) {
    std::memcpy(dst, data + at, k);
    return true;
  };
  return load_impl(src, what);
}

void require_same_architecture(const ViTConfig& expected, const ViTConfig& got, const std::string& what) {
  if (!expected.same_architecture(got))
    throw std::runtime_error(what + " is a different model: it has " + got.to_string() + ", expected " +
                             expected.to_string());
}

void load_weights_into(ViT& dst, const LoadedModel& src, bool with_optimizer) {
  if (!src.model) throw std::runtime_error("load_weights_into: no model loaded");
  require_same_architecture(dst.config(), src.model->config(), "checkpoint");
  const size_t n = dst.num_params();
  std::memcpy(dst.param_data(), src.model->param_data(), n * sizeof(float));
  if (with_optimizer && src.has_optimizer) {
    std::memcpy(dst.adam_m(), src.model->param_data() + 2 * n, n * sizeof(float));
    std::memcpy(dst.adam_v(), src.model->param_data() + 3 * n, n * sizeof(float));
  }
}

}  // namespace vit
