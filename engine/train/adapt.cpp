// vitengine adapt (engine/train/adapt.h says what and why).
#include "engine/train/adapt.h"
#include "engine/train/adapt_report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include "engine/data/augment.h"
#include "engine/data/dataset.h"
#include "engine/data/labels.h"
#include "engine/eval/calibration.h"
#include "engine/eval/evaluate.h"
#include "engine/eval/inference.h"
#include "engine/eval/ood.h"
#include "engine/eval/tta.h"
#include "engine/util/rng.h"
#include "engine/util/sha256.h"
#include "weights/checkpoint.h"

namespace fs = std::filesystem;

namespace vit {

namespace {

// The memory the system can still give (MemAvailable of /proc/meminfo), 0 when unknown.
size_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  while (f >> key) {
    if (key == "MemAvailable:" && f >> kb) return kb * 1024;
    f.ignore(1 << 10, '\n');
  }
  return 0;
}

}  // namespace

void check_adapt_memory(size_t cells, size_t bytes_per_cell, const std::string& what) {
  const size_t need = cells * bytes_per_cell, have = available_memory();
  if (have && need > have - have / 10) {
    char b[400];
    std::snprintf(b, sizeof b,
                  "adapt would hold %zu images as %s, %.1f GB, but %.1f GB of memory are available; rehearse fewer "
                  "home images (--keep-per-class N)",
                  cells, what.c_str(), double(need) / 1e9, double(have) / 1e9);
    throw std::runtime_error(b);
  }
}

