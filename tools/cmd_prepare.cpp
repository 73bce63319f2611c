// vitengine prepare: Clean, deduplicate and split an image data set into a manifest.
#include "tools/cli.h"

namespace vit::cli {

Command register_prepare(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("prepare", "Clean, deduplicate and split an image data set into a manifest");
  c.run = []() -> int { throw NotBuilt("'prepare' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
