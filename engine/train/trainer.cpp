#include "engine/train/trainer.h"
#include "engine/train/run_state.h"
#include "engine/eval/tta.h"
#include "engine/util/async_writer.h"
#include "engine/util/file.h"
#include "engine/util/rng.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "engine/eval/calibration.h"
#include "engine/eval/metrics.h"
#include "engine/data/pack.h"
#include "engine/eval/plots.h"
#include "weights/checkpoint.h"
#if __has_include("weights/torchvision.h")
#include "weights/torchvision.h"
#define VITENGINE_HAS_LOAD_INIT 1
#endif

namespace fs = std::filesystem;

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

namespace {

std::string cell(double v, const char* f = "%.6f") {
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

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Copy every parameter of `src` whose name and shape match into `dst`; returns the
// names of dst's parameters that were not copied.
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

class Run {
 public:
  explicit Run(const TrainRequest& r) : req_(r), cfg_(r.config), out_(r.out) {
    log_ = req_.log ? req_.log : [](const std::string& s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fputc('\n', stdout);
      std::fflush(stdout);
    };
  }

  TrainSummary go() {
    t_start_ = Clock::now();
    cfg_.validate();
    fs::create_directories(out_);
    load_data();
    setup_model();
    if (cfg_.data_on_device) upload_train_images();
    write_config();
    loop();
    return finish();
  }

 private:
  // ---------------------------------------------------------------- setup
  void load_data() {
    const std::string mpath = manifest_path(req_.data);
    if (!fs::exists(mpath)) throw std::runtime_error("no manifest at '" + mpath + "' (run `vitengine prepare` first)");
    Manifest man = read_manifest_resolved(mpath, cfg_.data_root);
    train_samples_ = select(man, cfg_.train_split, cfg_.subset);
    val_samples_ = cfg_.val_split.empty() ? std::vector<Sample>{} : select(man, cfg_.val_split, 100);
    if (train_samples_.empty())
      throw std::runtime_error("'" + mpath + "' has no '" + cfg_.train_split + "' samples in the " +
                               std::to_string(cfg_.subset) + "% subset");
    stats_ = read_stats(report_path(req_.data));
    names_ = man.classes;
    // label_level=group: learn the application's coarse groups; every label is mapped once, here.
    if (cfg_.label_level == "group") {
      const ClassGroups& g = req_.groups;
      if (g.names.empty() || !g.group_of)
        throw ConfigError("label_level=group needs the application's class groups, and none were given");
      std::vector<int> to_group(names_.size());
      for (size_t c = 0; c < names_.size(); ++c) {
        to_group[c] = g.group_of(names_[c]);
        if (to_group[c] < 0 || to_group[c] >= int(g.names.size()))
          throw ConfigError("label_level=group: class '" + names_[c] + "' is in no group");
      }
      names_ = g.names;
      for (auto* v : {&train_samples_, &val_samples_})
        for (auto& s : *v) s.label = to_group[size_t(s.label)];
    }
    model_cfg_ = cfg_.model_config(int(names_.size()));

    LoaderConfig tl;
    tl.batch_size = cfg_.batch_size;
    tl.image_size = model_cfg_.image_size;
    tl.shuffle = true;
    tl.drop_last = cfg_.drop_last;
    tl.balanced = cfg_.balance_power > 0;
    tl.balance_power = cfg_.balance_power;
    tl.aug = augment_preset(cfg_.augment);
    tl.aug.translate = cfg_.translate;
    tl.aug.reflect_border = cfg_.reflect_border;
    tl.threads = cfg_.threads;
    tl.prefetch = cfg_.prefetch;
    tl.seed = uint64_t(cfg_.seed);
    train_pack_ = find_pack(cfg_.train_split, train_samples_);
    train_loader_ = train_pack_ ? std::make_unique<Loader>(train_pack_, stats_, tl)
                                : std::make_unique<Loader>(train_samples_, stats_, tl);
    spe_ = int64_t(train_loader_->batches_per_epoch());
    if (spe_ == 0)
      throw std::runtime_error("the train split has " + std::to_string(train_samples_.size()) +
                               " images, fewer than one batch of " + std::to_string(cfg_.batch_size) +
                               " (lower batch_size or set drop_last=false)");
    total_steps_ = int64_t(cfg_.epochs) * spe_;
    if (!val_samples_.empty()) {
      auto vl = eval_loader_config(model_cfg_.image_size, eval_batch(), cfg_.threads);
      vl.prefetch = cfg_.prefetch;
      auto val_pack = find_pack(cfg_.val_split, val_samples_);
      val_loader_ = val_pack ? std::make_unique<Loader>(val_pack, stats_, vl)
                             : std::make_unique<Loader>(val_samples_, stats_, vl);
    }
    meta_.class_names = names_;
    for (int c = 0; c < 3; ++c) meta_.mean[c] = stats_.mean[c], meta_.std[c] = stats_.std[c];
    meta_.temperature = 1.0f;
  }

  // DATA/<split>.pack, if it holds exactly `samples` (same paths, same order, same
  // labels) at the model's input size: the loader then skips JPEG decoding and
  // resizing; the pixels, order and augmentations are the same as from the files.
  std::shared_ptr<const PackFile> find_pack(const std::string& split, const std::vector<Sample>& samples) {
    if (!cfg_.use_packs) return nullptr;
    const fs::path p = fs::path(manifest_path(req_.data)).parent_path() / (split + ".pack");
    if (!fs::exists(p)) return nullptr;
    std::shared_ptr<const PackFile> pk;
    try {
      pk = std::make_shared<const PackFile>(p.string());
    } catch (const std::exception& e) {
      log_(std::string("[train] not using ") + p.string() + ": " + e.what());
      return nullptr;
    }
    std::string why;
    if (pk->class_names() != names_)
      why = "its class list differs from the manifest's";
    else if (pk->size() != model_cfg_.image_size)
      why = "its images are " + std::to_string(pk->size()) + " px, the model takes " +
            std::to_string(model_cfg_.image_size);
    else if (pk->count() != samples.size())
      why = "it holds " + std::to_string(pk->count()) + " images, the " + split + " selection " +
            std::to_string(samples.size());
    else
      for (size_t i = 0; i < samples.size() && why.empty(); ++i)
        if (pk->paths().at(i) != samples[i].path || pk->label(i) != samples[i].label)
          why = "image " + std::to_string(i) + " is " + pk->paths()[i] + ", the manifest's is " + samples[i].path;
    if (!why.empty()) {
      log_("[train] not using " + p.string() + ": " + why);
      return nullptr;
    }
    log_("[train] " + split + " images from " + p.string());
    return pk;
  }

  // data_on_device: every train image at the model's size (straight from the train pack, else
  // decoded once here on `threads` workers) goes to GPU memory with its border colour; each step
  // then sends only the batch's indices and augmentation draws (TrainBackend::forward_uploaded).
  // Image i here is sample i of the train loader, whose indices the batches carry.
  void upload_train_images() {
    const auto t0 = Clock::now();
    const int S = model_cfg_.image_size;
    const size_t n = train_samples_.size(), per = size_t(S) * S * 3;
    std::vector<uint8_t> decoded;
    const uint8_t* images = train_pack_ ? train_pack_->images() : nullptr;
    if (!images) {
      decoded.resize(n * per);
      decode_samples(train_samples_, 0, n, S, cfg_.threads, decoded.data());
      images = decoded.data();
    }
    std::vector<uint8_t> fills(3 * n);
    for (size_t i = 0; i < n; ++i) border_color(images + i * per, S, S, &fills[3 * i]);
    backend_->upload_train_images(images, fills.data(), n, S, stats_.mean, stats_.std);
    char b[160];
    std::snprintf(b, sizeof b, "[train] data_on_device: %zu train images (%.2f GiB) in GPU memory after %.1f s", n,
                  double(n * per) / 1073741824.0, since(t0));
    log_(b);
  }

  void setup_model() {
    last_path_ = (fs::path(out_) / "last.vit").string();
    ema_path_ = (fs::path(out_) / "last_ema.vit").string();
    best_path_ = (fs::path(out_) / "best.vit").string();
    if (req_.resume) {
      resume_from_checkpoint();
    } else {
      if (fs::exists(last_path_))
        throw std::runtime_error("'" + last_path_ +
                                 "' already exists: pass --resume to continue that run, or choose another --out");
      host_ = std::make_unique<ViT>(model_cfg_);
      host_->init(uint64_t(cfg_.seed));
      if (!cfg_.init.empty()) load_init_weights();
      // a fresh run starts with fresh files
      for (const char* f : {"steps.csv", "metrics.csv", "best.vit", "last_ema.vit"}) fs::remove(fs::path(out_) / f);
    }
    backend_ = make_backend(cfg_.device, *host_, max_batch(), cfg_.precision);
    if (cfg_.ema_decay > 0) {
      if (ema_.empty()) ema_.assign(host_->param_data(), host_->param_data() + host_->num_params());
      eval_host_ = std::make_unique<ViT>(model_cfg_);
    }
    // the per-tensor lr scales for fine-tuning
    uses_scaled_ = !cfg_.init.empty() && (cfg_.freeze_backbone_epochs > 0 || cfg_.backbone_lr_mult != 1.0f);
    open_steps_log();
  }

  void load_init_weights() {
    std::vector<std::string> missing;
#ifdef VITENGINE_HAS_LOAD_INIT
    LoadedModel src = load_init(cfg_.init, model_cfg_);
    missing = copy_matching(*src.model, *host_);
#else
    LoadedModel src = load_model(cfg_.init);
    if (!src.model) throw std::runtime_error("init '" + cfg_.init + "' holds no model");
    missing = copy_matching(*src.model, *host_);
#endif
    for (const auto& m : missing)
      if (m.rfind("heads.", 0) != 0)
        throw CheckpointMismatch("init '" + cfg_.init + "' (" + src.model->config().to_string() +
                                 ") does not fit this run's model (" + model_cfg_.to_string() + "): parameter '" + m +
                                 "' is missing or has another shape");
    log_("[train] init: weights from " + cfg_.init + (missing.empty() ? " (all tensors)" : " (new head)"));
  }

  void resume_from_checkpoint() {
    if (!fs::exists(last_path_))
      throw std::runtime_error("--resume: no checkpoint '" + last_path_ + "' to resume from");
    LoadedModel lm = load_model(last_path_);
    if (!lm.model) throw std::runtime_error("--resume: '" + last_path_ + "' holds no model");
    if (!lm.model->config().same_architecture(model_cfg_))
      throw CheckpointMismatch("--resume: '" + last_path_ + "' holds model " + lm.model->config().to_string() +
                               ", but this config asks for " + model_cfg_.to_string() + "; refusing to resume");
    if (!lm.has_optimizer || !lm.train_state.is_object() || !lm.train_state.contains("step"))
      throw CheckpointMismatch("--resume: '" + last_path_ +
                               "' has no optimizer state or train_state (is it an exported model?)");
    const auto& st = lm.train_state;
    nlohmann::json saved = st.value("config", nlohmann::json::object());
    auto diff = TrainConfig::differing_fields(saved, cfg_.to_json(), true);
    if (!diff.empty()) {
      std::string d;
      for (const auto& f : diff)
        d += (d.empty() ? "" : ", ") + f + " (checkpoint " + (saved.contains(f) ? saved[f].dump() : "absent") +
             ", now " + cfg_.to_json()[f].dump() + ")";
      throw CheckpointMismatch("--resume: '" + last_path_ + "' was written by a run with another config: " + d +
                               "; refusing to resume");
    }
    host_ = std::move(lm.model);
    st_ = RunState::from_json(st);
    last_saved_step_ = st_.step;
    if (cfg_.ema_decay > 0) {
      if (!fs::exists(ema_path_)) throw CheckpointMismatch("--resume: EMA is on but '" + ema_path_ + "' is missing");
      LoadedModel e = load_model(ema_path_);
      int64_t es = e.meta.extra.value("step", int64_t(-1));
      if (es != st_.step)
        throw CheckpointMismatch("--resume: '" + ema_path_ + "' is at step " + std::to_string(es) + " but '" +
                                 last_path_ + "' at step " + std::to_string(st_.step));
      ema_.assign(e.model->param_data(), e.model->param_data() + e.model->num_params());
    }
    log_("[train] resuming " + last_path_ + " at step " + std::to_string(st_.step) + " (epoch " +
         std::to_string(st_.epoch + 1) + ", batch " + std::to_string(st_.batch_in_epoch) + ")");
  }

  void write_config() {
    nlohmann::json j;
    j["train"] = cfg_.to_json();
    j["model"] = {{"name", model_cfg_.name},       {"image_size", model_cfg_.image_size},
                  {"patch", model_cfg_.patch},     {"dim", model_cfg_.dim},
                  {"depth", model_cfg_.depth},     {"heads", model_cfg_.heads},
                  {"mlp_dim", model_cfg_.mlp_dim}, {"num_classes", model_cfg_.num_classes},
                  {"dropout", model_cfg_.dropout}, {"params", host_->num_params()}};
    j["data"] = {{"manifest", manifest_path(req_.data)},
                 {"train_samples", train_samples_.size()},
                 {"val_samples", val_samples_.size()},
                 {"steps_per_epoch", spe_},
                 {"total_steps", total_steps_},
                 {"mean", {stats_.mean[0], stats_.mean[1], stats_.mean[2]}},
                 {"std", {stats_.std[0], stats_.std[1], stats_.std[2]}}};
    j["field_docs"] = nlohmann::json::object();
    for (const auto& d : TrainConfig::docs()) j["field_docs"][d.name] = d.doc;
    write_text_atomic((fs::path(out_) / "config.json").string(), j.dump(2) + "\n");
    meta_.extra = {{"config", cfg_.to_json()}, {"model", j["model"]}};
    log_("[train] " + model_cfg_.to_string() + ", " + std::to_string(host_->num_params()) + " parameters; " +
         std::to_string(train_samples_.size()) + " train / " + std::to_string(val_samples_.size()) + " val images; " +
         std::to_string(spe_) + " steps per epoch, " + std::to_string(total_steps_) + " in all; device " +
         backend_->device() + (cfg_.data_on_device ? " (train images augmented on the device)" : ""));
  }

  // steps.csv: one line per optimizer step. On resume, lines after the checkpoint's
  // step (written before a kill) are dropped, so the file always matches the state.
  void open_steps_log() {
    const std::string p = (fs::path(out_) / "steps.csv").string();
    std::vector<std::string> keep;
    if (req_.resume && fs::exists(p)) {
      std::ifstream f(p);
      std::string line;
      std::getline(f, line);
      while (std::getline(f, line)) {
        // a kill can leave a torn last line: keep only whole rows, in order, up to the checkpoint
        if (std::count(line.begin(), line.end(), ',') != 3) continue;
        int64_t s = std::strtoll(line.c_str(), nullptr, 10);
        if (s == int64_t(keep.size()) + 1 && s <= st_.step) keep.push_back(line);
      }
    }
    std::ostringstream s;
    s << "step,epoch,loss,lr\n";
    for (const auto& l : keep) s << l << "\n";
    write_text_atomic(p, s.str());
    steps_log_.open(p, std::ios::app);
    if (!steps_log_) throw std::runtime_error("cannot append to '" + p + "'");
  }

  // ---------------------------------------------------------------- checkpoints

  // Writes last.vit (and last_ema.vit) from a snapshot of this moment on the background writer,
  // so that the next epoch trains while the file is hashed, written and fsynced. Callers that
  // then log the checkpoint as written (checkpoint_every, max_steps) wait for it first. The snapshot
  // is a copy because the CPU backend trains host_ itself. One write at a time: a second call
  // first waits for the previous write (and rethrows its error).
  void save_last() {
    backend_->pull(*host_);
    writer_.wait();
    if (!snapshot_) snapshot_ = std::make_unique<ViT>(model_cfg_);
    const size_t n = host_->num_params();
    const float* src = host_->param_data();
    float* dst = snapshot_->param_data();
    std::copy(src, src + n, dst);                      // parameters
    std::copy(src + 2 * n, src + 4 * n, dst + 2 * n);  // AdamW m and v (the gradients are not saved)
    ModelMeta m = meta_;
    m.extra["step"] = st_.step;
    nlohmann::json state = st_.to_json(spe_, elapsed(), uint64_t(cfg_.seed), cfg_.to_json());
    const bool ema = cfg_.ema_decay > 0;
    if (ema) ema_snapshot_ = ema_;
    writer_.submit([this, m = std::move(m), state = std::move(state), ema] {
      if (ema) {
        ViT e(model_cfg_);
        std::copy(ema_snapshot_.begin(), ema_snapshot_.end(), e.param_data());
        ModelMeta me = m;
        me.extra["ema_decay"] = cfg_.ema_decay;
        save_model(ema_path_, e, me, false);
      }
      save_model(last_path_, *snapshot_, m, true, state);
    });
    last_saved_step_ = st_.step;
  }

  // The weights validation and best.vit use: the EMA when it is on.
  TrainBackend& eval_backend() {
    if (cfg_.ema_decay <= 0) return *backend_;
    std::copy(ema_.begin(), ema_.end(), eval_host_->param_data());
    if (cfg_.device == "cpu") {
      if (!eval_backend_) eval_backend_ = make_backend("cpu", *eval_host_, max_batch(), cfg_.precision);
    } else {
      if (!eval_backend_)
        eval_backend_ = make_backend(cfg_.device, *eval_host_, max_batch(), cfg_.precision);
      else
        eval_backend_->push(*eval_host_);
    }
    return *eval_backend_;
  }
  const ViT& eval_weights_host() {
    if (cfg_.ema_decay > 0) {
      std::copy(ema_.begin(), ema_.end(), eval_host_->param_data());
      return *eval_host_;
    }
    backend_->pull(*host_);
    return *host_;
  }

  void update_ema() {
    if (cfg_.ema_decay <= 0 || st_.step % cfg_.ema_every != 0) return;
    if (cfg_.device != "cpu") backend_->pull(*host_);
    // timm-style warmup of the decay, so that short runs are not dominated by the init
    double d = std::pow(double(cfg_.ema_decay), cfg_.ema_every);
    d = std::min(d, double(1 + st_.step) / double(10 + st_.step));
    const float* p = host_->param_data();
    const float a = float(d), b = float(1 - d);
    for (size_t i = 0; i < ema_.size(); ++i) ema_[i] = a * ema_[i] + b * p[i];
  }

  // ---------------------------------------------------------------- loop
  int eval_batch() const { return std::max(cfg_.batch_size, 64); }
  int max_batch() const { return std::max(cfg_.batch_size, eval_batch()); }
  double elapsed() const { return st_.elapsed_s + since(t_start_); }

  std::vector<float> lr_scales() const {
    std::vector<float> s;
    for (const auto& p : host_->params()) {
      bool head = p.name.rfind("heads.", 0) == 0;
      s.push_back(head ? 1.0f : (st_.epoch < cfg_.freeze_backbone_epochs ? 0.0f : cfg_.backbone_lr_mult));
    }
    return s;
  }

  [[noreturn]] void diverged(const std::string& what) {
    std::string keep = last_saved_step_ >= 0 ? "the last good checkpoint '" + last_path_ + "' (step " +
                                                   std::to_string(last_saved_step_) + ") is kept"
                                             : "no checkpoint had been written yet";
    try {
      writer_.wait();  // the last good checkpoint is complete on disk before anyone hears of this
    } catch (const std::exception& e) {
      keep = "writing the checkpoint of step " + std::to_string(last_saved_step_) + " failed (" + e.what() +
             "); an earlier '" + last_path_ + "', if any, is kept";
    }
    throw TrainingDiverged(what + " at step " + std::to_string(st_.step + 1) + " (epoch " +
                           std::to_string(st_.epoch + 1) + ", batch " + std::to_string(st_.batch_in_epoch + 1) +
                           " of " + std::to_string(spe_) + "); training stopped; " + keep +
                           ". Lower lr or set grad_clip.");
  }

  void loop() {
    Batch batch;
    auto t_log = Clock::now();
    int64_t log_step0 = st_.step, log_imgs = 0;
    while (st_.epoch < cfg_.epochs) {
      if (cfg_.max_steps > 0 && st_.step >= cfg_.max_steps) {
        stopped_early_ = true;
        break;
      }
      // data_on_device: the loader only describes the batches (indices, labels, augmentation draws)
      train_loader_->start_epoch(st_.epoch, size_t(st_.batch_in_epoch), /*load_images=*/!cfg_.data_on_device);
      auto t_epoch = Clock::now();
      int64_t epoch_imgs = 0;
      bool stop = false;
      while (true) {
        if (cfg_.max_steps > 0 && st_.step >= cfg_.max_steps) {
          stop = true;
          break;
        }
        if (!train_loader_->next(batch)) break;
        const float lr = lr_at(cfg_, st_.step, spe_);
        ForwardOptions fo;
        fo.training = true;
        fo.keep_attention = false;
        fo.dropout_seed = dropout_seed(uint64_t(cfg_.seed), st_.step);
        fo.drop_path = cfg_.drop_path;
        backend_->zero_grad();
        const float* logits = cfg_.data_on_device
                                  ? backend_->forward_uploaded(batch.index.data(), batch.aug.data(), batch.n, fo)
                                  : backend_->forward(batch.images.data(), batch.n, fo);
        float loss = backend_->loss(batch.labels.data(), cfg_.label_smoothing);
        if (req_.hooks.nan_at_step > 0 && st_.step + 1 == req_.hooks.nan_at_step) loss = NAN;
        if (!std::isfinite(loss)) diverged(std::string("loss is ") + (std::isnan(loss) ? "NaN" : "inf"));
        auto pred = argmax_rows(logits, size_t(batch.n), model_cfg_.num_classes);
        int64_t correct = 0;
        for (int i = 0; i < batch.n; ++i) correct += pred[i] == batch.labels[i];
        backend_->backward();
        cpu::AdamWParams hp;
        hp.lr = lr;
        hp.beta1 = cfg_.beta1;
        hp.beta2 = cfg_.beta2;
        hp.eps = cfg_.adam_eps;
        hp.weight_decay = cfg_.weight_decay;
        hp.step = int(st_.step + 1);
        try {
          if (uses_scaled_)
            backend_->adamw_step_scaled(hp, cfg_.grad_clip, lr_scales());
          else
            backend_->adamw_step(hp, cfg_.grad_clip);
        } catch (const NonFiniteError&) {
          diverged("gradient norm is not finite");
        }
        ++st_.step;
        ++st_.batch_in_epoch;
        st_.epoch_loss_sum += double(loss);
        st_.epoch_correct += correct;
        st_.epoch_seen += batch.n;
        ++st_.epoch_batches;
        epoch_imgs += batch.n;
        log_imgs += batch.n;
        last_lr_ = lr;
        update_ema();
        char line[128];
        std::snprintf(line, sizeof line, "%lld,%d,%.9g,%.9g\n", (long long)st_.step, st_.epoch + 1, double(loss),
                      double(lr));
        steps_log_ << line;
        steps_log_.flush();
        if (st_.step % cfg_.log_every == 0 || st_.batch_in_epoch == spe_ || st_.step == total_steps_) {
          double dt = since(t_log);
          double img_s = dt > 0 ? log_imgs / dt : 0;
          double per_step = (st_.step > log_step0 && dt > 0) ? dt / double(st_.step - log_step0) : NAN;
          int64_t end = cfg_.max_steps > 0 ? std::min<int64_t>(cfg_.max_steps, total_steps_) : total_steps_;
          char b[256];
          std::snprintf(b, sizeof b,
                        "[train] epoch %d/%d step %lld/%lld loss %.4f (epoch avg %.4f) acc %.3f lr %.3g | %.1f img/s | "
                        "elapsed %s ETA %s",
                        st_.epoch + 1, cfg_.epochs, (long long)st_.step, (long long)end, double(loss),
                        st_.epoch_loss_sum / double(st_.epoch_batches),
                        double(st_.epoch_correct) / double(std::max<int64_t>(st_.epoch_seen, 1)), double(lr), img_s,
                        duration(elapsed()).c_str(), duration(per_step * double(end - st_.step)).c_str());
          log_(b);
          t_log = Clock::now();
          log_step0 = st_.step;
          log_imgs = 0;
        }
        if (cfg_.checkpoint_every > 0 && st_.step % cfg_.checkpoint_every == 0) {
          save_last();
          writer_.wait();  // the line below tells whoever watches the log that the file is on disk
          log_("[train] checkpoint " + last_path_ + " at step " + std::to_string(st_.step));
        }
        if (req_.hooks.sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(req_.hooks.sleep_ms));
      }
      if (stop) {
        stopped_early_ = true;
        break;
      }
      end_epoch(epoch_imgs, since(t_epoch));
    }
    if (stopped_early_ && last_saved_step_ != st_.step) {
      save_last();
      writer_.wait();  // "can be resumed" below: the file is on disk
      log_("[train] max_steps reached: stopped at step " + std::to_string(st_.step) + "; " + last_path_ +
           " can be resumed");
    }
  }

  void end_epoch(int64_t imgs, double secs) {
    EpochRow r;
    r.epoch = st_.epoch + 1;
    r.step = st_.step;
    r.train_loss = st_.epoch_batches ? st_.epoch_loss_sum / double(st_.epoch_batches) : NAN;
    r.train_acc = st_.epoch_seen ? double(st_.epoch_correct) / double(st_.epoch_seen) : NAN;
    r.lr = lr_at(cfg_, std::max<int64_t>(st_.step - 1, 0), spe_);
    r.img_s = secs > 0 ? double(imgs) / secs : 0;
    if (st_.epoch == 0 && cfg_.time_budget_s > 0 && secs > 0) {
      // Same rule as the reference recipe: time one epoch, then fit the epoch count to the
      // budget. Only the count changes; warmup is measured in epochs and stays as it was.
      const int floor_epochs = int(std::ceil(cfg_.warmup_epochs)) + 1;
      const int fit = std::max(floor_epochs, int(double(cfg_.time_budget_s) / secs));
      if (fit < cfg_.epochs) {
        log_("[train] time budget " + std::to_string(int(cfg_.time_budget_s)) + " s at " + std::to_string(secs) +
             " s/epoch: epochs " + std::to_string(cfg_.epochs) + " -> " + std::to_string(fit) +
             " (resume with --set epochs=" + std::to_string(fit) + ")");
        cfg_.epochs = fit;
        total_steps_ = int64_t(cfg_.epochs) * spe_;
      }
    }
    const bool last_epoch = st_.epoch + 1 == cfg_.epochs;
    if (val_loader_ && ((st_.epoch + 1) % cfg_.eval_every == 0 || last_epoch)) {
      TrainBackend& eb = eval_backend();
      Predictions p = predict(eb, *val_loader_);
      auto pred = argmax_rows(p.logits.data(), p.n(), p.k);
      Metrics m = compute_metrics(confusion_matrix(p.labels, pred, p.k), names_);
      r.val_loss = mean_nll(p.logits.data(), p.labels.data(), p.n(), p.k);
      r.val_acc = m.accuracy;
      r.val_macro_f1 = m.macro_f1;
      char b[160];
      std::snprintf(b, sizeof b, "[val] epoch %d: loss %.4f acc %.4f macro-F1 %.4f (%zu images)", st_.epoch + 1,
                    r.val_loss, r.val_acc, r.val_macro_f1, p.n());
      log_(b);
      if (m.macro_f1 > st_.best_val_macro_f1) {
        st_.best_val_macro_f1 = m.macro_f1;
        st_.best_epoch = st_.epoch + 1;
        save_best(r);
      }
    }
    r.elapsed_s = elapsed();
    st_.history.push_back(r);
    ++st_.epoch;
    st_.batch_in_epoch = 0;
    st_.epoch_loss_sum = 0;
    st_.epoch_correct = st_.epoch_seen = st_.epoch_batches = 0;
    last_lr_ = 0;
    save_last();
    write_text_atomic((fs::path(out_) / "metrics.csv").string(), metrics_csv(st_.history));
    write_training_curves((fs::path(out_) / "metrics.csv").string(), out_);
  }

  void save_best(const EpochRow& r) {
    ModelMeta m = meta_;
    m.extra["epoch"] = r.epoch;
    m.extra["step"] = r.step;
    m.extra["val"] = {{"accuracy", r.val_acc}, {"macro_f1", r.val_macro_f1}, {"loss", r.val_loss}};
    m.extra["ema"] = cfg_.ema_decay > 0;
    save_model(best_path_, eval_weights_host(), m, false);
  }

  // ---------------------------------------------------------------- the end
  TrainSummary finish() {
    writer_.wait();  // last.vit complete (and its write error, if any, reported) before returning
    TrainSummary s;
    s.steps = st_.step;
    s.epochs_done = st_.epoch;
    s.finished = !stopped_early_;
    s.last_path = last_path_;
    if (stopped_early_) {
      s.elapsed_s = elapsed();
      return s;
    }
    // No validation split: best.vit is simply the final eval weights.
    if (!val_loader_ && !fs::exists(best_path_)) {
      EpochRow r = st_.history.empty() ? EpochRow{} : st_.history.back();
      save_best(r);
    }
    s.best_path = best_path_;
    s.best_val_macro_f1 = st_.best_val_macro_f1;
    s.best_epoch = st_.best_epoch;
    if (val_loader_) report_on_val(s);
    s.elapsed_s = elapsed();
    write_summary(s);
    return s;
  }

  // Loads best.vit, fits the temperature on val, stores it, writes the val report.
  void report_on_val(TrainSummary& s) {
    LoadedModel best = load_model(best_path_);
    auto be = make_backend(cfg_.device, *best.model, max_batch(), cfg_.precision);
    Predictions p = predict(*be, *val_loader_);
    const size_t n = p.n();
    double T = 1.0;
    auto before = calibration(p.logits.data(), p.labels.data(), n, p.k, 1.0, cfg_.ece_bins);
    if (cfg_.calibrate) {
      T = fit_temperature(p.logits.data(), p.labels.data(), n, p.k);
      best.meta.temperature = float(T);
      best.meta.extra["temperature_fit"] = {{"split", cfg_.val_split},
                                            {"samples", n},
                                            {"nll_before", mean_nll(p.logits.data(), p.labels.data(), n, p.k, 1.0)},
                                            {"nll_after", mean_nll(p.logits.data(), p.labels.data(), n, p.k, T)},
                                            {"ece_before", before.ece}};
      save_model(best_path_, *best.model, best.meta, false);
    }
    auto after = calibration(p.logits.data(), p.labels.data(), n, p.k, T, cfg_.ece_bins);
    auto pred = argmax_rows(p.logits.data(), n, p.k);
    Metrics m = compute_metrics(confusion_matrix(p.labels, pred, p.k), names_);
    const std::string rep = (fs::path(out_) / "report").string();
    fs::create_directories(rep);
    write_eval_pictures(m, &after, rep, "val: ");
    write_text_atomic(rep + "/reliability_uncalibrated.svg",
                      reliability_svg(before, "val: reliability before temperature scaling"));
    nlohmann::json j = m.to_json();
    j["split"] = cfg_.val_split;
    j["temperature"] = T;
    j["ece_before"] = before.ece;
    j["calibration"] = after.to_json();
    write_text_atomic(rep + "/val_metrics.json", j.dump(2) + "\n");
    s.temperature = T;
    char b[200];
    if (cfg_.calibrate)
      std::snprintf(b, sizeof b, "[calibrate] temperature %.4f fitted on %zu val images: ECE %.4f -> %.4f", T, n,
                    before.ece, after.ece);
    else
      std::snprintf(b, sizeof b, "[calibrate] off (calibrate=false): temperature 1, val ECE %.4f", before.ece);
    log_(b);
    val_metrics_ = j;
  }

  void write_summary(const TrainSummary& s) {
    std::ostringstream md;
    md << "# Training run `" << out_ << "`\n\n";
    md << "Model " << model_cfg_.to_string() << ", " << host_->num_params() << " parameters, device "
       << backend_->device() << ". " << train_samples_.size() << " train / " << val_samples_.size() << " val images, "
       << st_.step << " steps, " << duration(s.elapsed_s) << ".\n\n";
    md << "| epoch | step | train loss | train acc | val loss | val acc | val macro-F1 | lr | img/s |\n";
    md << "|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : st_.history)
      md << "| " << r.epoch << " | " << r.step << " | " << cell(r.train_loss, "%.4f") << " | "
         << cell(r.train_acc, "%.4f") << " | " << cell(r.val_loss, "%.4f") << " | " << cell(r.val_acc, "%.4f") << " | "
         << cell(r.val_macro_f1, "%.4f") << " | " << cell(r.lr, "%.3g") << " | " << cell(r.img_s, "%.1f") << " |\n";
    md << "\n![loss](loss.svg) ![accuracy](accuracy.svg)\n\n";
    if (st_.best_epoch > 0) {
      md << "best.vit: epoch " << st_.best_epoch << ", val macro-F1 " << cell(st_.best_val_macro_f1, "%.4f")
         << ", temperature " << cell(s.temperature, "%.4f") << ".\n\n";
      md << "![confusion](report/confusion_counts.svg)\n![confusion, row-normalised](report/confusion_normalized.svg)\n"
         << "![per class](report/per_class.svg)\n![reliability](report/reliability.svg)\n";
    }
    write_text_atomic((fs::path(out_) / "summary.md").string(), md.str());
  }

  // ---------------------------------------------------------------- state
  TrainRequest req_;
  TrainConfig cfg_;
  std::string out_;
  std::function<void(const std::string&)> log_;
  std::vector<Sample> train_samples_, val_samples_;
  std::vector<std::string> names_;  // output names: the 14 classes, or the 9 groups (label_level)
  DataStats stats_;
  ViTConfig model_cfg_;
  ModelMeta meta_;
  std::shared_ptr<const PackFile> train_pack_;  // null when the train images come from files
  std::unique_ptr<Loader> train_loader_, val_loader_;
  std::unique_ptr<ViT> host_, eval_host_;
  std::unique_ptr<TrainBackend> backend_, eval_backend_;
  std::vector<float> ema_;
  bool uses_scaled_ = false, stopped_early_ = false;
  std::string last_path_, ema_path_, best_path_;
  std::ofstream steps_log_;
  int64_t spe_ = 0, total_steps_ = 0;
  RunState st_;  // everything a resume restores besides the weights and moments
  int64_t last_saved_step_ = -1;
  float last_lr_ = 0;
  Clock::time_point t_start_;
  nlohmann::json val_metrics_;
  std::unique_ptr<ViT> snapshot_;  // what the writer is saving (save_last)
  std::vector<float> ema_snapshot_;
  AsyncWriter writer_;  // last: destroyed (joined) before the snapshot it reads
};

}  // namespace

TrainSummary train(const TrainRequest& req) { return Run(req).go(); }

}  // namespace vit
