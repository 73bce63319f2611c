// vitengine explain: Attention-rollout and per-head attention overlays.
#include "tools/cli.h"

namespace vit::cli {

Command register_explain(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("explain", "Attention-rollout and per-head attention overlays");
  c.run = []() -> int { throw NotBuilt("'explain' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
