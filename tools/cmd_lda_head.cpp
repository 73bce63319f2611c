// vitengine lda-head: replace a model's head by the linear discriminant of the class statistics it
// stores for the Mahalanobis out-of-distribution score (engine/eval/ood.h discriminant_head): each
// class's logit orders the classes as the distance of the features to their training mean does,
// under the covariance the classes share. No image of a new lab and no label is used; the encoder
// is copied bit for bit. A head fitted by cross-entropy keys on the few directions that separated
// the home lab's classes; the discriminant weighs every direction by its spread at home, and on
// another lab's cells it called lymphocytes again (docs/robustness.md, "Without labels").
// The temperature is refitted on the home val split, as training fits it.
#include <algorithm>
#include <cstdio>

#include "engine/eval/calibration.h"
#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "tools/cli.h"
#include "weights/checkpoint.h"

namespace vit::cli {

Command register_lda_head(CLI::App& root) {
  struct Opts {
    std::string model, data, out, split = "val";
  };
  auto o = std::make_shared<Opts>();
  Command c;
  c.app = root.add_subcommand("lda-head",
                              "Replace the head by the linear discriminant of the stored class statistics "
                              "(for another lab's cells without labels)");
  c.app->add_option("--model", o->model, "model storing Mahalanobis statistics (`vitengine ood-ref`)")
      ->required()
      ->check(CLI::ExistingFile);
  c.app->add_option("--data", o->data, "the prepared data set it was trained on, for the temperature")->required();
  c.app->add_option("--out", o->out, "the model with the new head (.vit); may not be --model")->required();
  c.app->add_option("--split", o->split, "split the temperature is fitted on")->capture_default_str();
  c.run = [o]() -> int {
    if (o->out == o->model) throw std::runtime_error("--out must differ from --model: the original is kept");
    LoadedModel lm = load_model(o->model);
    const OodReference ref = OodReference::from_meta(lm.meta.extra);
    if (!ref.present || !ref.needs_features())
      throw std::runtime_error("'" + o->model + "' stores no Mahalanobis statistics; add them with `vitengine ood-ref "
                               "--model M --data PREPARED --out M2` on the data it was trained on");
    ViT& model = *lm.model;
    const int C = model.config().num_classes, D = model.config().dim;
    std::vector<float> W, b;
    discriminant_head(ref.maha, C, W, b);

    // The val split's features through the unchanged encoder; both heads' logits from them.
    Predictor pred(o->model);
    const EvalSet set = load_eval_set(o->data, o->split, "", EvalApp{});
    std::vector<float> logits;
    std::vector<int> labels;
    size_t right_before = 0;
    const auto& names = pred.class_names();
    for (size_t i = 0; i < set.samples.size(); i += 32) {
      std::vector<Image> imgs;
      for (size_t j = i; j < std::min(set.samples.size(), i + 32); ++j) imgs.push_back(load_image(set.samples[j].full_path()));
      const auto ps = pred.predict(imgs, 32);
      for (size_t k = 0; k < ps.size(); ++k) {
        const std::string& t = set.truth_names[i + k];
        const auto it = std::find(names.begin(), names.end(), t);
        if (it == names.end())
          throw std::runtime_error("'" + set.samples[i + k].full_path() + "' is labelled '" + t +
                                   "', which is not a class of the model");
        labels.push_back(int(it - names.begin()));
        right_before += ps[k].top == labels.back();
        for (int cl = 0; cl < C; ++cl) {
          double z = b[cl];
          for (int j = 0; j < D; ++j) z += double(W[size_t(cl) * D + j]) * ps[k].features[j];
          logits.push_back(float(z));
        }
      }
    }
    const size_t n = labels.size();
    if (!n) throw std::runtime_error("split '" + o->split + "' of '" + o->data + "' holds no images");
    size_t right_after = 0;
    for (size_t i = 0; i < n; ++i)
      right_after += int(std::max_element(logits.begin() + long(i * C), logits.begin() + long((i + 1) * C)) -
                         (logits.begin() + long(i * C))) == labels[i];
    // The discriminant's logits are log-likelihood ratios of Gaussian classes: far too sure of
    // themselves for real features (the fitted temperature passed 20, the edge of
    // fit_temperature's range). Each fitted temperature is folded into the head and fitted again,
    // until it lies inside the range; the stored temperature is the last one.
    const double T0 = lm.meta.temperature;
    double T = fit_temperature(logits.data(), labels.data(), n, C);
    for (int round = 0; round < 4 && T > 19.0; ++round) {
      for (auto& v : logits) v = float(v / T);
      for (auto& v : W) v = float(v / T);
      for (auto& v : b) v = float(v / T);
      T = fit_temperature(logits.data(), labels.data(), n, C);
    }

    std::copy(W.begin(), W.end(), model.param_ptr("heads.head.weight"));
    std::copy(b.begin(), b.end(), model.param_ptr("heads.head.bias"));
    lm.meta.temperature = float(T);
    lm.meta.extra.erase("version");  // a new model: its version comes from its own bytes
    lm.meta.extra["head"] = {{"kind", "linear discriminant of meta.extra.ood.mahalanobis (equal priors)"},
                             {"from_model", o->model},
                             {"split", o->split},
                             {"images", n},
                             {"accuracy_before", double(right_before) / double(n)},
                             {"accuracy_after", double(right_after) / double(n)},
                             {"temperature_before", T0},
                             {"temperature_after", lm.meta.temperature},
                             {"ece_after", calibration(logits.data(), labels.data(), n, C, T).ece}};
    save_model(o->out, model, lm.meta);
    std::printf("%s accuracy %.2f%% -> %.2f%% with the discriminant head (%zu images); temperature %.3f -> %.3f\n-> %s\n",
                o->split.c_str(), 100.0 * double(right_before) / double(n), 100.0 * double(right_after) / double(n),
                n, T0, T, o->out.c_str());
    return 0;
  };
  return c;
}

}  // namespace vit::cli
