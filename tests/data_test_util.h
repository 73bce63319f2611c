// Helpers shared by the tests/test_data_*.cpp files: temp folders and synthetic images.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "engine/data/image.h"

namespace vit::testutil {
namespace fs = std::filesystem;

inline fs::path fixtures() { return fs::path(VITENGINE_TEST_DATA).parent_path() / "fixtures"; }
inline fs::path test_data() { return fs::path(VITENGINE_TEST_DATA); }

// A fresh empty directory under the system temp dir, removed when the object dies.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() /
           ("vit_" + tag + "_" + std::to_string(::getpid()) + "_" +
            std::to_string(reinterpret_cast<uintptr_t>(this)));  // ctest runs tests as parallel processes
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

inline void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), (std::streamsize)b.size());
}
inline std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Noise image around a base colour: random enough that perceptual hashes of two
// such images are far apart, with a known exact pixel sum.
inline Image noise_image(int w, int h, uint32_t seed, int base, int spread = 60) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(-spread, spread);
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize((size_t)w * h * 3);
  for (auto& v : im.rgb) v = (uint8_t)std::min(255, std::max(0, base + d(g)));
  return im;
}

// Max absolute per-byte difference; -1 when the shapes differ.
inline int max_abs_diff(const Image& a, const Image& b) {
  if (a.width != b.width || a.height != b.height || a.rgb.size() != b.rgb.size()) return -1;
  int m = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) m = std::max(m, std::abs((int)a.rgb[i] - (int)b.rgb[i]));
  return m;
}

inline bool shared_data_root(fs::path& out) {
  for (const char* c : {"/work/shared/data", "../shared/data", "../../shared/data"}) {
    fs::path p = fs::path(VITENGINE_TEST_DATA).parent_path().parent_path() / c;
    if (c[0] == '/') p = c;
    if (fs::exists(p / "wbc14" / "originals-sample")) {
      out = fs::canonical(p);
      return true;
    }
  }
  return false;
}

}  // namespace vit::testutil