namespace {

// The labels the adaptation speaks: the model's classes, or a label map's targets. group[c] is
// the label model class c counts toward (-1: none).
struct Labels {
  std::vector<std::string> names;
  std::vector<int> group;
  std::vector<int> identity;  // class c -> c: the groups of a kept (home) image's label
  LabelMap map;
  bool mapped = false;
  int of(const std::string& truth, const std::string& folder) const {
    if (mapped) return map.truth_target(truth, folder);
    auto it = std::find(names.begin(), names.end(), truth);
    return it == names.end() ? -1 : int(it - names.begin());
  }
};

Labels make_labels(const AdaptRequest& req, const std::vector<std::string>& classes) {
  Labels L;
  for (size_t c = 0; c < classes.size(); ++c) L.identity.push_back(int(c));
  if (req.map.empty()) {
    L.names = classes;
    L.group = L.identity;
    return L;
  }
  L.map = read_label_map(req.map, classes);
  L.mapped = true;
  L.names = L.map.targets;
  L.group = L.map.class_to_target;
  return L;
}

// One labelled image: its file and the index of its label in Labels::names.
struct Cell {
  std::string path;
  int label = -1;
  bool kept = false;  // an in-domain training image kept for rehearsal: label is a model class
};

// The classes a cell's label covers: its Labels group, or the model class itself for a kept one.
const std::vector<int>& group_of(const Cell& c, const Labels& L) { return c.kept ? L.identity : L.group; }

std::vector<Cell> to_cells(const EvalSet& set, const Labels& L, const std::string& what) {
  std::map<std::string, int> unknown;
  std::vector<Cell> cells;
  for (size_t i = 0; i < set.samples.size(); ++i) {
    const int t = L.of(set.truth_names[i], set.folders.empty() ? "" : set.folders[i]);
    if (t < 0) unknown[set.truth_names[i]]++;
    cells.push_back({set.samples[i].full_path(), t});
  }
  if (!unknown.empty()) {
    std::string list, known;
    for (const auto& [name, n] : unknown) list += (list.empty() ? "'" : ", '") + name + "' (" + std::to_string(n) + ")";
    for (const auto& n : L.names) known += (known.empty() ? "" : ", ") + n;
    throw std::runtime_error(what + ": label(s) " + list + " are not " +
                             (L.mapped ? "targets of the label map" : "classes of the model") + " (" + known + ")" +
                             (L.mapped ? "" : "; pass --map FILE to adapt on another set's labels"));
  }
  return cells;
}

// The same image twice (a crop copied into two class folders, or twice into one) is refused,
// both files named: under two labels it trains the model on contradicting answers, and a copy
// could be trained on while its twin is held out and scored as unseen.
void check_no_duplicates(const std::vector<Cell>& cells, const std::vector<Cell>& held, const Labels& L) {
  std::vector<const Cell*> all;
  std::vector<std::string> paths;
  for (const std::vector<Cell>* part : {&cells, &held})
    for (const Cell& c : *part) all.push_back(&c), paths.push_back(c.path);
  const auto copies = same_bytes(paths);
  if (copies.empty()) return;
  const Cell &a = *all[copies.front().first], &c = *all[copies.front().second];
  throw std::runtime_error("'" + a.path + "' (" + L.names[size_t(a.label)] + ") and '" + c.path + "' (" +
                           L.names[size_t(c.label)] + ") are the same image: " +
                           (a.label == c.label ? "a copy would be trained on and held out as unseen"
                                               : "one cell has one label") +
                           "; remove one of them");
}

// Each class's cells in a seeded shuffle (stream `tag`), by label; `cells` is emptied.
std::map<int, std::vector<Cell>> shuffled_by_class(std::vector<Cell>& cells, uint64_t seed, uint64_t tag) {
  std::map<int, std::vector<Cell>> by;
  for (auto& c : cells) by[c.label].push_back(c);
  cells.clear();
  for (auto& [label, v] : by) {
    Rng r(mix_seed(seed, tag, uint64_t(label)));
    shuffle(v, r);
  }
  return by;
}

// Seeded, stratified: the first round(share * n) of each class's shuffled images, at least one
// when the class has two or more, never all of them.
void hold_out(std::vector<Cell>& cells, std::vector<Cell>& held, double share, uint64_t seed) {
  for (auto& [label, v] : shuffled_by_class(cells, seed, 0xADA7ull)) {
    size_t h = v.size() < 2 ? 0 : std::clamp<size_t>(size_t(std::lround(share * double(v.size()))), 1, v.size() - 1);
    held.insert(held.end(), v.begin(), v.begin() + long(h));
    cells.insert(cells.end(), v.begin() + long(h), v.end());
  }
}

// At most `shots` images per class, a seeded choice (the same cells for the same seed).
void cap_shots(std::vector<Cell>& cells, int shots, uint64_t seed) {
  if (shots <= 0) return;
  for (auto& [label, v] : shuffled_by_class(cells, seed, 0x5407ull)) {
    v.resize(std::min(v.size(), size_t(shots)));
    cells.insert(cells.end(), v.begin(), v.end());
  }
}

void check_cells(const std::vector<Cell>& cells, const Labels& L, int min_per_class, const std::string& data) {
  if (cells.empty()) throw std::runtime_error("'" + data + "' holds no images to adapt on");
  std::map<int, int> n;
  for (const auto& c : cells) n[c.label]++;
  if (n.size() < 2)
    throw std::runtime_error("'" + data + "' holds one class only ('" + L.names[size_t(n.begin()->first)] +
                             "'): adaptation needs labelled images of at least two classes");
  std::string few;
  for (const auto& [label, k] : n)
    if (k < min_per_class) few += (few.empty() ? "" : ", ") + L.names[size_t(label)] + " " + std::to_string(k);
  if (!few.empty())
    throw std::runtime_error("too few images to adapt on for: " + few + " (at least " + std::to_string(min_per_class) +
                             " per class; label more, or pass --min-per-class to accept fewer)");
}

// A cell's decoded model view, a corrupt file named: the new lab's cells normalised as --stain-norm
// and --cell-size ask; a home image (rehearsed, or home val) as the home lab's are seen, without
// either: the new lab's colour map or zoom would turn them into images the model never had.
Image cell_view(const Predictor& pred, const Cell& cell) {
  try {
    if (cell.kept) return pred.home_view(load_image(cell.path));
    return pred.normalized_view(load_image(cell.path));
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot adapt on '" + cell.path + "': " + e.what());
  }
}

// Normalised CHW floats of every cell (input_floats() each).
std::vector<float> prepare_all(const Predictor& pred, const std::vector<Cell>& cells) {
  std::vector<float> x(cells.size() * pred.input_floats());
  for (size_t i = 0; i < cells.size(); ++i)
    pred.to_input(cell_view(pred, cells[i]), x.data() + i * pred.input_floats());
  return x;
}

// Calls fn(cell, prediction) for every cell, prepared a chunk at a time (a val split of
// thousands of images would not fit in memory as floats).
void for_each_prediction(Predictor& pred, const std::vector<Cell>& cells,
                         const std::function<void(const Cell&, const Prediction&)>& fn) {
  const size_t chunk = 32;
  for (size_t i = 0; i < cells.size(); i += chunk) {
    const std::vector<Cell> part(cells.begin() + long(i), cells.begin() + long(std::min(cells.size(), i + chunk)));
    const std::vector<float> x = prepare_all(pred, part);
    const auto preds = pred.run(x.data(), int(part.size()), /*keep_attention=*/false);
    for (size_t b = 0; b < part.size(); ++b) fn(part[b], preds[b]);
  }
}

// Whether a prediction is right: a new-lab cell's top class is in its label's group; a kept
// (in-domain) one's is its class.
bool right(const Cell& c, const Prediction& p, const Labels& L) { return group_of(c, L)[size_t(p.top)] == c.label; }

// Accuracy over `cells`.
double accuracy(Predictor& pred, const std::vector<Cell>& cells, const Labels& L) {
  int n = 0;
  for_each_prediction(pred, cells, [&](const Cell& c, const Prediction& p) { n += right(c, p, L); });
  return cells.empty() ? 0 : double(n) / double(cells.size());
}

// What an unlabelled adaptation can report: the mean entropy of the (calibrated) class
// probabilities, and the share of images the stored out-of-distribution threshold flags.
nlohmann::json confidence(Predictor& pred, const std::vector<Cell>& cells) {
  double entropy = 0;
  int flagged = 0;
  for_each_prediction(pred, cells, [&](const Cell&, const Prediction& p) {
    for (float q : p.probs) entropy -= q > 0 ? double(q) * std::log(double(q)) : 0.0;
    flagged += p.unlike_training;
  });
  const double n = std::max<double>(1, double(cells.size()));
  nlohmann::json j = {{"mean_entropy", entropy / n}};
  j["flagged_unlike_training"] = pred.ood().present ? nlohmann::json(flagged / n) : nlohmann::json(nullptr);
  return j;
}

// The learning-rate scale of each parameter tensor: 1 trains it, 0 freezes it.
std::vector<float> trainable(const ViT& model, const std::string& freeze, int last_k) {
  const int depth = model.config().depth;
  std::vector<float> scale;
  for (const auto& p : model.params()) {
    if (freeze == "all-but-norm") {  // torchvision names: encoder.layers.*.ln_1/ln_2, encoder.ln
      scale.push_back(p.name.find(".ln_") != std::string::npos || p.name.rfind("encoder.ln.", 0) == 0 ? 1.0f : 0.0f);
      continue;
    }
    bool on = freeze == "none" || p.name.rfind("heads.", 0) == 0;
    if (freeze == "last-k") {
      on = on || p.name.rfind("encoder.ln.", 0) == 0;
      for (int l = std::max(0, depth - last_k); l < depth; ++l)
        on = on || p.name.rfind("encoder.layers.encoder_layer_" + std::to_string(l) + ".", 0) == 0;
    }
    scale.push_back(on ? 1.0f : 0.0f);
  }
  return scale;
}

// all-but-head: class-token features of every image and view, computed once.
std::vector<float> feature_cache(ViT& model, const std::vector<float>& x, size_t n, int views, int S) {
  const int D = model.config().dim;
  const size_t F = size_t(3) * S * S;
  std::vector<float> feats(n * size_t(views) * size_t(D)), view(F);
  ForwardOptions opt;
  opt.inference = true;
  for (size_t i = 0; i < n; ++i)
    for (int v = 0; v < views; ++v) {
      dihedral_view(x.data() + i * F, view.data(), 1, 3, S, v);
      model.forward(view.data(), 1, opt);
      std::copy(model.features(), model.features() + D, feats.data() + (i * size_t(views) + size_t(v)) * size_t(D));
    }
  return feats;
}

struct Schedule {
  int epochs, batch, views;
  float lr;
  uint64_t seed;
  std::function<void(const std::string&)> log;
  std::string augment;        // what a step of train_blocks sees: views | train (StepInputs)
  size_t keep_per_epoch = 0;  // train_blocks: kept images rehearsed per epoch (0: all)
  std::string lr_schedule = "constant";  // train_blocks: adapt_lr
  // train_blocks' progress (AdaptRequest::resume): the file, whether to start from it, the epoch
  // to stop after (0: none), what a resumed run must share with the stopped one, the meta saved.
  std::string progress;
  bool resume = false;
  int stop_after = 0;
  nlohmann::json fingerprint;
  const ModelMeta* meta = nullptr;
};

// Thrown by train_blocks at stop_after: the run ends with its progress kept, and no model written.
struct AdaptStopped {
  int epoch;
};

// Where train_blocks is in a run: what a resumed run restores besides the weights and moments.
struct BlocksAt {
  int epoch = 0;     // epochs done
  size_t step = 0;   // steps done (the lr schedule's place)
  int adam_step = 1;  // AdamW's bias-correction step
  uint64_t rng;      // the random stream's state (order, views, augmentation)
};

// A resumed run starts where the progress file says, with its weights and AdamW moments; a file
// written by a run with other settings is refused, naming the first that differs.
BlocksAt resume_blocks(ViT& model, const Schedule& s, BlocksAt at) {
  if (!s.resume) return at;
  LoadedModel lm = load_model(s.progress);
  const nlohmann::json saved = lm.train_state.value("fingerprint", nlohmann::json::object());
  for (const auto& [k, v] : s.fingerprint.items())
    if (saved.value(k, nlohmann::json()) != v)
      throw std::runtime_error("--resume: '" + s.progress + "' was written by a run with another " + k + " (" +
                               saved.value(k, nlohmann::json()).dump() + ", now " + v.dump() +
                               "): run it with the same settings, or remove the file to start again");
  if (!lm.has_optimizer) throw std::runtime_error("--resume: '" + s.progress + "' holds no optimizer state");
  load_weights_into(model, lm, /*with_optimizer=*/true);
  const nlohmann::json& t = lm.train_state;
  at.epoch = t.at("epoch").get<int>(), at.step = t.at("step").get<size_t>();
  at.adam_step = t.at("adam_step").get<int>(), at.rng = t.at("rng").get<uint64_t>();
  if (s.log) s.log("resumed from " + s.progress + " after epoch " + std::to_string(at.epoch));
  return at;
}

// After each epoch: the weights, moments and place, atomically, so a kill loses one epoch at most.
void save_blocks_progress(const ViT& model, const Schedule& s, const BlocksAt& at) {
  if (s.progress.empty()) return;
  save_model(s.progress, model, *s.meta, /*with_optimizer=*/true,
             {{"epoch", at.epoch},
              {"step", at.step},
              {"adam_step", at.adam_step},
              {"rng", at.rng},
              {"fingerprint", s.fingerprint}});
}

// Trains the head on cached features; each epoch visits every (image, view) once, shuffled.
void train_head(ViT& model, const std::vector<float>& feats, const std::vector<Cell>& cells, const Labels& L,
                const Schedule& s) {
  const int D = model.config().dim, C = model.config().num_classes;
  const std::vector<float> scale = trainable(model, "all-but-head", 0);
  std::vector<size_t> order(cells.size() * size_t(s.views));
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  Rng r(mix_seed(s.seed, 0x4EADull));
  AdamWParams hp;
  hp.lr = s.lr, hp.weight_decay = 0;
  std::vector<float> z(static_cast<size_t>(C)), dz(static_cast<size_t>(C));
  for (int e = 0; e < s.epochs; ++e) {
    shuffle(order, r);
    double loss = 0;
    for (size_t b0 = 0; b0 < order.size(); b0 += size_t(s.batch)) {
      const size_t B = std::min(order.size() - b0, size_t(s.batch));
      float* gw = model.grad_ptr("heads.head.weight");
      float* gb = model.grad_ptr("heads.head.bias");
      std::fill(gw, gw + size_t(C) * D, 0.0f);
      std::fill(gb, gb + C, 0.0f);
      const float* W = model.param_data() + model.param("heads.head.weight").offset;
      const float* bias = model.param_data() + model.param("heads.head.bias").offset;
      for (size_t k = b0; k < b0 + B; ++k) {
        const float* f = feats.data() + order[k] * size_t(D);
        for (int c = 0; c < C; ++c) {
          double a = bias[c];
          for (int d = 0; d < D; ++d) a += double(W[size_t(c) * D + d]) * f[d];
          z[size_t(c)] = float(a);
        }
        const Cell& cell = cells[order[k] / size_t(s.views)];
        loss += group_cross_entropy(z.data(), C, group_of(cell, L), cell.label, float(B), dz.data());
        for (int c = 0; c < C; ++c) {
          gb[c] += dz[size_t(c)];
          for (int d = 0; d < D; ++d) gw[size_t(c) * D + d] += dz[size_t(c)] * f[d];
        }
      }
      model.adamw_step_scaled(hp, 1.0f, scale);
      hp.step++;
    }
    if (s.log && (e == 0 || (e + 1) % 10 == 0 || e + 1 == s.epochs))
      s.log("epoch " + std::to_string(e + 1) + "/" + std::to_string(s.epochs) +
            ": loss " + std::to_string(loss / double(order.size())));
  }
}

// What a step of last-k / none shows of cell i: a random one of its `views` (dihedral turns of its
// prepared floats), or with augment "train" a fresh draw of the trainer's augmentation of its
// 8-bit view, so that 100 cells do not become 100 memorised pictures.
struct StepInputs {
  const Predictor& pred;
  std::vector<float> x;       // views: every cell's prepared floats
  std::vector<Image> images;  // train: every cell's stain-normalised model view
  AugmentConfig aug;
  int views = 1, S = 0;

