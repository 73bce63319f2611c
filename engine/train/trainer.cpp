// train() and the schedule helpers; the run itself is engine/train/run.h.
#include "engine/train/trainer.h"

#include "engine/train/run.h"

namespace vit {

// ======================================================================= helpers

AugmentConfig augment_preset(const std::string& s) {
  AugmentConfig a;
  if (s == "none") {
    a.enabled = false;
  } else if (s == "light") {  // the reference recipe's default augmentation
    a.enabled = true;
    a.rotate_flip = true;
    a.scale_min = 0.87f;
    a.scale_max = 1.15f;
    a.color = 0.2f;
    a.blur_prob = 0.0f;
  } else if (s == "strong") {  // the reference's --strong: wider scale, stain, blur
    a.enabled = true;
    a.rotate_flip = true;
    a.scale_min = 0.7f;
    a.scale_max = 1.4f;
    a.color = 0.35f;
    a.blur_prob = 0.3f;
  } else {
    throw ConfigError("config field 'augment' must be none, light or strong, got '" + s + "'");
  }
  return a;
}

AugmentConfig train_augment(const TrainConfig& c) {
  AugmentConfig a = augment_preset(c.augment);
  a.rotate_flip = a.rotate_flip && c.rotate_flip == "on";
  if (!c.scale_jitter) a.scale_min = a.scale_max = 1.0f;
  if (!c.color_jitter) a.color = 0.0f;
  a.translate = c.translate;
  a.reflect_border = c.reflect_border;
  a.hed = c.hed_jitter;
  return a;
}

float lr_at(const TrainConfig& c, int64_t step, int64_t spe) {
  const int64_t total = int64_t(c.epochs) * spe;
  const int64_t warm = int64_t(std::llround(double(c.warmup_epochs) * double(spe)));
  if (step < warm) return c.lr * float(double(step + 1) / double(warm));
  if (c.schedule == "cosine") {
    double t = double(step - warm) / double(std::max<int64_t>(total - warm, 1));
    t = std::min(t, 1.0);
    double f = c.min_lr_ratio + (1.0 - c.min_lr_ratio) * 0.5 * (1.0 + std::cos(M_PI * t));
    return float(c.lr * f);
  }
  return c.lr;
}

uint64_t dropout_seed(uint64_t seed, int64_t step) { return splitmix64_at(splitmix64_at(seed, 0) ^ uint64_t(step), 0); }

// ======================================================================= the run

namespace train_detail {

std::string cell(double v, const char* f) {
  if (!std::isfinite(v)) return "";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string metrics_csv(const std::vector<EpochRow>& rows) {
  std::ostringstream s;
  s << "epoch,step,train_loss,train_acc,val_loss,val_acc,val_macro_f1,lr,img_s,elapsed_s\n";
  for (const auto& r : rows)
    s << r.epoch << "," << r.step << "," << cell(r.train_loss) << "," << cell(r.train_acc) << "," << cell(r.val_loss)
      << "," << cell(r.val_acc) << "," << cell(r.val_macro_f1) << "," << cell(r.lr, "%.6g") << ","
      << cell(r.img_s, "%.2f") << "," << cell(r.elapsed_s, "%.2f") << "\n";
  return s.str();
}

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char b[32];
  int t = int(s + 0.5);
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(b, sizeof b, "%dm%02ds", t / 60, t % 60);
  else
    std::snprintf(b, sizeof b, "%ds", t);
  return b;
}

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<std::string> copy_matching(const ViT& src, ViT& dst) {
  std::vector<std::string> missing;
  for (const auto& p : dst.params()) {
    bool done = false;
    for (const auto& q : src.params())
      if (q.name == p.name && q.shape == p.shape) {
        std::copy(src.param_data() + q.offset, src.param_data() + q.offset + q.numel, dst.param_data() + p.offset);
        done = true;
        break;
      }
    if (!done) missing.push_back(p.name);
  }
  return missing;
}

}  // namespace train_detail

TrainSummary train(const TrainRequest& req) { return train_detail::Run(req).go(); }

}  // namespace vit
