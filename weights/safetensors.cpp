#include "weights/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace vit {
namespace {

int elsize(const std::string& dt) {
  if (dt == "F32") return 4;
  if (dt == "F16" || dt == "BF16") return 2;
  return 0;
}

}  // namespace

SafetensorsDtype parse_safetensors_dtype(const std::string& s) {
  if (s == "f32" || s == "F32" || s == "float32") return SafetensorsDtype::F32;
  if (s == "f16" || s == "F16" || s == "float16") return SafetensorsDtype::F16;
  if (s == "bf16" || s == "BF16" || s == "bfloat16") return SafetensorsDtype::BF16;
  throw std::runtime_error("unknown safetensors dtype '" + s + "' (expected f32, f16 or bf16)");
}

StateDict parse_safetensors(const uint8_t* data, size_t n, const std::string& what,
                            std::map<std::string, std::string>* metadata) {
  if (n < 8) throw std::runtime_error(what + ": too short for a safetensors file (" + std::to_string(n) + " bytes)");
  uint64_t hlen = 0;
  for (int i = 0; i < 8; ++i) hlen |= uint64_t(data[i]) << (8 * i);
  // 100 MB is the reference implementation's limit too; real headers are a few KB.
  if (hlen > 100u * 1024 * 1024 || hlen > n - 8)
    throw std::runtime_error(what + ": header length " + std::to_string(hlen) + " exceeds the file (" +
                             std::to_string(n) + " bytes): truncated or not safetensors");
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(data + 8, data + 8 + hlen);
  } catch (const std::exception& e) {
    throw std::runtime_error(what + ": header is not valid JSON: " + e.what());
  }
  if (!h.is_object()) throw std::runtime_error(what + ": header is not a JSON object");
  const uint8_t* buf = data + 8 + hlen;
  const uint64_t bufsize = n - 8 - hlen;

  struct Span {
    uint64_t b, e;
    std::string name;
  };
  std::vector<Span> spans;
  StateDict sd;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw std::runtime_error(what + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw std::runtime_error(what + ": __metadata__ value '" + m.key() + "' is not a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = what + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw std::runtime_error(where + " lacks dtype, shape or data_offsets");
    if (!v["dtype"].is_string()) throw std::runtime_error(where + ": dtype is not a string");
    std::string dt = v["dtype"].get<std::string>();
    int es = elsize(dt);
    if (!es) throw std::runtime_error(where + " has dtype " + dt + "; only F32, F16 and BF16 are supported");
    const auto& shp = v["shape"];
    const auto& off = v["data_offsets"];
    if (!shp.is_array() || shp.size() > 8)
      throw std::runtime_error(where + ": shape is not an array of at most 8 dims");
    std::vector<int64_t> shape;
    for (const auto& d : shp) {
      if (!d.is_number_unsigned()) throw std::runtime_error(where + ": shape holds a non-integer or negative value");
      uint64_t dv = d.get<uint64_t>();
      if (dv > (uint64_t(1) << 40)) throw std::runtime_error(where + ": implausible dimension " + std::to_string(dv));
      shape.push_back(int64_t(dv));
    }
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw std::runtime_error(where + ": data_offsets is not [begin, end]");
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > bufsize)
      throw std::runtime_error(where + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
                               "] fall outside the data buffer of " + std::to_string(bufsize) + " bytes (truncated?)");
    int64_t numel = checked_numel(shape, where);
    if (uint64_t(numel) * uint64_t(es) != e - b)
      throw std::runtime_error(where + ": shape " + shape_str(shape) + " x " + dt + " needs " +
                               std::to_string(uint64_t(numel) * es) + " bytes, data_offsets span " +
                               std::to_string(e - b));
    HostTensor t;
    t.shape = shape;
    t.src_dtype = es == 4 ? "float32" : (dt == "F16" ? "float16" : "bfloat16");
    t.data.resize(size_t(numel));
    const uint8_t* p = buf + b;
    if (es == 4) {
      std::memcpy(t.data.data(), p, size_t(numel) * 4);  // little-endian host assumed (x86, ARM)
    } else {
      for (int64_t k = 0; k < numel; ++k) {
        uint16_t x = uint16_t(p[2 * k] | (p[2 * k + 1] << 8));
        t.data[size_t(k)] = dt == "F16" ? half_to_float(x) : bf16_to_float(x);
      }
    }
    sd.emplace(name, std::move(t));
    spans.push_back({b, e, name});
  }
  // Tensors must tile the buffer exactly: overlaps would alias two tensors, gaps hide data.
  std::sort(spans.begin(), spans.end(),
            [](const Span& x, const Span& y) { return x.b < y.b || (x.b == y.b && x.e < y.e); });
  uint64_t at = 0;
  for (const auto& s : spans) {
    if (s.b < at) throw std::runtime_error(what + ": tensor '" + s.name + "' overlaps the previous tensor");
    if (s.b > at) throw std::runtime_error(what + ": unused bytes before tensor '" + s.name + "'");
    at = s.e;
  }
  if (at != bufsize)
    throw std::runtime_error(what + ": " + std::to_string(bufsize - at) +
                             " bytes after the last tensor (trailing garbage)");
  return sd;
}

StateDict read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse_safetensors(bytes.data(), bytes.size(), path, metadata);
}

void write_safetensors(const std::string& path, const StateDict& sd, SafetensorsDtype dtype,
                       const std::map<std::string, std::string>& metadata) {
  const int es = dtype == SafetensorsDtype::F32 ? 4 : 2;
  const char* dt = dtype == SafetensorsDtype::F32 ? "F32" : dtype == SafetensorsDtype::F16 ? "F16" : "BF16";
  // ordered_json keeps the tensors in data order, which makes the file easy to eyeball.
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::vector<uint8_t> data;
  for (const auto& [name, t] : sd) {
    if (name == "__metadata__") throw std::runtime_error(path + ": a tensor may not be named __metadata__");
    if (size_t(checked_numel(t.shape, name)) != t.data.size())
      throw std::runtime_error(path + ": tensor '" + name + "' has " + std::to_string(t.data.size()) +
                               " values for shape " + shape_str(t.shape));
    uint64_t b = data.size();
    data.resize(b + t.data.size() * es);
    uint8_t* p = data.data() + b;
    if (es == 4) {
      std::memcpy(p, t.data.data(), t.data.size() * 4);
    } else {
      for (size_t k = 0; k < t.data.size(); ++k) {
        uint16_t x = dtype == SafetensorsDtype::F16 ? float_to_half(t.data[k]) : float_to_bf16(t.data[k]);
        // float16 ends at 65504: a larger weight would load in PyTorch as an infinity, without a word.
        if (dtype == SafetensorsDtype::F16 && (x & 0x7fff) == 0x7c00 && std::isfinite(t.data[k]))
          throw std::runtime_error(path + ": tensor '" + name + "' holds " + nlohmann::json(t.data[k]).dump() +
                                   " at element " + std::to_string(k) +
                                   ", beyond float16's range (65504): it would become an infinity; write f32 or bf16");
        p[2 * k] = uint8_t(x & 0xff);
        p[2 * k + 1] = uint8_t(x >> 8);
      }
    }
    h[name] = {{"dtype", dt}, {"shape", t.shape}, {"data_offsets", {b, uint64_t(data.size())}}};
  }
  std::string hs = h.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');  // pad with spaces: keeps the data 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(hs.size()) >> (8 * i));
  write_file_atomic(path, {{len, 8}, {hs.data(), hs.size()}, {data.data(), data.size()}});
}

}  // namespace vit