  StepInputs(const Predictor& pred_, const std::vector<Cell>& cells, const Schedule& s)
      : pred(pred_), views(s.views), S(pred_.image_size()) {
    if (s.augment == "train") {
      aug.enabled = true;
      check_adapt_memory(cells.size(), pred.input_floats(), "8-bit views");
      images.reserve(cells.size());
      for (const Cell& c : cells) {
        images.push_back(cell_view(pred, c));
        // A whole home split takes a minute or two to decode: say how far it is.
        if (s.log && cells.size() >= 2000 && images.size() % 2000 == 0)
          s.log("loaded " + std::to_string(images.size()) + " of " + std::to_string(cells.size()) + " images");
      }
    } else {
      check_adapt_memory(cells.size(), pred.input_floats() * sizeof(float), "floats");
      x = prepare_all(pred, cells);
    }
  }
  void draw(size_t i, float* out, Rng& r) const {
    const size_t F = size_t(3) * S * S;
    if (images.empty()) {
      dihedral_view(x.data() + i * F, out, 1, 3, S, int(r.next() % uint64_t(views)));
      return;
    }
    Image v = images[i];
    augment_train(v, aug, r);
    pred.to_input(v, out);
  }
};

// The loss of cell i's logits z (C of them); writes dloss/dz divided by B to dz.
using CellLoss = std::function<double(size_t i, const float* z, float B, float* dz)>;

// last-k / none / all-but-norm: full forward and backward of a batch of drawn inputs per step.
// Cells [0, n_new) are visited every epoch; the kept ones after them as rehearsal_schedule says.
void train_blocks(ViT& model, const StepInputs& in, size_t n_new, size_t n, const CellLoss& loss_of,
                  const std::vector<float>& scale, const Schedule& s) {
  const int C = model.config().num_classes, S = model.config().image_size;
  const size_t F = size_t(3) * S * S;
  const auto kept = rehearsal_schedule(n - n_new, s.keep_per_epoch, s.epochs, mix_seed(s.seed, 0x4EE0ull));
  std::vector<size_t> order;
  BlocksAt at;
  at.rng = mix_seed(s.seed, 0xB10Cull);
  at = resume_blocks(model, s, at);
  Rng r(at.rng);
  AdamWParams hp;
  hp.lr = s.lr, hp.weight_decay = 0, hp.step = at.adam_step;
  std::vector<float> batch, dz;
  size_t steps = 0, step = at.step;
  for (const auto& k : kept) steps += (n_new + k.size() + size_t(s.batch) - 1) / size_t(s.batch);
  for (int e = at.epoch; e < s.epochs; ++e) {
    order.resize(n_new);
    for (size_t i = 0; i < n_new; ++i) order[i] = i;
    for (size_t k : kept[size_t(e)]) order.push_back(n_new + k);
    shuffle(order, r);
    double loss = 0;
    for (size_t b0 = 0; b0 < order.size(); b0 += size_t(s.batch)) {
      const int B = int(std::min(order.size() - b0, size_t(s.batch)));
      batch.resize(size_t(B) * F);
      dz.resize(size_t(B) * C);
      for (int b = 0; b < B; ++b) in.draw(order[b0 + size_t(b)], batch.data() + size_t(b) * F, r);
      const float* z = model.forward(batch.data(), B, ForwardOptions{});
      for (int b = 0; b < B; ++b)
        loss += loss_of(order[b0 + size_t(b)], z + size_t(b) * C, float(B), dz.data() + size_t(b) * C);
      model.zero_grad();
      model.backward_from(dz.data());
      hp.lr = adapt_lr(s.lr, s.lr_schedule, step++, steps);
      model.adamw_step_scaled(hp, 1.0f, scale);
      hp.step++;
    }
    if (s.log) s.log("epoch " + std::to_string(e + 1) + "/" + std::to_string(s.epochs) + ": loss " +
                     std::to_string(loss / double(order.size())));
    save_blocks_progress(model, s, {e + 1, step, hp.step, r.state()});
    if (s.stop_after > 0 && e + 1 == s.stop_after && e + 1 < s.epochs) throw AdaptStopped{e + 1};
  }
}

nlohmann::json counts(const std::vector<Cell>& cells, const Labels& L) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& c : cells)
    if (!c.kept) j[L.names[size_t(c.label)]] = j.value(L.names[size_t(c.label)], 0) + 1;
  return j;
}

