// vitengine adapt: fine-tune a trained model on a few labelled images of another lab (or any new
// domain), on the CPU. engine/train/adapt.h says how; docs/robustness.md what it gives.
#include <cmath>
#include <cstdio>

#include "engine/train/adapt.h"
#include "engine/wbc/app.h"
#include "tools/cli.h"

namespace vit::cli {

Command register_adapt(CLI::App& root) {
  auto r = std::make_shared<AdaptRequest>();
  r->folder_class = wbc::eval_app().folder_class;  // "neutrophils", "EOSINOPHIL": as eval reads the folders
  Command c;
  c.app = root.add_subcommand("adapt", "Fine-tune a model on a few labelled images of a new lab (or, with --unlabelled, "
                                      "its normalisation layers on unlabelled ones), on the CPU");
  c.app->add_option("--model", r->model, "trained model (.vit); left untouched")->required()->check(CLI::ExistingFile);
  c.app->add_option("--data", r->data,
                    "labelled images: a folder of class folders, or a prepared folder / manifest.csv (with --unlabelled: any "
      "folder of images, or a prepared folder's --split)")
      ->required();
  c.app->add_option("--out", r->out, "the adapted model (.vit), another file than --model")->required();
  c.app->add_option("--report", r->report,
                    "folder: the held-out cells evaluated by the original and the adapted model, with eval's "
                    "pictures side by side (summary.md, before/, after/, held_out.csv, card.json)");
  c.app->add_option("--map", r->map, "label map JSON: the labels are its targets (e.g. configs/bccd5.json)")
      ->check(CLI::ExistingFile);
  c.app->add_option("--data-root", r->data_root, "replaces every manifest row's src folder");
  c.app->add_option("--split", r->split, "manifest split adapted on")->capture_default_str();
  c.app->add_option("--holdout-split", r->holdout_split, "manifest split held out for the before/after numbers")
      ->capture_default_str();
  c.app->add_option("--holdout", r->holdout,
                    "class folders (or a manifest without --holdout-split rows): share of each class held out, "
                    "seeded and stratified; without --keep-data the temperature is refitted on them (never on a "
                    "test split)")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  c.app->add_flag("--unlabelled", r->unlabelled,
                    "no labels: train the LayerNorm parameters to make the model surer of these images (entropy "
                    "minimisation of its classes, TENT). Adapt on the folder you are about to classify, and classify "
                    "it with the same --stain-norm and --cell-size (and predict/eval --map ... --map-rule restrict)");
  c.app->add_option("--freeze", r->freeze,
                    "all-but-head (the head alone, on cached features: fastest), last-k (the last --last-k blocks, "
                    "the final LayerNorm and the head), none (everything, with --augment auto's fresh augmentation each "
                    "step: the most accurate measured, minutes on 2 cores for 100 cells) or all-but-norm (the LayerNorm "
                    "parameters); auto: none, or all-but-norm with --unlabelled")
      ->check(CLI::IsMember({"auto", "all-but-head", "last-k", "none", "all-but-norm"}))
      ->capture_default_str();
  c.app->add_option("--last-k", r->last_k, "blocks trained with --freeze last-k")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  c.app->add_option("--shots", r->shots, "at most N images per class, a seeded choice (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c.app->add_option("--min-per-class", r->min_per_class, "refuse a class with fewer adaptation images")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  c.app->add_option("--epochs", r->epochs, "0: 100 with all-but-head, 10 with --unlabelled, else 30")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c.app->add_option("--lr", r->lr, "AdamW learning rate; 0: 1e-3 with all-but-head, else 3e-4")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c.app->add_option("--batch", r->batch, "images per step")->check(CLI::Range(1, 4096))->capture_default_str();
  c.app->add_option("--seed", r->seed, "seed of the held-out share, --shots and the order")->capture_default_str();
  c.app->add_option("--views", r->views, "training views of each image: none, flip or d4 (quarter turns x mirror)")
      ->check(CLI::IsMember({"none", "flip", "d4"}))
      ->capture_default_str();
  c.app->add_option("--augment", r->augment,
                    "last-k / none / all-but-norm: views (a random one of --views per step) or train (the trainer's "
                    "rotation, flip, scale, colour, stain and blur jitter, drawn anew each step); auto: train, or "
                    "views with all-but-head or --unlabelled")
      ->check(CLI::IsMember({"auto", "views", "train"}))
      ->capture_default_str();
  c.app->add_option("--keep-data", r->keep_data,
                    "the prepared data the model was trained on: --keep-per-class images of each class of its train "
                    "split train beside the new cells so that the model keeps what it knew (its val split is scored "
                    "before and after)");
  c.app->add_option("--keep-per-class", r->keep_per_class,
                    "images per class kept from --keep-data; 0: all of its train split (with --freeze all-but-head "
                    "the one setting measured to keep the home accuracy, about 25 min on 2 cores for wbc14)")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  c.app->add_option("--lr-schedule", r->lr_schedule,
                    "last-k / none / all-but-norm: constant, or cosine (decays to 0 by the last step, so the weights "
                    "settle instead of ending on a full-size step)")
      ->check(CLI::IsMember({"constant", "cosine"}))
      ->capture_default_str();
  c.app->add_option("--keep-per-epoch", r->keep_per_epoch,
                    "with the encoder training (last-k, none): rehearse only the next N kept images each epoch, "
                    "cycling through all of them over the epochs, so that --keep-per-class 0 (the whole home split) "
                    "costs N images per epoch; 0: every kept image every epoch")
      ->check(CLI::Range(0, 100000000))
      ->capture_default_str();
  add_stain_norm_option(c.app, &r->stain_norm);
  add_cell_size_option(c.app, &r->cell_size);
  c.app->add_flag("--resume", r->resume,
                  "continue a stopped or killed run from OUT.progress.vit (written after each epoch when the "
                  "encoder trains), with the same settings; the result is the one an uninterrupted run gives");
  c.app->add_option("--stop-after", r->stop_after,
                    "end after this many epochs, keeping OUT.progress.vit for --resume (0: run them all)")
      ->capture_default_str();
  c.run = [r]() -> int {
    r->log = [](const std::string& m) {
      std::fprintf(stderr, "adapt: %s\n", m.c_str());
      std::fflush(stderr);
    };
    const nlohmann::json card = adapt(*r);
    if (card.contains("stopped_after_epoch")) {
      std::printf("stopped after epoch %d: no model written; %s holds the run; add --resume to finish it\n",
                  card["stopped_after_epoch"].get<int>(), card["progress"].get<std::string>().c_str());
      return 0;
    }
    if (r->unlabelled) {
      const auto pct = [](const nlohmann::json& v) {
        return v.is_null() ? std::string("-") : std::to_string(int(std::lround(100 * v.get<double>()))) + "%";
      };
      std::printf("adapted %s on %d unlabelled images -> %s in %.1f s\n", r->model.c_str(), card["cells"].get<int>(),
                  r->out.c_str(), card["seconds"].get<double>());
      std::printf("mean entropy %.3f before, %.3f after; flagged unlike the training data %s before, %s after\n",
                  card["before"]["mean_entropy"].get<double>(), card["after"]["mean_entropy"].get<double>(),
                  pct(card["before"]["flagged_unlike_training"]).c_str(),
                  pct(card["after"]["flagged_unlike_training"]).c_str());
      return 0;
    }
    const auto& h = card["held_out"];
    std::printf("adapted %s on %d images (%s) -> %s in %.1f s\n", r->model.c_str(), card["cells"].get<int>(),
                card["cells_per_label"].dump().c_str(), r->out.c_str(), card["seconds"].get<double>());
    if (h["images"].get<int>() > 0)
      std::printf("held out %d images: accuracy %.1f%% before, %.1f%% after\n", h["images"].get<int>(),
                  100 * h["accuracy_before"].get<double>(), 100 * h["accuracy_after"].get<double>());
    if (card.contains("rehearsal"))
      std::printf("home val %d images: accuracy %.1f%% before, %.1f%% after\n",
                  card["rehearsal"]["val_images"].get<int>(), 100 * card["rehearsal"]["val_accuracy_before"].get<double>(),
                  100 * card["rehearsal"]["val_accuracy_after"].get<double>());
    if (card.contains("report"))
      std::printf("report: %s/summary.md (held-out macro-F1 %.1f%% before, %.1f%% after)\n", r->report.c_str(),
                  100 * card["report"]["before"]["macro_f1"].get<double>(),
                  100 * card["report"]["after"]["macro_f1"].get<double>());
    return 0;
  };
  return c;
}

}  // namespace vit::cli
