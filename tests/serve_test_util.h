// Helpers for the tests of predict / explain / differential / serve: a tiny model
// checkpoint, synthetic cell-like PNGs, running the CLI, and a real `vitengine serve`
// child process on a free loopback port.
#pragma once
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/eval/overlay.h"
#include "engine/wbc/taxonomy.h"
#include "weights/checkpoint.h"

namespace vt {

// httplib's client writes with plain send(): when a server answers early and closes, the
// SIGPIPE would end the whole test binary with no report. Ignored, the request fails instead.
inline const bool kSigpipeIgnored = (signal(SIGPIPE, SIG_IGN), true);

// A fresh folder under the system temp dir, removed by the caller if wanted.
inline std::string temp_dir(const std::string& tag) {
  auto p = std::filesystem::temp_directory_path() /
           ("vitengine_" + tag + "_" + std::to_string(getpid()) + "_" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(p);
  return p.string();
}

// A 2-layer, 2-head ViT on 32x32 inputs with random weights and a random (not zero)
// head, so different images give different probabilities. Temperature 1.5.
// taxonomy_names = false names the classes class_0.. (like a plain torchvision import).
inline void write_tiny_model(const std::string& path, uint64_t seed = 7, bool taxonomy_names = true) {
  vit::ViTConfig cfg;
  cfg.name = "tiny_test";
  cfg.image_size = 32;
  cfg.patch = 8;
  cfg.dim = 32;
  cfg.depth = 2;
  cfg.heads = 2;
  cfg.mlp_dim = 64;
  cfg.num_classes = 14;
  cfg.dropout = 0;
  vit::ViT m(cfg);
  m.init(seed);
  std::mt19937 rng{uint32_t(seed)};
  std::normal_distribution<float> nd(0, 0.5f);
  for (const char* name : {"heads.head.weight", "heads.head.bias"}) {
    const auto& p = m.param(name);
    float* w = m.param_ptr(name);
    for (size_t i = 0; i < p.numel; ++i) w[i] = nd(rng);
  }
  vit::ModelMeta meta;
  for (const auto& c : vit::classes())
    meta.class_names.push_back(taxonomy_names ? c.name : "class_" + std::to_string(meta.class_names.size()));
  meta.temperature = 1.5f;
  meta.mean[0] = 0.8f, meta.mean[1] = 0.7f, meta.mean[2] = 0.7f;
  meta.std[0] = meta.std[1] = meta.std[2] = 0.2f;
  vit::save_model(path, m, meta);
}

// A pink-ish background with a dark purple disc (a stand-in for a stained cell);
// `seed` moves the disc and changes its size.
inline vit::Image synthetic_cell(int w, int h, int seed) {
  vit::Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(size_t(w) * h * 3);
  std::mt19937 rng{uint32_t(seed)};
  float cx = w * (0.3f + 0.4f * float(rng() % 100) / 100), cy = h * (0.3f + 0.4f * float(rng() % 100) / 100);
  float r = std::min(w, h) * (0.15f + 0.2f * float(rng() % 100) / 100);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      bool in = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
      uint8_t* p = &im.rgb[(size_t(y) * w + x) * 3];
      p[0] = in ? 90 : 235;
      p[1] = in ? 40 : 200;
      p[2] = in ? 140 : 210;
    }
  return im;
}

inline std::string png_bytes(int w, int h, int seed) {
  auto v = vit::encode_png(synthetic_cell(w, h, seed));
  return std::string(v.begin(), v.end());
}
inline std::string jpeg_bytes(int w, int h, int seed) {
  auto v = vit::encode_jpeg(synthetic_cell(w, h, seed), 90);
  return std::string(v.begin(), v.end());
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}
inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs a shell command; stdout and stderr go to the given strings. Returns the exit code.
inline int run(const std::string& cmd, std::string* out = nullptr, std::string* err = nullptr) {
  std::string dir = temp_dir("run");
  std::string o = dir + "/out", e = dir + "/err";
  int rc = std::system((cmd + " >" + o + " 2>" + e).c_str());
  if (out) *out = read_file(o);
  if (err) *err = read_file(e);
  std::filesystem::remove_all(dir);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// `vitengine serve ... --port 0` as a child process; reads the port from its first line.
class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe");
    std::vector<std::string> all = {VITENGINE_BINARY, "serve", "--port", "0"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : all) argv.push_back(s.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {  // only async-signal-safe calls until exec
      // If the test binary dies (a crash, ctest's timeout), the server goes with it instead of
      // holding the test's stderr open, which makes ctest wait out its whole timeout.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      signal(SIGPIPE, SIG_DFL);  // the server must cope with SIGPIPE on its own
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      execv(VITENGINE_BINARY, argv.data());
      _exit(127);
    }
    close(fds[1]);
    // First line: "... listening on http://HOST:PORT/". Give up after 60 s.
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    char c;
    while (std::chrono::steady_clock::now() < deadline && read(fds[0], &c, 1) == 1 && c != '\n') line += c;
    close(fds[0]);
    first_line_ = line;
    auto at = line.rfind(':');
    if (line.find("listening on http") == std::string::npos || at == std::string::npos) {  // http or https
      stop();
      throw std::runtime_error("server did not start: '" + line + "'");
    }
    port_ = std::atoi(line.c_str() + at + 1);
  }
  ~ServerProcess() { stop(); }
  int port() const { return port_; }
  const std::string& first_line() const { return first_line_; }
  bool alive() const { return pid_ > 0 && kill(pid_, 0) == 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }
  // SIGTERM without waiting (stop() waits).
  void terminate() const {
    if (pid_ > 0) kill(pid_, SIGTERM);
  }
  // SIGTERM, then wait; returns the exit status (or -1).
  int stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int st = 0;
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &st, 0);
    pid_ = -1;
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string first_line_;
};

}  // namespace vt