void check_request(const AdaptRequest& req) {
  if (req.freeze != "auto" && req.freeze != "all-but-head" && req.freeze != "last-k" && req.freeze != "none" &&
      req.freeze != "all-but-norm")
    throw std::runtime_error("--freeze must be auto, all-but-head, last-k, none or all-but-norm, not '" + req.freeze +
                             "'");
  if (req.unlabelled) {
    if (req.freeze != "auto" && req.freeze != "all-but-norm")
      throw std::runtime_error("--unlabelled trains the LayerNorm parameters alone (--freeze all-but-norm), not --freeze " +
                               req.freeze + ": with more weights free, entropy minimisation can call every image one "
                               "class, which is as confident as a model gets");
    if (!req.keep_data.empty())
      throw std::runtime_error("--keep-data needs labelled adaptation: it is not taken with --unlabelled");
    if (req.shots > 0)
      throw std::runtime_error("--shots caps the images of each class: --unlabelled images have no class");
    if (!req.report.empty())
      throw std::runtime_error("--report evaluates held-out labelled cells before and after: --unlabelled images "
                               "have no labels to score; classify them with predict or eval instead");
    if (!req.map.empty())
      throw std::runtime_error("--map is not taken with --unlabelled, which lowers the entropy of the model's own "
                               "classes (the targets' entropy pulled every cell onto the commonest one); pass the map "
                               "to predict or eval (--map-rule restrict) when classifying");
  }
  if (req.augment != "auto" && req.augment != "views" && req.augment != "train")
    throw std::runtime_error("--augment must be auto, views or train, not '" + req.augment + "'");
  adapt_lr(1, req.lr_schedule, 0, 1);  // refuses an unknown schedule before any work
  if (req.lr_schedule == "cosine" && req.freeze == "all-but-head")
    throw std::runtime_error("--lr-schedule cosine is for an encoder that trains (--freeze last-k, none or "
                             "all-but-norm); all-but-head trains at a constant rate");
  if (req.keep_per_epoch < 0) throw std::runtime_error("--keep-per-epoch must be 0 (all) or more");
  if (req.keep_per_epoch > 0 && req.keep_data.empty())
    throw std::runtime_error("--keep-per-epoch rehearses images of --keep-data: pass --keep-data too");
  if (req.keep_per_epoch > 0 && req.freeze == "all-but-head")
    throw std::runtime_error("--keep-per-epoch is for an encoder that trains (--freeze last-k or none): all-but-head "
                             "caches every kept image's features once and rehearses them all each epoch");
  if (req.augment == "train" && req.freeze == "all-but-head")
    throw std::runtime_error("--augment train needs --freeze last-k or none: all-but-head trains the head on "
                             "features cached once per --views view");
  std::error_code ec;
  if (fs::exists(req.out) && fs::equivalent(req.out, req.model, ec))
    throw std::runtime_error("--out '" + req.out + "' is the model itself: write the adapted model to another file, so "
                             "that the original stays as it is");
  if (req.out.empty()) throw std::runtime_error("--out is empty");
}

