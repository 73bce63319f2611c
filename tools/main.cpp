// vitengine <subcommand> ...: entry point. Only this file calls exit codes; the
// library throws.
#include <cstdio>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "engine/runtime/backend.h"
#include "tools/cli.h"

namespace {
std::unique_ptr<vit::dist::Comm> g_world;

// The message of a failed subcommand; on one rank of several it names the rank, and the job ends
// on every rank (MPI_Abort), as the others would wait for this one in their next collective.
int fail(const std::string& cmd, const char* kind, const char* what, int code) {
  const bool many = g_world && g_world->distributed();
  const std::string who = many ? " (" + g_world->who() + ")" : "";
  std::fprintf(stderr, "vitengine %s%s: %s%s\n", cmd.c_str(), who.c_str(), kind, what);
  std::fflush(stderr);
  if (many) g_world->abort(code);
  return code;
}
}  // namespace

vit::dist::Comm& vit::cli::world() {
  if (!g_world) g_world = std::make_unique<vit::dist::Comm>();
  return *g_world;
}

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
                               register_serve(app),   register_pack(app),    register_stain_ref(app),
                               register_stain_calibrate(app), register_adapt(app),   register_ood_ref(app), register_pretrain(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A mistyped command ("vitengine trian") is a word that is no subcommand and no option: CLI11
    // says only "A subcommand is required", so name the word and the commands there are.
    std::string names;
    bool known = false;
    for (const auto& c : cmds) {
      names += (names.empty() ? "" : ", ") + c.app->get_name();
      known = known || (argc > 1 && c.app->get_name() == argv[1]);
    }
    if (argc > 1 && argv[1][0] != '-' && !known) {
      std::fprintf(stderr, "vitengine: '%s' is not a command; the commands are %s (see vitengine --help)\n", argv[1],
                   names.c_str());
      return 2;
    }
    std::fprintf(stderr, "vitengine: %s (see vitengine --help)\n", e.what());
    return 2;
  }
  for (auto& c : cmds) {
    if (!c.app->parsed()) continue;
    const std::string name = c.app->get_name();
    try {
      world();  // joins the job (MPI_Init under mpirun or srun) before any subcommand runs
#ifdef VITENGINE_HAS_CUDA
      if (world().distributed()) vit::cuda_select_device(world().local_rank());
#endif
      return c.run();
    } catch (const NotBuilt& e) {
      return fail(name, "not built yet: ", e.what(), 3);
    } catch (const UsageError& e) {
      return fail(name, "", e.what(), 2);
    } catch (const std::bad_alloc&) {  // its what() is "std::bad_alloc", which names no cause
      return fail(name, "error: ",
                  "out of memory: what was asked for (model size, batch, image size or class count) needs more "
                  "memory than this machine can give; ask for less",
                  1);
    } catch (const std::exception& e) {
      return fail(name, "error: ", e.what(), 1);
    }
  }
  return 2;
}
