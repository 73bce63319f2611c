// The vitengine CLI: one file per subcommand (tools/cmd_<name>.cpp), each exporting
// a register function that adds its options and returns what to run.
// Exit codes: 0 ok, 1 runtime error (message names the thing at fault),
// 2 bad arguments (one line), 3 subcommand not built yet.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <stdexcept>
#include <string>

namespace vit::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// Thrown by a subcommand that is not built yet; main maps it to exit code 3.
struct NotBuilt : std::runtime_error {
  explicit NotBuilt(const std::string& what) : std::runtime_error(what) {}
};
// Thrown for argument errors found after parsing (e.g. two options that conflict): exit 2.
struct UsageError : std::runtime_error {
  explicit UsageError(const std::string& what) : std::runtime_error(what) {}
};

Command register_prepare(CLI::App& root);
Command register_train(CLI::App& root);
Command register_eval(CLI::App& root);
Command register_predict(CLI::App& root);
Command register_explain(CLI::App& root);
Command register_differential(CLI::App& root);
Command register_convert(CLI::App& root);
Command register_export(CLI::App& root);
Command register_bench(CLI::App& root);
Command register_serve(CLI::App& root);
Command register_pack(CLI::App& root);

}  // namespace vit::cli