// The adaptation and held-out cells of the request, checked. held_split: the manifest split the
// held-out cells are, or "" for a share of the adaptation cells.
void split_cells(const AdaptRequest& req, const Labels& L, std::vector<Cell>& cells, std::vector<Cell>& held,
                 std::string& held_split) {
  EvalApp app;  // class folders named as eval reads them
  app.folder_class = req.folder_class;
  EvalSet set = load_eval_set(req.data, req.split, req.data_root, app);
  cells = to_cells(set, L, "'" + req.data + "'");
  held_split.clear();
  if (set.source == EvalSet::Source::manifest) {
    EvalSet h;
    try {
      h = load_eval_set(req.data, req.holdout_split, req.data_root, EvalApp{});
    } catch (const std::runtime_error&) {  // no such split: hold out a share of the adaptation rows
    }
    held = to_cells(h, L, "'" + req.data + "' (split " + req.holdout_split + ")");
    if (!held.empty()) held_split = req.holdout_split;
  }
  check_no_duplicates(cells, held, L);
  if (held.empty() && req.holdout > 0) hold_out(cells, held, req.holdout, req.seed);
  cap_shots(cells, req.shots, req.seed);
  check_cells(cells, L, req.min_per_class, req.data);
}

// Rehearsal: up to keep_per_class images of each class from the home data's train split (a
// seeded choice), trained beside the new lab's cells so that the model keeps what it knew; and
// the home val split, to measure that it did. Never the home test split.
void rehearsal_cells(const AdaptRequest& req, const std::vector<std::string>& classes, std::vector<Cell>& kept,
                     std::vector<Cell>& val) {
  const auto load = [&](const std::string& split) {
    const EvalSet set = load_eval_set(req.keep_data, split, "", EvalApp{});
    if (set.source != EvalSet::Source::manifest)
      throw std::runtime_error("--keep-data '" + req.keep_data +
                               "' must be a prepared folder or manifest.csv (its train split is kept, its val split "
                               "measured)");
    std::vector<Cell> out;
    for (size_t i = 0; i < set.samples.size(); ++i) {
      auto it = std::find(classes.begin(), classes.end(), set.truth_names[i]);
      if (it == classes.end())
        throw std::runtime_error("--keep-data '" + req.keep_data + "': label '" + set.truth_names[i] +
                                 "' is not a class of the model");
      out.push_back({set.samples[i].full_path(), int(it - classes.begin()), true});
    }
    return out;
  };
  kept = load("train");
  cap_shots(kept, std::max(0, req.keep_per_class), mix_seed(req.seed, 0x4EE9ull));  // 0: all of them
  val = load("val");
}

}  // namespace

double group_cross_entropy(const float* z, int C, const std::vector<int>& group, int label, float scale, float* dz) {
  float m = *std::max_element(z, z + C);
  std::vector<double> p(static_cast<size_t>(C));
  double s = 0, in = 0;
  for (int c = 0; c < C; ++c) s += (p[size_t(c)] = std::exp(double(z[c] - m)));
  for (int c = 0; c < C; ++c) {
    p[size_t(c)] /= s;
    if (group[size_t(c)] == label) in += p[size_t(c)];
  }
  in = std::max(in, 1e-30);
  for (int c = 0; c < C; ++c)
    dz[c] = float((p[size_t(c)] - (group[size_t(c)] == label ? p[size_t(c)] / in : 0.0)) / scale);
  return -std::log(in);
}

