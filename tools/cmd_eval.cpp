// vitengine eval: Evaluate a model on a split: metrics.json and pictures.
#include "tools/cli.h"

namespace vit::cli {

Command register_eval(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("eval", "Evaluate a model on a split: metrics.json and pictures");
  c.run = []() -> int { throw NotBuilt("'eval' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
