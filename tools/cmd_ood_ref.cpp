// vitengine ood-ref: store the out-of-distribution threshold in a model (engine/eval/ood.h), chosen
// on in-domain validation images for a stated false-alarm rate, so that predict, serve, eval and
// differential can say when images look unlike the training data. The weights are copied bit
// for bit; only the metadata grows. With --against, it also measures how well the score tells
// the in-domain test images from another set (AUROC), and records that in the model.
#include <cstdio>
#include <filesystem>

#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "tools/cli.h"
#include "weights/checkpoint.h"

namespace vit::cli {

namespace {

// The energy score of every image in `files`; a corrupt file is named.
std::vector<double> scores_of(Predictor& pred, const std::vector<std::string>& files) {
  std::vector<double> out;
  const size_t chunk = 32;
  for (size_t i = 0; i < files.size(); i += chunk) {
    std::vector<Image> imgs;
    std::vector<std::string> ok;
    load_images(files, i, i + chunk, imgs, ok, [](const std::string& file, const std::string& what) {
      throw std::runtime_error("cannot score '" + file + "': " + what);
    });
    for (const auto& p : pred.predict(imgs, int(chunk))) out.push_back(p.ood_score);
  }
  return out;
}

std::vector<std::string> split_files(const std::string& data, const std::string& split) {
  std::vector<std::string> files;
  for (const auto& s : load_eval_set(data, split, "", EvalApp{}).samples) files.push_back(s.full_path());
  return files;
}

double share_over(const std::vector<double>& v, double t) {
  size_t n = 0;
  for (double x : v) n += x > t;
  return v.empty() ? 0.0 : double(n) / double(v.size());
}

}  // namespace

Command register_ood_ref(CLI::App& root) {
  struct Opts {
    std::string model, data, out, split = "val", against, test_split = "test", stain_norm = "none",
                cell_size = "none";
    double fpr = 0.05;
  };
  auto o = std::make_shared<Opts>();
  Command c;
  c.app = root.add_subcommand("ood-ref",
                              "Store the out-of-distribution threshold in a model, chosen on validation images");
  c.app->add_option("--model", o->model, "model (.vit)")->required()->check(CLI::ExistingFile);
  c.app->add_option("--data", o->data, "the prepared data set it was trained on (folder or manifest.csv)")->required();
  c.app->add_option("--out", o->out, "the model with the threshold (.vit); may be --model itself")->required();
  c.app->add_option("--split", o->split, "in-domain split the threshold is chosen on")->capture_default_str();
  c.app->add_option("--fpr", o->fpr, "share of in-domain images flagged (false-alarm rate)")
      ->check(CLI::Range(0.001, 0.5))
      ->capture_default_str();
  c.app->add_option("--against", o->against,
                    "optional: images of another domain (folder, searched recursively) to measure the AUROC against "
                    "--data's --test-split; never used to choose the threshold");
  c.app->add_option("--test-split", o->test_split, "in-domain split of the AUROC")->capture_default_str();
  add_stain_norm_option(c.app, &o->stain_norm);
  add_cell_size_option(c.app, &o->cell_size);
  c.run = [o]() -> int {
    Predictor pred(o->model);
    pred.set_stain_norm(o->stain_norm);
    pred.set_cell_size(o->cell_size);
    const std::vector<double> val = scores_of(pred, split_files(o->data, o->split));
    const double t = ood_threshold(val, o->fpr);
    nlohmann::json card = {{"score", "energy"},        {"threshold", t},
                           {"fpr", o->fpr},            {"split", o->split},
                           {"images", val.size()},     {"flagged_share_on_split", share_over(val, t)},
                           {"data", o->data},          {"stain_norm", o->stain_norm},
                           {"cell_size", o->cell_size}};
    std::printf("threshold %.4f: %zu '%s' images, %.1f%% flagged (asked %.1f%%)\n", t, val.size(), o->split.c_str(),
                100 * share_over(val, t), 100 * o->fpr);
    if (!o->against.empty()) {
      const std::vector<double> in = scores_of(pred, split_files(o->data, o->test_split));
      const std::vector<double> out = scores_of(pred, list_image_files({o->against}));
      if (out.empty()) throw std::runtime_error("--against '" + o->against + "' holds no images");
      card["auroc"] = {{"in", o->data + " (" + o->test_split + ", " + std::to_string(in.size()) + " images)"},
                       {"out", o->against + " (" + std::to_string(out.size()) + " images)"},
                       {"value", auroc(in, out)},
                       {"flagged_in", share_over(in, t)},
                       {"flagged_out", share_over(out, t)}};
      std::printf("AUROC %.4f (%s %zu images against %s %zu); flagged: %.1f%% in-domain, %.1f%% other\n",
                  auroc(in, out), o->test_split.c_str(), in.size(), o->against.c_str(), out.size(),
                  100 * share_over(in, t), 100 * share_over(out, t));
    }
    LoadedModel lm = load_model(o->model);
    if (!lm.meta.extra.is_object()) lm.meta.extra = nlohmann::json::object();
    lm.meta.extra["ood"] = card;
    save_model(o->out, *lm.model, lm.meta);
    std::printf("-> %s\n", o->out.c_str());
    return 0;
  };
  return c;
}

}  // namespace vit::cli