namespace {

// Unlabelled: every image of a prepared split, or every image under a folder (labels, if any,
// unused). At least one batch of them: entropy minimisation on a handful of images only makes the
// model sure of those.
std::vector<Cell> unlabelled_cells(const AdaptRequest& req) {
  std::vector<Cell> cells;
  if (fs::exists(manifest_path(req.data))) {
    for (const Sample& s : load_eval_set(req.data, req.split, req.data_root, EvalApp{}).samples)
      cells.push_back({s.full_path(), -1});
  } else if (fs::is_directory(req.data)) {
    for (const auto& [root, rel] : image_files_under({req.data})) cells.push_back({(fs::path(root) / rel).string(), -1});
  } else {
    throw std::runtime_error("--data '" + req.data + "' is neither a folder of images nor a prepared folder (manifest.csv)");
  }
  const size_t need = size_t(std::max(1, req.batch));
  if (cells.size() < need)
    throw std::runtime_error("'" + req.data + "' holds " + std::to_string(cells.size()) +
                             " images: --unlabelled adapts on at least one batch (--batch " + std::to_string(need) +
                             ") of the new lab's images, and more is better (a hundred or so)");
  return cells;
}

// After a rehearsed adaptation: the temperature and the out-of-distribution reference were fitted
// to the original model's outputs on its home data, and the adapted model's differ
// (docs/robustness.md measured the ECE rising from 0.030 to 0.056). Both are refitted, as training
// and `ood-ref` fit them: the temperature minimising the home val NLL; for the Mahalanobis score,
// when the encoder trained, the statistics on the rehearsed home train images' new features; the
// threshold flagging the stored false-alarm rate of home val (kept absent when the original stored
// none). Returns the adapted model's val accuracy; `meta` and the card get the new values.
double recalibrate_on_home_val(Predictor& pred, const std::vector<Cell>& val, const std::vector<Cell>& kept,
                               bool encoder_moved, const AdaptRequest& req, ModelMeta& meta, nlohmann::json& card) {
  const int C = pred.num_classes(), D = pred.config().dim;
  OodReference ood = pred.ood();
  nlohmann::json fit;
  if (ood.present && ood.needs_features() && encoder_moved) {
    std::vector<float> feats;
    std::vector<int> labels;
    for_each_prediction(pred, kept, [&](const Cell& c, const Prediction& p) {
      feats.insert(feats.end(), p.features.begin(), p.features.end());
      labels.push_back(c.label);
    });
    ood.maha = fit_mahalanobis(feats.data(), labels.data(), labels.size(), D, C, ood.maha.shrinkage);
    fit = {{"split", "train"}, {"images", labels.size()}, {"data", req.keep_data}};
  }
  std::vector<float> logits;
  std::vector<int> labels;
  std::vector<double> scores;
  size_t n_right = 0;
  for_each_prediction(pred, val, [&](const Cell& c, const Prediction& p) {
    logits.insert(logits.end(), p.logits.begin(), p.logits.end());
    labels.push_back(c.label);
    scores.push_back(ood.score(p.logits.data(), C, p.features.data(), D));
    n_right += p.top == c.label;  // as right() counts a kept image
  });
  const size_t n = labels.size();
  const double T0 = meta.temperature, T = fit_temperature(logits.data(), labels.data(), n, C);
  meta.temperature = float(T);
  nlohmann::json j = {{"split", "val"},
                      {"data", req.keep_data},
                      {"images", n},
                      {"temperature_before", T0},
                      {"temperature_after", meta.temperature},
                      {"ece_before", calibration(logits.data(), labels.data(), n, C, T0).ece},
                      {"ece_after", calibration(logits.data(), labels.data(), n, C, meta.temperature).ece}};
  if (ood.present) {
    const double t = ood_threshold(scores, ood.fpr);
    size_t flagged = 0;
    for (double e : scores) flagged += e > t;
    j["ood_score"] = ood.kind;
    j["ood_threshold_before"] = ood.threshold;
    j["ood_threshold_after"] = t;
    // The AUROC the original recorded was measured with its own outputs: not carried over.
    nlohmann::json o = {{"score", ood.kind},          {"threshold", t},
                        {"fpr", ood.fpr},             {"split", "val"},
                        {"images", n},                {"flagged_share_on_split", double(flagged) / double(n)},
                        {"data", req.keep_data},      {"stain_norm", "none"},
                        {"cell_size", cell_size_norm_name(resolve_cell_size("auto", meta))},
                        {"fitted_by", "adapt"}};  // home images: their own view
    if (ood.needs_features()) {
      o["mahalanobis"] = ood.maha.to_json();
      o["fit"] = fit.is_null() ? meta.extra["ood"].value("fit", nlohmann::json()) : fit;
    }
    meta.extra["ood"] = o;
  }
  card["recalibrated"] = j;
  return n ? double(n_right) / double(n) : 0.0;
}

// Without home data to refit on, an out-of-distribution reference the adaptation made stale is
// dropped rather than kept: a threshold on the original's energies (any adaptation moves the
// logits), or Mahalanobis statistics of the original's features (when the encoder trained), would
// flag images by a model that no longer exists. Mahalanobis statistics with the encoder frozen
// still describe the features, and stay. The card says what was dropped and how to add a new one.
void drop_stale_ood(const OodReference& ood, bool encoder_moved, ModelMeta& meta, nlohmann::json& card) {
  if (!ood.present || (ood.needs_features() && !encoder_moved)) return;
  meta.extra.erase("ood");
  card["ood_reference"] = "dropped: the original's " + ood.kind +
                          " reference was fitted to outputs this adaptation changed; add the adapted model's own "
                          "with `vitengine ood-ref --model OUT --data PREPARED` on data it should call familiar";
}

// Without home data, the temperature the original fitted on its home val split no longer matches
// the adapted model's logits. Held-out validation cells of the new lab (a share of the adaptation
// cells, or a split other than test) refit it by the NLL of each cell's label (its group's
// probability under --map), as training fits it on val. Kept, and the card says why: on a test
// split (never fitted on), on fewer than kMinTemperatureCells cells, or when the fit runs to a
// bound (every held-out cell right: the NLL keeps falling as T -> 0).
constexpr size_t kMinTemperatureCells = 20;
// `after`: the adapted model's predictions of `held`, in order.
void refit_temperature_on_held(const std::vector<Prediction>& after, const std::vector<Cell>& held,
                               const std::string& held_split, const Labels& L, const AdaptRequest& req,
                               ModelMeta& meta, nlohmann::json& card) {
  nlohmann::json j = {{"cells", held.size()},
                      {"on", held_split.empty() ? "the held-out share of the adaptation cells" : "split " + held_split},
                      {"temperature_before", meta.temperature}};
  const auto keep = [&](const std::string& why) {
    j["temperature_after"] = meta.temperature;
    j["kept"] = why;
    card["temperature"] = j;
    if (req.log) req.log("temperature kept (" + std::to_string(meta.temperature) + "): " + why);
  };
  if (held_split == "test")
    return keep("the held-out cells are a test split, never fitted on; hold out validation cells (--holdout-split "
                "none --holdout 0.25) or rehearse the home data (--keep-data) to refit it");
  if (held.size() < kMinTemperatureCells)
    return keep("fewer than " + std::to_string(kMinTemperatureCells) + " held-out cells to fit it on");
  const int C = int(after.front().logits.size());
  std::vector<float> z;
  std::vector<const std::vector<int>*> groups;
  std::vector<int> labels;
  for (size_t i = 0; i < held.size(); ++i) {
    z.insert(z.end(), after[i].logits.begin(), after[i].logits.end());
    groups.push_back(&group_of(held[i], L));
    labels.push_back(held[i].label);
  }
  const auto nll = [&](double T) {
    std::vector<float> zt(static_cast<size_t>(C)), dz(static_cast<size_t>(C));
    double sum = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      for (int k = 0; k < C; ++k) zt[size_t(k)] = float(double(z[i * size_t(C) + size_t(k)]) / T);
      sum += group_cross_entropy(zt.data(), C, *groups[i], labels[i], 1.0f, dz.data());
    }
    return sum / double(labels.size());
  };
  const double T = fit_temperature(nll);
  if (T < kMinTemperature * 1.01 || T > kMaxTemperature / 1.01)
    return keep("the fit ran to a bound of [1/20, 20] (every held-out cell right, or none): nothing to fit it on");
  j["nll_before"] = nll(meta.temperature);
  meta.temperature = float(T);
  j["temperature_after"] = meta.temperature;
  j["nll_after"] = nll(T);
  card["temperature"] = j;
  if (req.log)
    req.log("temperature refitted on " + std::to_string(held.size()) + " held-out cells: " +
            std::to_string(j["temperature_before"].get<double>()) + " -> " + std::to_string(T));
}

