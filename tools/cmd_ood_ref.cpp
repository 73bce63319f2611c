// vitengine ood-ref: store the out-of-distribution score's reference in a model (engine/eval/ood.h):
// for the Mahalanobis score, the statistics of the training split's features; for either score,
// the threshold chosen on in-domain validation images for a stated false-alarm rate, so that
// predict, serve, eval and differential can say when images look unlike the training data. The
// weights are copied bit for bit; only the metadata grows. With --against, it also measures how
// well the score tells the in-domain test images from another set (AUROC), and records that.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>

#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "tools/cli.h"
#include "weights/checkpoint.h"

namespace vit::cli {

namespace {

// The predictions (logits and features) of every image in `files`; a corrupt file is named.
std::vector<Prediction> predictions_of(Predictor& pred, const std::vector<std::string>& files) {
  std::vector<Prediction> out;
  const size_t chunk = 32;
  for (size_t i = 0; i < files.size(); i += chunk) {
    std::vector<Image> imgs;
    std::vector<std::string> ok;
    load_images(files, i, i + chunk, imgs, ok, [](const std::string& file, const std::string& what) {
      throw std::runtime_error("cannot score '" + file + "': " + what);
    });
    for (auto& p : pred.predict(imgs, int(chunk))) out.push_back(std::move(p));
    // A whole train split takes minutes on a CPU: say how far it is.
    if (files.size() >= 2000 && (i / chunk + 1) % 64 == 0)
      std::fprintf(stderr, "  %zu of %zu images\n", std::min(files.size(), i + chunk), files.size());
  }
  return out;
}

// `ref`'s score of each prediction (not the one the model already stores).
std::vector<double> scores_of(const OodReference& ref, const Predictor& pred, const std::vector<Prediction>& ps) {
  std::vector<double> out;
  for (const auto& p : ps)
    out.push_back(ref.score(p.logits.data(), pred.num_classes(), p.features.data(), int(p.features.size())));
  return out;
}

// The Mahalanobis statistics of the features of `split` (at most `images` of them, a seeded sample;
// 0 = all), grouped by the model's classes when the data's labels are all among them, and by the
// data's own labels otherwise (a new lab's labelled cells, say, for a model adapted to them): the
// score is the distance to the nearest group, whatever the groups are called.
MahalanobisStats fit_on_split(Predictor& pred, const std::string& data, const std::string& split, size_t images,
                              nlohmann::json& card) {
  const EvalSet set = load_eval_set(data, split, "", EvalApp{});
  std::vector<size_t> order(set.samples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (images > 0 && images < order.size()) {
    std::mt19937_64 rng(0);
    std::shuffle(order.begin(), order.end(), rng);
    order.resize(images);
    std::sort(order.begin(), order.end());
  }
  const std::vector<std::string>& names = pred.class_names();
  bool model_classes = true;
  for (const auto& t : set.truth_names) model_classes = model_classes && std::count(names.begin(), names.end(), t);
  std::vector<std::string> groups = names;
  if (!model_classes) {
    groups.assign(set.truth_names.begin(), set.truth_names.end());
    std::sort(groups.begin(), groups.end());
    groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  }
  std::vector<std::string> files;
  std::vector<int> labels;
  for (size_t i : order) {
    files.push_back(set.samples[i].full_path());
    labels.push_back(int(std::find(groups.begin(), groups.end(), set.truth_names[i]) - groups.begin()));
  }
  std::printf("fitting the Mahalanobis statistics on %zu '%s' images...\n", files.size(), split.c_str());
  std::fflush(stdout);
  const std::vector<Prediction> ps = predictions_of(pred, files);
  const int D = pred.config().dim;
  std::vector<float> feats;
  for (const auto& p : ps) feats.insert(feats.end(), p.features.begin(), p.features.end());
  card["fit"] = {{"split", split}, {"images", ps.size()}, {"of", set.samples.size()},
                 {"groups", model_classes ? "the model's classes" : "the data's labels"}};
  MahalanobisStats m = fit_mahalanobis(feats.data(), labels.data(), ps.size(), D, int(groups.size()));
  if (!model_classes) m.labels = groups;
  return m;
}

std::vector<std::string> split_files(const std::string& data, const std::string& split) {
  std::vector<std::string> files;
  for (const auto& s : load_eval_set(data, split, "", EvalApp{}).samples) files.push_back(s.full_path());
  return files;
}

// The threshold must come from images the statistics were not fitted on: their own distances are
// shorter than any new image's, so a threshold among them flags far more than --fpr of new in-domain
// images (ood-ref on 35 of a lab's cells as a folder of class folders, which has no splits, "5.7%
// flagged"; the lab's 351 cells then 91%). An image in both splits is refused by name.
void check_threshold_images_unseen(const std::string& data, const std::string& fit_split, const std::string& split) {
  const std::vector<std::string> fit = split_files(data, fit_split);
  const std::set<std::string> fitted(fit.begin(), fit.end());
  for (const std::string& f : split_files(data, split))
    if (fitted.count(f))
      throw std::runtime_error("--data '" + data + "': '" + f + "' is both in the --fit-split '" + fit_split +
                               "' images and in the --split '" + split +
                               "' images the threshold is chosen on (a folder of class folders has no splits: every "
                               "image is in both); a threshold chosen on the fitted images flags far more than --fpr "
                               "of new ones. Prepare the images with a val split (vitengine prepare FOLDER --out "
                               "PREPARED --labels folders) and pass PREPARED");
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
                cell_size = "auto", score = "mahalanobis", fit_split = "train";
    double fpr = 0.05;
    size_t fit_images = 0;
  };
  auto o = std::make_shared<Opts>();
  Command c;
  c.app = root.add_subcommand("ood-ref",
                              "Store the out-of-distribution score's reference in a model: the training features' "
                              "statistics and the threshold, chosen on validation images");
  c.app->add_option("--model", o->model, "model (.vit)")->required()->check(CLI::ExistingFile);
  c.app->add_option("--data", o->data, "the prepared data set it was trained on (folder or manifest.csv)")->required();
  c.app->add_option("--out", o->out, "the model with the reference (.vit); may be --model itself")->required();
  c.app->add_option("--score", o->score,
                    "mahalanobis (distance of the class-token features to the nearest class, statistics from "
                    "--fit-split) | energy (of the logits; no statistics)")
      ->check(CLI::IsMember({"mahalanobis", "energy"}))
      ->capture_default_str();
  c.app->add_option("--fit-split", o->fit_split, "split the Mahalanobis statistics are fitted on")->capture_default_str();
  c.app->add_option("--fit-images", o->fit_images, "at most this many --fit-split images, a seeded sample (0 = all)")
      ->capture_default_str();
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
    nlohmann::json card = {{"score", o->score}};
    OodReference ref;
    ref.kind = o->score;
    if (o->score == "mahalanobis") {
      check_threshold_images_unseen(o->data, o->fit_split, o->split);
      ref.maha = fit_on_split(pred, o->data, o->fit_split, o->fit_images, card);
      card["mahalanobis"] = ref.maha.to_json();
    }
    const std::vector<double> val = scores_of(ref, pred, predictions_of(pred, split_files(o->data, o->split)));
    const double t = ood_threshold(val, o->fpr);
    card.update({{"threshold", t},
                 {"fpr", o->fpr},
                 {"split", o->split},
                 {"images", val.size()},
                 {"flagged_share_on_split", share_over(val, t)},
                 {"data", o->data},
                 {"stain_norm", o->stain_norm},
                 {"cell_size", cell_size_norm_name(pred.cell_size())}});
    std::printf("%s threshold %.4f: %zu '%s' images, %.1f%% flagged (asked %.1f%%)\n", o->score.c_str(), t,
                val.size(), o->split.c_str(), 100 * share_over(val, t), 100 * o->fpr);
    if (!o->against.empty()) {
      const std::vector<std::string> other = list_image_files({o->against});
      if (other.empty()) throw std::runtime_error("--against '" + o->against + "' holds no images");
      const std::vector<double> in = scores_of(ref, pred, predictions_of(pred, split_files(o->data, o->test_split)));
      const std::vector<double> out = scores_of(ref, pred, predictions_of(pred, other));
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
