// vitengine differential: Smear-level differential count report.
#include "tools/cli.h"

namespace vit::cli {

Command register_differential(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("differential", "Smear-level differential count report");
  c.run = []() -> int { throw NotBuilt("'differential' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
