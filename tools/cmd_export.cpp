// vitengine export: Export a vitengine model as torchvision safetensors.
#include "tools/cli.h"

namespace vit::cli {

Command register_export(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("export", "Export a vitengine model as torchvision safetensors");
  c.run = []() -> int { throw NotBuilt("'export' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
