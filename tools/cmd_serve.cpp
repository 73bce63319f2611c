// vitengine serve: HTTP prediction service with a web page.
#include "tools/cli.h"

namespace vit::cli {

Command register_serve(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("serve", "HTTP prediction service with a web page");
  c.run = []() -> int { throw NotBuilt("'serve' is planned but not implemented in this build"); };
  return c;
}

}  // namespace vit::cli