// The labelled adaptation: trains, and fills the card's data and held-out numbers. Returns the
// held-out cells (for --report).
std::vector<HeldOutCell> adapt_labelled(const AdaptRequest& req, Predictor& pred, const Labels& L,
                                        const std::string& freeze, const Schedule& s, ModelMeta& meta,
                                        nlohmann::json& card) {
  std::vector<Cell> cells, held, kept, home_val;
  std::string held_split;
  split_cells(req, L, cells, held, held_split);
  if (!req.report.empty() && held.empty())  // before any training: the report would have nothing to score
    throw std::runtime_error("--report scores the held-out cells, and none are held out (--holdout 0, and no '" +
                             req.holdout_split + "' rows in '" + req.data + "'): hold some out, or drop --report");
  const size_t n_new = cells.size();
  if (!req.keep_data.empty()) rehearsal_cells(req, pred.class_names(), kept, home_val);
  cells.insert(cells.end(), kept.begin(), kept.end());
  if (req.log)
    req.log("adapting on " + std::to_string(n_new) + " images (+" + std::to_string(kept.size()) + " kept from " +
            (req.keep_data.empty() ? "no home data" : req.keep_data) +
            (s.keep_per_epoch > 0 && s.keep_per_epoch < kept.size()
                 ? ", " + std::to_string(s.keep_per_epoch) + " of them per epoch"
                 : "") +
            "), " + std::to_string(held.size()) + " held out");
  const double before = accuracy(pred, held, L), home_before = accuracy(pred, home_val, L);
  ViT& model = pred.model();
  if (freeze == "all-but-head") {
    check_adapt_memory(cells.size(), pred.input_floats() * sizeof(float), "floats");
    const std::vector<float> feats =
        feature_cache(model, prepare_all(pred, cells), cells.size(), s.views, model.config().image_size);
    if (req.log) req.log("cached " + std::to_string(cells.size() * size_t(s.views)) + " class-token features");
    train_head(model, feats, cells, L, s);
  } else {
    const int C = model.config().num_classes;
    const CellLoss loss = [&](size_t i, const float* z, float B, float* dz) {
      return group_cross_entropy(z, C, group_of(cells[i], L), cells[i].label, B, dz);
    };
    train_blocks(model, StepInputs(pred, cells, s), n_new, cells.size(), loss,
                 trainable(model, freeze, req.last_k), s);
  }
  card["cells"] = n_new;
  card["cells_per_label"] = counts(cells, L);
  // The held-out cells through the adapted model once: their accuracy, and the temperature's refit.
  std::vector<Prediction> after;
  int n_right = 0;
  for_each_prediction(pred, held, [&](const Cell& c, const Prediction& p) {
    n_right += right(c, p, L);
    after.push_back(p);
  });
  card["held_out"] = {{"images", held.size()},
                      {"per_label", counts(held, L)},
                      {"accuracy_before", before},
                      {"accuracy_after", held.empty() ? 0.0 : double(n_right) / double(held.size())}};
  const double home_after =
      home_val.empty() ? 0.0 : recalibrate_on_home_val(pred, home_val, kept, freeze != "all-but-head", req, meta, card);
  if (home_val.empty()) refit_temperature_on_held(after, held, held_split, L, req, meta, card);
  if (!kept.empty())
    card["rehearsal"] = {{"data", req.keep_data},
                         {"per_class", req.keep_per_class},
                         {"per_epoch", req.keep_per_epoch},
                         {"images", kept.size()},
                         {"val_images", home_val.size()},
                         {"val_accuracy_before", home_before},
                         {"val_accuracy_after", home_after}};
  std::vector<HeldOutCell> out;
  for (const Cell& c : held) out.emplace_back(c.path, L.names.at(size_t(c.label)));
  return out;
}

// The unlabelled adaptation (TENT): the LayerNorm parameters lower the entropy of the class
// probabilities on every image; the card gets the mean entropy and flagged share before and after.
void adapt_unlabelled(const AdaptRequest& req, Predictor& pred, const Schedule& s, nlohmann::json& card) {
  const std::vector<Cell> cells = unlabelled_cells(req);
  if (req.log) req.log("adapting on " + std::to_string(cells.size()) + " unlabelled images");
  const nlohmann::json before = confidence(pred, cells);
  ViT& model = pred.model();
  const int C = model.config().num_classes;
  const CellLoss loss = [&](size_t, const float* z, float B, float* dz) { return softmax_entropy(z, C, B, dz); };
  train_blocks(model, StepInputs(pred, cells, s), cells.size(), cells.size(), loss,
               trainable(model, "all-but-norm", 0), s);
  card["cells"] = cells.size();
  card["labels"] = "none";
  card["objective"] = "entropy of the model's classes";
  card["before"] = before;
  card["after"] = confidence(pred, cells);
}

}  // namespace

std::string adapt_progress_path(const std::string& out) { return out + ".progress.vit"; }

float adapt_lr(float lr, const std::string& schedule, size_t step, size_t steps) {
  if (schedule == "constant") return lr;
  if (schedule != "cosine") throw std::runtime_error("--lr-schedule must be constant or cosine, not '" + schedule + "'");
  return float(0.5 * double(lr) * (1.0 + std::cos(M_PI * double(step) / double(std::max<size_t>(1, steps)))));
}

std::vector<std::vector<size_t>> rehearsal_schedule(size_t n_kept, size_t per_epoch, int epochs, uint64_t seed) {
  std::vector<std::vector<size_t>> plan(size_t(std::max(0, epochs)));
  std::vector<size_t> perm(n_kept);
  for (size_t i = 0; i < n_kept; ++i) perm[i] = i;
  if (per_epoch == 0 || per_epoch >= n_kept) {
    for (auto& e : plan) e = perm;
    return plan;
  }
  Rng r(seed);
  size_t next = n_kept;  // used up: draw the first permutation
  for (auto& e : plan) {
    e.reserve(per_epoch);
    while (e.size() < per_epoch) {
      if (next == n_kept) {
        // A fresh permutation, with the images this epoch already took from the last one put at its
        // end: none is taken twice in an epoch, and each permutation is still visited whole.
        shuffle(perm, r);
        std::stable_partition(perm.begin(), perm.end(),
                              [&](size_t k) { return std::find(e.begin(), e.end(), k) == e.end(); });
        next = 0;
      }
      e.push_back(perm[next++]);
    }
  }
  return plan;
}

