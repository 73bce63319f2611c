#include "engine/train/run_state.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "engine/util/file.h"

namespace vit {
namespace {
// JSON has no NaN: a value not measured is null.
nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
double unnum(const nlohmann::json& j) { return j.is_number() ? j.get<double>() : NAN; }
}  // namespace

nlohmann::json EpochRow::to_json() const {
  return {{"epoch", epoch},
          {"step", step},
          {"train_loss", num(train_loss)},
          {"train_acc", num(train_acc)},
          {"val_loss", num(val_loss)},
          {"val_acc", num(val_acc)},
          {"val_macro_f1", num(val_macro_f1)},
          {"lr", lr},
          {"img_s", img_s},
          {"elapsed_s", elapsed_s}};
}

EpochRow EpochRow::from_json(const nlohmann::json& j) {
  EpochRow r;
  r.epoch = j.at("epoch").get<int>();
  r.step = j.at("step").get<int64_t>();
  r.train_loss = unnum(j.at("train_loss"));
  r.train_acc = unnum(j.at("train_acc"));
  r.val_loss = unnum(j.at("val_loss"));
  r.val_acc = unnum(j.at("val_acc"));
  r.val_macro_f1 = unnum(j.at("val_macro_f1"));
  r.lr = j.at("lr").get<double>();
  r.img_s = j.at("img_s").get<double>();
  r.elapsed_s = j.at("elapsed_s").get<double>();
  return r;
}

nlohmann::json RunState::to_json(int64_t steps_per_epoch, double elapsed_now, uint64_t seed,
                                 const nlohmann::json& config) const {
  nlohmann::json h = nlohmann::json::array();
  for (const auto& r : history) h.push_back(r.to_json());
  return {{"step", step},
          {"epoch", epoch},
          {"batch_in_epoch", batch_in_epoch},
          {"steps_per_epoch", steps_per_epoch},
          {"epoch_loss_sum", epoch_loss_sum},
          {"epoch_correct", epoch_correct},
          {"epoch_seen", epoch_seen},
          {"epoch_batches", epoch_batches},
          {"best_val_macro_f1", best_val_macro_f1},
          {"best_epoch", best_epoch},
          {"elapsed_s", elapsed_now},
          {"history", h},
          // No stateful generator exists: the loader's order / augmentation are a pure
          // function of (seed, epoch, position) and dropout masks of (seed, step).
          {"rng", {{"seed", seed}, {"scheme", "counter: loader(seed, epoch, position), dropout(seed, step)"}}},
          {"config", config}};
}

RunState RunState::from_json(const nlohmann::json& j) {
  RunState s;
  s.step = j.at("step").get<int64_t>();
  s.epoch = j.at("epoch").get<int>();
  s.batch_in_epoch = j.at("batch_in_epoch").get<int64_t>();
  s.epoch_loss_sum = j.at("epoch_loss_sum").get<double>();
  s.epoch_correct = j.at("epoch_correct").get<int64_t>();
  s.epoch_seen = j.at("epoch_seen").get<int64_t>();
  s.epoch_batches = j.at("epoch_batches").get<int64_t>();
  s.best_val_macro_f1 = j.at("best_val_macro_f1").get<double>();
  s.best_epoch = j.at("best_epoch").get<int>();
  s.elapsed_s = j.at("elapsed_s").get<double>();
  for (const auto& r : j.at("history")) s.history.push_back(EpochRow::from_json(r));
  return s;
}

void remove_stale_temporaries(const std::string& run_folder, const std::function<void(const std::string&)>& log) {
  // What train and pretrain write into RUN (the report/ and pictures/ folders aside)
  static const std::vector<std::string> run_files = {"last.vit",    "last_ema.vit", "best.vit", "encoder.vit",
                                                     "config.json", "metrics.csv",  "steps.csv", "summary.md",
                                                     "loss.svg",    "accuracy.svg"};
  for (const auto& f : remove_stale_temp_files(run_folder, run_files))
    log("[run] removed " + f + ", left by a write that was killed (its process is gone)");
}

std::ofstream open_steps_csv(const std::string& path, bool resume, int64_t upto_step) {
  std::vector<std::string> keep;
  if (resume && std::filesystem::exists(path)) {
    std::ifstream f(path);
    std::string line;
    std::getline(f, line);
    while (std::getline(f, line)) {
      // a kill can leave a torn last line: keep only whole rows, in order, up to the checkpoint
      if (std::count(line.begin(), line.end(), ',') != 3) continue;
      int64_t s = std::strtoll(line.c_str(), nullptr, 10);
      if (s == int64_t(keep.size()) + 1 && s <= upto_step) keep.push_back(line);
    }
  }
  std::ostringstream s;
  s << "step,epoch,loss,lr\n";
  for (const auto& l : keep) s << l << "\n";
  write_text_atomic(path, s.str());
  std::ofstream out(path, std::ios::app);
  if (!out) throw std::runtime_error("cannot append to '" + path + "'");
  return out;
}

}  // namespace vit
