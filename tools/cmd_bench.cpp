// vitengine bench: Benchmark ops and end-to-end steps.
#include "tools/cli.h"

namespace vit::cli {

Command register_bench(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("bench", "Benchmark ops and end-to-end steps");
  c.run = []() -> int { throw NotBuilt("'bench' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
