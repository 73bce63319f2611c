// vitengine train: Train a ViT (from scratch or --init).
#include "tools/cli.h"

namespace vit::cli {

Command register_train(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("train", "Train a ViT (from scratch or --init)");
  c.run = []() -> int { throw NotBuilt("'train' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
