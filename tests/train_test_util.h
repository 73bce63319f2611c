// Helpers of the tests that train (test_trainer.cpp, test_pretrain.cpp): a small copy of the
// committed fixture (tests/fixtures/quickstart), temp folders, CSV reading, running the CLI.
#pragma once
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace train_test {
namespace fs = std::filesystem;

inline const std::string kFixture = std::string(VITENGINE_SOURCE_DIR) + "/tests/fixtures/quickstart";

inline fs::path tmpdir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("vit_train_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A smaller data set for the tests: the first 4 train and 1 val image of each class
// of the fixture (56 + 14), as its own manifest pointing at the fixture's files.
inline const std::string& small_data() {
  static std::string dir;
  if (!dir.empty()) return dir;
  fs::path d = fs::temp_directory_path() / ("vit_train_" + std::to_string(::getpid()) + "_data");
  fs::create_directories(d);
  std::ifstream in(kFixture + "/manifest.csv");
  std::ofstream out(d / "manifest.csv");
  std::string line;
  std::getline(in, line);
  out << line << "\n";
  std::map<std::string, int> seen;
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string path, label, split;
    std::getline(ss, path, ',');
    std::getline(ss, label, ',');
    std::getline(ss, split, ',');
    int& n = seen[label + "/" + split];
    if (split == "test" || (split == "train" && n >= 4) || (split == "val" && n >= 1)) continue;
    ++n;
    // the fixture's rows end in an empty src (paths relative to its folder): point it there
    if (line.back() != ',') throw std::runtime_error("fixture row without an empty src: " + line);
    out << line << kFixture << "\n";
  }
  fs::copy_file(kFixture + "/report.json", d / "report.json", fs::copy_options::overwrite_existing);
  dir = d.string();
  static struct Cleanup {
    ~Cleanup() { fs::remove_all(dir); }
  } cleanup;
  return dir;
}

inline std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

inline std::vector<std::vector<std::string>> csv_rows(const fs::path& p) {
  std::vector<std::vector<std::string>> rows;
  std::ifstream f(p);
  std::string line;
  while (std::getline(f, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, ',')) cells.push_back(c);
    if (!line.empty() && line.back() == ',') cells.push_back("");
    rows.push_back(cells);
  }
  return rows;
}

// fork + exec VITENGINE_BINARY with args; stdout and stderr go to `log`.
inline pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::fopen(log.c_str(), "w");
    if (f) {
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
    }
    std::vector<char*> argv;
    std::string bin = VITENGINE_BINARY;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

inline int run_cli(const std::vector<std::string>& args, const fs::path& log) {
  pid_t pid = spawn(args, log);
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace train_test
