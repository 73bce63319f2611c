// vitengine convert: Import a torchvision ViT checkpoint (.pth or .safetensors).
#include "tools/cli.h"

namespace vit::cli {

Command register_convert(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("convert", "Import a torchvision ViT checkpoint (.pth or .safetensors)");
  c.run = []() -> int { throw NotBuilt("'convert' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
