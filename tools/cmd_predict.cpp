// vitengine predict: Classify cell images.
#include "tools/cli.h"

namespace vit::cli {

Command register_predict(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("predict", "Classify cell images");
  c.run = []() -> int { throw NotBuilt("'predict' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