double softmax_entropy(const float* z, int C, float scale, float* dz) {
  // dH/dz_c = -p_c (log p_c + H).
  const double m = *std::max_element(z, z + C);
  std::vector<double> p(static_cast<size_t>(C));
  double sum = 0, H = 0;
  for (int c = 0; c < C; ++c) sum += (p[size_t(c)] = std::exp(double(z[c]) - m));
  for (double& v : p) v /= sum;
  for (double v : p) H -= v > 0 ? v * std::log(v) : 0.0;
  for (int c = 0; c < C; ++c) {
    const double pc = p[size_t(c)];
    dz[c] = float(-pc * ((pc > 0 ? std::log(pc) : 0.0) + H) / scale);
  }
  return H;
}

namespace {

// What a resumed run must share with the one that wrote the progress: every setting that changes
// what is trained, and the model's bytes.
nlohmann::json adapt_fingerprint(const AdaptRequest& r) {
  return {{"model", sha256_file(r.model)}, {"data", r.data},
          {"split", r.split},              {"data_root", r.data_root},
          {"holdout_split", r.holdout_split}, {"holdout", r.holdout},
          {"map", r.map},                  {"freeze", r.freeze},
          {"unlabelled", r.unlabelled},    {"last_k", r.last_k},
          {"shots", r.shots},              {"min_per_class", r.min_per_class},
          {"epochs", r.epochs},            {"lr", r.lr},
          {"lr_schedule", r.lr_schedule},  {"batch", r.batch},
          {"seed", r.seed},                {"stain_norm", r.stain_norm},
          {"cell_size", r.cell_size},      {"views", r.views},
          {"augment", r.augment},          {"keep_data", r.keep_data},
          {"keep_per_class", r.keep_per_class}, {"keep_per_epoch", r.keep_per_epoch}};
}

// --resume and --stop-after apply to the runs that keep progress (the encoder trains); a progress
// file is never silently overwritten or silently ignored.
void check_progress(const AdaptRequest& req, bool head_only) {
  const std::string p = adapt_progress_path(req.out);
  if (head_only && (req.resume || req.stop_after > 0))
    throw std::runtime_error(std::string(req.resume ? "--resume" : "--stop-after") +
                             " applies to runs that train the encoder (--freeze last-k, none or all-but-norm); "
                             "all-but-head trains the head on cached features in seconds");
  if (req.resume && !fs::exists(p))
    throw std::runtime_error("--resume: no progress file '" + p + "' to resume from (run without --resume)");
  if (!req.resume && fs::exists(p))
    throw std::runtime_error("'" + p + "' holds the progress of a stopped run: pass --resume to continue it, or "
                             "remove it to start again");
  if (req.stop_after < 0) throw std::runtime_error("--stop-after must be 0 (never) or more");
}

}  // namespace

nlohmann::json adapt(const AdaptRequest& req) {
  const auto t0 = std::chrono::steady_clock::now();
  check_request(req);
  Predictor pred(req.model);
  pred.set_stain_norm(req.stain_norm);
  pred.set_cell_size(req.cell_size);
  const Labels L = make_labels(req, pred.class_names());
  const std::string freeze = req.freeze != "auto" ? req.freeze : req.unlabelled ? "all-but-norm" : "none";
  const bool head_only = freeze == "all-but-head";
  // Defaults chosen on bccd's adaptation cells (labelled: 30% held out, three seeds; unlabelled:
  // adapted on all 97 without labels, then scored with them; docs/robustness.md).
  Schedule s{req.epochs > 0 ? req.epochs : head_only ? 100 : req.unlabelled ? 10 : 30, std::max(1, req.batch),
             tta_view_count(req.views), req.lr > 0 ? req.lr : head_only ? 1e-3f : 3e-4f, req.seed,
             req.log, req.augment != "auto" ? req.augment : head_only || req.unlabelled ? "views" : "train",
             size_t(std::max(0, req.keep_per_epoch)), req.lr_schedule};
  nlohmann::json card = {{"from_model", fs::path(req.model).filename().string()},
                         {"data", req.data},
                         {"map", req.map},
                         {"freeze", freeze},
                         {"last_k", freeze == "last-k" ? req.last_k : 0},
                         {"shots", req.shots},
                         {"views", req.views},
                         {"augment", s.augment},
                         {"epochs", s.epochs},
                         {"lr", s.lr},
                         {"lr_schedule", s.lr_schedule},
                         {"seed", req.seed},
                         {"stain_norm", req.stain_norm},
                         {"cell_size", cell_size_norm_name(pred.cell_size())}};
  pred.model().reset_optimizer();
  ModelMeta meta = pred.meta();  // the temperature and threshold refitted when home val is at hand
  check_progress(req, head_only);
  if (!head_only) {  // `meta` changes only after training (the refits), so the progress files carry the original's
    s.progress = adapt_progress_path(req.out), s.resume = req.resume, s.stop_after = req.stop_after;
    s.fingerprint = adapt_fingerprint(req), s.meta = &meta;
  }
  std::vector<HeldOutCell> held;
  try {
    if (req.unlabelled)
      adapt_unlabelled(req, pred, s, card);
    else
      held = adapt_labelled(req, pred, L, freeze, s, meta, card);
  } catch (const AdaptStopped& stop) {
    card["stopped_after_epoch"] = stop.epoch;
    card["progress"] = s.progress;
    if (req.log)
      req.log("stopped after epoch " + std::to_string(stop.epoch) + " of " + std::to_string(s.epochs) +
              "; the progress is in " + s.progress + ": the same command with --resume finishes the run");
    return card;
  }
  if (!card.contains("recalibrated")) drop_stale_ood(pred.ood(), !head_only, meta, card);
  card["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!meta.extra.is_object()) meta.extra = nlohmann::json::object();
  meta.extra.erase("version");  // a new model: its version comes from its own bytes
  meta.extra["adaptation"] = card;
  save_model(req.out, pred.model(), meta);
  if (!s.progress.empty()) fs::remove(s.progress);  // the run is whole: nothing left to resume
  if (!req.report.empty()) card["report"] = write_adapt_report(req, held, L.names, card);
  return card;
}

}  // namespace vit
