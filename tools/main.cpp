// vitengine <subcommand> ...: entry point. Only this file calls exit codes; the
// library throws.
#include <cstdio>
#include <exception>
#include <vector>

#include "engine/runtime/backend.h"
#include "tools/cli.h"

int main(int argc, char** argv) {
  using namespace vit::cli;
#ifdef VITENGINE_HAS_CUDA
  vit::register_cuda_backend(&vit::make_cuda_train_backend);  // the one place: --device cuda
  vit::register_gpu_attention(&vit::set_cuda_attention);      // ... and its attention=own|cudnn
#endif
  CLI::App app{"vitengine: a Vision Transformer engine in C++/CUDA (white-blood-cell classification)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "vitengine 0.1");
  std::vector<Command> cmds = {register_prepare(app), register_train(app),   register_eval(app),
                               register_predict(app), register_explain(app), register_differential(app),
                               register_convert(app), register_export(app),  register_bench(app),
                               register_serve(app),   register_pack(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "vitengine: %s (see vitengine --help)\n", e.what());
    return 2;
  }
  for (auto& c : cmds) {
    if (!c.app->parsed()) continue;
    try {
      return c.run();
    } catch (const NotBuilt& e) {
      std::fprintf(stderr, "vitengine %s: not built yet: %s\n", c.app->get_name().c_str(), e.what());
      return 3;
    } catch (const UsageError& e) {
      std::fprintf(stderr, "vitengine %s: %s\n", c.app->get_name().c_str(), e.what());
      return 2;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "vitengine %s: error: %s\n", c.app->get_name().c_str(), e.what());
      return 1;
    }
  }
  return 2;
}
