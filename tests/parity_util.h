// Reading the PyTorch reference tensors that tools/gen_parity.py and tools/gen_mae_parity.py write
// (tests/data/<name>.{json,bin}), and the relative error the parity tests compare with.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace parity {

using json = nlohmann::json;

struct RefFile {
  json meta;
  std::map<std::string, std::vector<float>> t;
  std::map<std::string, std::vector<int64_t>> shape;
};

inline RefFile load_ref(const std::string& name) {
  std::string base = std::string(VITENGINE_TEST_DATA) + "/" + name;
  std::ifstream jf(base + ".json");
  if (!jf) throw std::runtime_error("missing " + base + ".json (run tools/gen_parity.py or tools/gen_mae_parity.py)");
  json j = json::parse(jf);
  std::ifstream bf(base + ".bin", std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(bf)), std::istreambuf_iterator<char>());
  RefFile r;
  r.meta = j["meta"];
  for (auto& [k, v] : j["tensors"].items()) {
    size_t n = 1;
    for (auto s : v["shape"]) n *= (size_t)s.get<int64_t>();
    size_t off = v["offset"].get<size_t>();
    if ((off + n) * 4 > raw.size()) throw std::runtime_error(base + ".bin is truncated at tensor " + k);
    std::vector<float> d(n);
    std::memcpy(d.data(), raw.data() + off * 4, n * 4);
    r.t[k] = std::move(d);
    r.shape[k] = v["shape"].get<std::vector<int64_t>>();
  }
  return r;
}

inline double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}
inline bool all_zero(const float* a, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (a[i] != 0) return false;
  return true;
}

}  // namespace parity
