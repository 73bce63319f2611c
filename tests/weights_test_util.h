// Shared helpers for the weights tests (test_weights_*.cpp and the ASan fuzz binary).
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/util/rng.h"
#include "weights/state_dict.h"

namespace vit::testutil {

inline std::string data_path(const std::string& name) { return std::string(VITENGINE_TEST_DATA) + "/" + name; }

inline std::vector<uint8_t> bytes_of(const std::string& path) { return read_file_bytes(path); }

inline std::vector<float> read_f32(const std::string& path) {
  auto b = read_file_bytes(path);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

// Runs fn and returns the runtime_error message; fails the test if nothing (or
// something other than std::runtime_error) is thrown.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::runtime_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-runtime_error: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

// A unique scratch folder under the build tree's temp dir, removed by the caller's
// TearDown if wanted (CI runs in a fresh clone, so leftovers are harmless).
inline std::string temp_path(const std::string& name) {
  const char* t = std::getenv("TMPDIR");
  return std::string(t ? t : "/tmp") + "/vitengine_weights_test_" + std::to_string(::getpid()) + "_" + name;
}

// Deterministic PRNG for mutations (engine/util/rng.h): the same cases on every run.
struct MutationRng {
  vit::Rng r;
  explicit MutationRng(uint64_t seed) : r(seed) {}
  uint64_t next() { return r.next(); }
  size_t below(size_t n) { return size_t(next() % n); }
};

}  // namespace vit::testutil
