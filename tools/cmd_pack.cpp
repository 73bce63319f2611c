// vitengine pack: preprocess one split of a manifest once into a memory-mappable pack
// file; --check verifies an existing pack; --bench times the loader on it.
#include <chrono>
#include <ctime>
#include <cstdio>
#include <memory>

#include "engine/data/dataset.h"
#include "engine/data/pack.h"
#include "tools/cli.h"

namespace vit::cli {

Command register_pack(CLI::App& root) {
  Command c;
  c.app = root.add_subcommand("pack", "Pack a manifest split into one binary file (or check / time a pack)");
  struct Args {
    std::string manifest, split = "train", out, data_root, check, report;
    int size = 224, subset = 100, threads = 2, bench = 0, batch = 64;
    bool augment = false, trivial = false;
  };
  auto a = std::make_shared<Args>();
  c.app->add_option("--manifest", a->manifest, "manifest.csv written by prepare");
  c.app->add_option("--split", a->split, "train, val or test")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "val", "test"}));
  c.app->add_option("--subset", a->subset, "train subset percentage (5, 20, 100)")
      ->capture_default_str()
      ->check(CLI::IsMember({5, 20, 100}));
  c.app->add_option("--out", a->out, "Pack file to write");
  c.app->add_option("--data-root", a->data_root, "Replaces the manifest's src column");
  c.app->add_option("--size", a->size, "Image size")->capture_default_str()->check(CLI::Range(8, 4096));
  c.app->add_option("--threads", a->threads, "Worker threads")->capture_default_str()->check(CLI::Range(1, 256));
  c.app->add_option("--check", a->check, "Open and fully verify this pack instead of writing one");
  c.app->add_option("--bench", a->bench, "Time N loader batches (from --check PACK, or from --manifest files)")
      ->check(CLI::NonNegativeNumber);
  c.app->add_option("--batch", a->batch, "Batch size for --bench")->capture_default_str()->check(CLI::PositiveNumber);
  c.app->add_option("--report", a->report, "report.json for the mean/std used by --bench");
  c.app->add_flag("--augment", a->augment, "--bench with rotation/flip/scale/colour/blur augmentation");
  c.app->add_flag("--trivial-augment", a->trivial, "--bench with TrivialAugmentWide too");
  c.run = [a]() -> int {
    std::shared_ptr<PackFile> pack;
    std::vector<Sample> samples;
    if (!a->check.empty()) {
      pack = std::make_shared<PackFile>(a->check);
      pack->verify();
      std::printf("%s: ok, %zu images of %dx%dx3\n", a->check.c_str(), pack->count(), pack->size(), pack->size());
    } else {
      if (a->manifest.empty()) throw UsageError("give --manifest (to pack or bench files) or --check PACK");
      // Resolved as train and eval read it: an empty or relative src is the manifest's folder, not
      // the working directory (tests/fixtures/quickstart's manifest has an empty src column).
      const Manifest man = read_manifest_resolved(a->manifest, a->data_root);
      samples = select(man, a->split, a->subset);
      if (samples.empty()) throw UsageError("no rows for split '" + a->split + "' in " + a->manifest);
      if (!a->out.empty()) {
        require_out_is_not_input(a->out, a->manifest, "manifest being packed");
        auto t0 = std::chrono::steady_clock::now();
        write_pack(a->out, samples, man.classes, a->size, a->threads, a->split);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("%s: %zu images, %.1f s (%.0f img/s decode+preprocess, %d threads)\n", a->out.c_str(),
                    samples.size(), s, samples.size() / s, a->threads);
      } else if (a->bench == 0) {
        throw UsageError("nothing to do: give --out, or --bench N");
      }
    }
    if (a->bench > 0) {
      DataStats st = a->report.empty() ? DataStats{} : read_stats(a->report);
      LoaderConfig cfg;
      cfg.batch_size = a->batch;
      cfg.image_size = pack ? pack->size() : a->size;
      cfg.threads = a->threads;
      cfg.aug.enabled = a->augment || a->trivial;
      cfg.aug.trivial_augment = a->trivial;
      std::unique_ptr<Loader> ld =
          pack ? std::make_unique<Loader>(pack, st, cfg) : std::make_unique<Loader>(samples, st, cfg);
      ld->start_epoch(0);
      Batch b;
      size_t imgs = 0;
      auto t0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();  // process CPU time: the machine may be shared
      for (int i = 0; i < a->bench; ++i) {
        if (!ld->next(b)) break;
        imgs += b.n;
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      double cpu = (double)(std::clock() - c0) / CLOCKS_PER_SEC;
      std::printf(
          "loader (%s, %s): %zu images in %.2f s = %.0f img/s with %d threads, batch %d; "
          "CPU %.2f s = %.2f ms/image\n",
          pack ? "pack" : "files", cfg.aug.enabled ? (a->trivial ? "augment+TA" : "augment") : "no augment", imgs, s,
          imgs / s, a->threads, a->batch, cpu, 1000 * cpu / std::max<size_t>(imgs, 1));
    }
    return 0;
  };
  return c;
}

}  // namespace vit::cli
