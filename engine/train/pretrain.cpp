// Masked-autoencoder pretraining (engine/train/pretrain.h): the data, the loop, checkpoints and
// pictures. The model is engine/model/mae.h; the schedule (lr_at) and the augmentation presets
// are train's.
#include "engine/train/pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "engine/data/dataset.h"
#include "engine/data/labels.h"
#include "engine/data/pack.h"
#include "engine/eval/plots.h"
#include "engine/model/mae.h"
#include "engine/train/run_state.h"
#include "engine/train/trainer.h"
#include "engine/util/file.h"
#include "engine/util/json.h"
#include "engine/util/thread_pool.h"
#include "weights/checkpoint.h"

namespace vit {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr int kPictureImages = 8;
const char* kDecoderPrefix = "mae/";  // the decoder's tensors in last.vit: extra/mae/<name>

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// ---------------------------------------------------------------- data
struct PretrainData {
  std::vector<Sample> samples;
  DataStats stats;
  bool orientation_free = false;
  std::shared_ptr<const PackFile> pack;  // the train pack, when it holds exactly these images
  std::string what;                      // for the log and config.json
  std::vector<std::string> skipped;      // a folder's images that cannot be read, each with why
};

// Any folder of images holds a file or two that is not one (a truncated download, an HTML page
// saved as .jpg); the loader met it mid-epoch and the run stopped there, naming one file per try.
// Every image is decoded once up front instead: those that fail are left out and named, as
// differential leaves them out. Returns "why" (the reader's message, which names the file) of each.
std::vector<std::string> drop_unreadable(std::vector<Sample>& samples, int threads) {
  std::vector<std::string> why(samples.size());
  parallel_for(samples.size(), threads, [&](size_t i) {
    try {
      load_image(samples[i].full_path());
    } catch (const ImageError& e) {
      why[i] = e.what();
    }
  });
  std::vector<Sample> kept;
  std::vector<std::string> skipped;
  for (size_t i = 0; i < samples.size(); i++)
    if (why[i].empty())
      kept.push_back(std::move(samples[i]));
    else
      skipped.push_back(std::move(why[i]));
  samples = std::move(kept);
  return skipped;
}

// Channel mean and spread of what the model sees (padded, resized), from up to 256 images spread
// evenly over the folder: a folder of images comes without prepare's statistics.
DataStats folder_stats(const std::vector<Sample>& samples, int size) {
  double sum[3] = {0, 0, 0}, sq[3] = {0, 0, 0};
  size_t n = 0;
  const size_t step = std::max<size_t>(1, samples.size() / 256);
  for (size_t i = 0; i < samples.size(); i += step) {
    const Image im = preprocess(load_image(samples[i].full_path()), size);
    for (size_t p = 0; p < im.rgb.size(); p++) {
      const double v = im.rgb[p] / 255.0;
      sum[p % 3] += v, sq[p % 3] += v * v;
    }
    n += im.rgb.size() / 3;
  }
  DataStats s;
  for (int c = 0; c < 3; c++) {
    s.mean[c] = float(sum[c] / double(n));
    s.std[c] = float(std::sqrt(std::max(1e-12, sq[c] / double(n) - double(s.mean[c]) * s.mean[c])));
  }
  return s;
}

std::shared_ptr<const PackFile> matching_pack(const std::string& data, const TrainConfig& c,
                                              const std::vector<Sample>& samples, int size) {
  const fs::path p = fs::path(manifest_path(data)).parent_path() / (c.train_split + ".pack");
  if (!c.use_packs || !fs::exists(p)) return nullptr;
  auto pk = std::make_shared<const PackFile>(p.string());  // a corrupt pack is an error, not a fallback
  if (pk->size() != size || pk->count() != samples.size()) return nullptr;
  for (size_t i = 0; i < samples.size(); i++)
    if (pk->paths()[i] != samples[i].path) return nullptr;
  return pk;
}

// A run folder inside the folder of images would be read with it: its pictures (pictures/epoch_NNN.png)
// would become training images of a resumed or a later run, without a word.
void require_out_outside(const std::string& data, const std::string& out) {
  const std::string d = absolute_path(data), o = absolute_path(out);
  if (o == d || is_under(o, d))
    throw std::runtime_error("pretrain: --out '" + out + "' lies inside the folder of images --data '" + data +
                             "', whose every image is read: the run's pictures would become training images; choose "
                             "an --out beside it");
}

PretrainData load_data(const TrainConfig& c, const std::string& data, int size, const std::string& out) {
  PretrainData d;
  if (fs::exists(manifest_path(data))) {
    const Manifest man = read_manifest_resolved(manifest_path(data), c.data_root);
    d.samples = select(man, c.train_split, c.subset);
    d.stats = read_stats(report_path(data));
    d.orientation_free = read_orientation_free(report_path(data));
    d.pack = matching_pack(data, c, d.samples, size);
    d.what = "split '" + c.train_split + "' (" + std::to_string(c.subset) + "% subset) of " + manifest_path(data);
  } else if (fs::is_directory(data)) {
    require_out_outside(data, out);
    for (const auto& [src, rel] : image_files_under({data})) {
      Sample s;
      s.src = src, s.path = rel, s.split = "train", s.label = 0;
      d.samples.push_back(s);
    }
    if (d.samples.empty())
      throw std::runtime_error("pretrain: no images (" + image_extensions_text() + ") under '" + data + "'");
    const size_t found = d.samples.size();
    d.skipped = drop_unreadable(d.samples, c.threads);
    if (d.samples.empty())
      throw std::runtime_error("pretrain: none of the " + std::to_string(found) + " images under '" + data +
                               "' can be read; the first: " + d.skipped.front());
    d.stats = folder_stats(d.samples, size);
    d.what = "every image under " + data;
  } else {
    throw std::runtime_error("pretrain: --data '" + data +
                             "' is neither a prepared data set (no manifest.csv) nor a folder of images");
  }
  if (d.samples.empty()) throw std::runtime_error("pretrain: " + d.what + " has no images");
  for (auto& s : d.samples) s.label = 0;  // self-supervised: labels are not used
  return d;
}

// ---------------------------------------------------------------- the run
class Pretrainer {
 public:
  explicit Pretrainer(const PretrainRequest& r) : req_(r), cfg_(r.config), out_(r.out) {
    log_ = r.log ? r.log : [](const std::string& s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fputc('\n', stdout);
      std::fflush(stdout);
    };
  }
  PretrainSummary go();

 private:
  void setup();
  void resume();
  bool run_epoch();  // false: stopped by max_steps
  float step(const Batch& b);
  void end_epoch(double secs, int64_t images);
  void save_last();
  void save_encoder();
  void write_pictures(int epoch);
  void write_config();
  void open_steps_log();
  json train_state() const;
  [[noreturn]] void diverged(float loss);

  PretrainRequest req_;
  TrainConfig cfg_;
  std::string out_, last_path_, encoder_path_;
  std::function<void(const std::string&)> log_;
  PretrainData data_;
  ViTConfig ecfg_;
  std::unique_ptr<MaskedAutoencoder> mae_;
  std::unique_ptr<Loader> loader_;
  int64_t spe_ = 0;
  RunState st_;
  std::ofstream steps_log_;
  Clock::time_point t_start_;
  std::vector<int> keep_;
  float lr_ = 0;
};

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void Pretrainer::setup() {
  cfg_.validate();
  last_path_ = (fs::path(out_) / "last.vit").string();
  encoder_path_ = (fs::path(out_) / "encoder.vit").string();
  // As `train` does: a second run into the same folder would overwrite that run's checkpoints.
  if (!req_.resume && fs::exists(last_path_))
    throw std::runtime_error("'" + last_path_ +
                             "' already exists: pass --resume to continue that run, or choose another --out");
  if (cfg_.device != "cpu")
    throw ConfigError("pretrain: device=" + cfg_.device + " is not built yet; the masked autoencoder runs on the CPU");
  ecfg_ = cfg_.model_config(1);  // the encoder's head is not used: one output
  ecfg_.dropout = 0.0f;          // MAE pretrains without dropout
  MaeConfig m;
  m.dim = cfg_.decoder_dim, m.depth = cfg_.decoder_depth, m.heads = cfg_.decoder_heads, m.mlp_dim = cfg_.decoder_mlp_dim;
  m.mask_ratio = cfg_.mask_ratio, m.norm_pix_loss = cfg_.norm_pix_loss;
  mae_ = std::make_unique<MaskedAutoencoder>(ecfg_, m);
  data_ = load_data(cfg_, req_.data, ecfg_.image_size, out_);
  cfg_.resolve_auto(data_.orientation_free);
  LoaderConfig lc;
  lc.batch_size = cfg_.batch_size, lc.image_size = ecfg_.image_size, lc.shuffle = true, lc.drop_last = cfg_.drop_last;
  lc.aug = train_augment(cfg_);
  lc.threads = cfg_.threads, lc.prefetch = cfg_.prefetch, lc.seed = uint64_t(cfg_.seed);
  loader_ = data_.pack ? std::make_unique<Loader>(data_.pack, data_.stats, lc)
                       : std::make_unique<Loader>(data_.samples, data_.stats, lc);
  spe_ = int64_t(loader_->batches_per_epoch());
  if (spe_ == 0)
    throw std::runtime_error("pretrain: " + std::to_string(data_.samples.size()) + " images, fewer than one batch of " +
                             std::to_string(cfg_.batch_size) + " (lower batch_size or set drop_last=false)");
  if (req_.resume)
    resume();
  else
    mae_->init(uint64_t(cfg_.seed));
}

// ---------------------------------------------------------------- checkpoints
json Pretrainer::train_state() const {
  json s = st_.to_json(spe_, st_.elapsed_s + since(t_start_), uint64_t(cfg_.seed), cfg_.to_json());
  s["kind"] = "mae-pretraining";
  return s;
}

ModelMeta encoder_meta(const PretrainData& d, const TrainConfig& c) {
  ModelMeta m;
  m.class_names = {"(none: a pretrained encoder; fine-tune it with train --init)"};
  for (int i = 0; i < 3; i++) m.mean[i] = d.stats.mean[i], m.std[i] = d.stats.std[i];
  m.extra["pretrained"] = {{"method", "masked autoencoder"},
                           {"mask_ratio", c.mask_ratio},
                           {"norm_pix_loss", c.norm_pix_loss},
                           {"data", d.what}};
  return m;
}

void Pretrainer::save_last() {
  const MaskedAutoencoder& m = *mae_;
  const size_t n = m.num_decoder_params();
  std::vector<ExtraTensorRef> extras;
  for (const auto& p : m.decoder_params())
    extras.push_back({kDecoderPrefix + p.name, p.shape, m.decoder_data() + p.offset});
  extras.push_back({std::string(kDecoderPrefix) + "optimizer.adam_m", {int64_t(n)}, m.decoder_data() + 2 * n});
  extras.push_back({std::string(kDecoderPrefix) + "optimizer.adam_v", {int64_t(n)}, m.decoder_data() + 3 * n});
  save_model(last_path_, m.encoder(), encoder_meta(data_, cfg_), true, train_state(), extras);
}

void Pretrainer::save_encoder() { save_model(encoder_path_, mae_->encoder(), encoder_meta(data_, cfg_)); }

void Pretrainer::resume() {
  if (!fs::exists(last_path_)) throw std::runtime_error("--resume: no checkpoint '" + last_path_ + "' to resume from");
  LoadedModel lm = load_model(last_path_);
  if (!lm.has_optimizer || lm.train_state.value("kind", "") != "mae-pretraining")
    throw CheckpointMismatch("--resume: '" + last_path_ + "' is not a pretraining checkpoint of `vitengine pretrain`");
  const json saved = lm.train_state.value("config", json::object()), now = cfg_.to_json();
  const auto diff = TrainConfig::differing_fields(saved, now, true);
  if (!diff.empty())
    throw CheckpointMismatch("--resume: '" + last_path_ + "' was written by a pretraining with another config: " +
                             TrainConfig::describe_differences(diff, saved, now) + "; refusing to resume");
  load_weights_into(mae_->encoder(), lm, true);
  const size_t n = mae_->num_decoder_params();
  auto take = [&](const std::string& name, float* dst, size_t numel) {
    auto it = lm.extras.find(kDecoderPrefix + name);
    if (it == lm.extras.end() || it->second.data.size() != numel)
      throw CheckpointMismatch("--resume: '" + last_path_ + "' lacks the decoder tensor '" + name +
                               "' or holds it in another shape");
    std::copy(it->second.data.begin(), it->second.data.end(), dst);
  };
  for (const auto& p : mae_->decoder_params()) take(p.name, mae_->decoder_data() + p.offset, p.numel);
  take("optimizer.adam_m", mae_->decoder_data() + 2 * n, n);
  take("optimizer.adam_v", mae_->decoder_data() + 3 * n, n);
  st_ = RunState::from_json(lm.train_state);
  log_("[pretrain] resumed from " + last_path_ + " at step " + std::to_string(st_.step) + " (epoch " +
       std::to_string(st_.epoch + 1) + ")");
}

// ---------------------------------------------------------------- the loop
[[noreturn]] void Pretrainer::diverged(float loss) {
  throw TrainingDiverged("pretrain: the loss is " + fmt("%g", loss) + " at step " + std::to_string(st_.step + 1) +
                         " (epoch " + std::to_string(st_.epoch + 1) + "); stopped; " +
                         (fs::exists(last_path_) ? "the last checkpoint '" + last_path_ + "' is kept"
                                                 : std::string("no checkpoint had been written yet")) +
                         ". Lower lr or set grad_clip.");
}

float Pretrainer::step(const Batch& b) {
  const int Nv = mae_->num_visible(), Np = ecfg_.num_patches();
  keep_.resize(size_t(b.n) * Nv);
  for (int i = 0; i < b.n; i++)
    draw_visible_patches(mask_seed(uint64_t(cfg_.seed), st_.epoch, int64_t(b.index[i])), Np, Nv, &keep_[size_t(i) * Nv]);
  float loss = mae_->forward(b.images.data(), keep_.data(), b.n);
  if (req_.nan_at_step == st_.step + 1) loss = NAN;
  if (!std::isfinite(loss)) diverged(loss);
  mae_->zero_grad();
  mae_->backward();
  lr_ = lr_at(cfg_, st_.step, spe_);
  cpu::AdamWParams hp;
  hp.lr = lr_, hp.beta1 = cfg_.beta1, hp.beta2 = cfg_.beta2, hp.eps = cfg_.adam_eps;
  hp.weight_decay = cfg_.weight_decay, hp.step = int(st_.step + 1);
  try {
    mae_->adamw_step(hp, cfg_.grad_clip);
  } catch (const NonFiniteError&) {
    diverged(NAN);
  }
  return loss;
}

bool Pretrainer::run_epoch() {
  const auto t0 = Clock::now();
  int64_t images = 0;
  loader_->start_epoch(st_.epoch, size_t(st_.batch_in_epoch));
  Batch b;
  while (loader_->next(b)) {
    const float loss = step(b);
    st_.step++, st_.batch_in_epoch++, st_.epoch_batches++;
    st_.epoch_loss_sum += loss, st_.epoch_seen += b.n, images += b.n;
    steps_log_ << st_.step << "," << st_.epoch + 1 << "," << fmt("%.9g", loss) << "," << fmt("%.9g", lr_) << "\n";
    if (st_.step % cfg_.log_every == 0) {
      const double s = since(t0), ips = double(images) / std::max(s, 1e-9);
      const double eta = double(int64_t(cfg_.epochs) * spe_ - st_.step) * double(cfg_.batch_size) / std::max(ips, 1e-9);
      log_("[pretrain] epoch " + std::to_string(st_.epoch + 1) + "/" + std::to_string(cfg_.epochs) + " step " +
           std::to_string(st_.step) + "/" + std::to_string(int64_t(cfg_.epochs) * spe_) + " loss " + fmt("%.4f", loss) +
           " lr " + fmt("%.3g", lr_) + " " + fmt("%.1f", ips) + " img/s, about " + fmt("%.0f", eta) + " s left");
    }
    if (cfg_.checkpoint_every > 0 && st_.step % cfg_.checkpoint_every == 0) save_last();
    if (cfg_.max_steps > 0 && st_.step >= cfg_.max_steps) {
      steps_log_.flush();
      save_last();
      return false;
    }
  }
  end_epoch(since(t0), images);
  return true;
}

void Pretrainer::end_epoch(double secs, int64_t images) {
  EpochRow r;
  r.epoch = st_.epoch + 1;
  r.step = st_.step;
  r.train_loss = st_.epoch_loss_sum / double(std::max<int64_t>(1, st_.epoch_batches));
  r.lr = lr_;
  r.img_s = double(images) / std::max(secs, 1e-9);
  r.elapsed_s = st_.elapsed_s + since(t_start_);
  st_.history.push_back(r);
  log_("[pretrain] epoch " + std::to_string(r.epoch) + " done: reconstruction loss " + fmt("%.4f", r.train_loss) + ", " +
       fmt("%.1f", r.img_s) + " img/s");
  st_.epoch++, st_.batch_in_epoch = 0, st_.epoch_loss_sum = 0, st_.epoch_batches = 0, st_.epoch_seen = 0;
  std::ostringstream csv;
  csv << "epoch,step,train_loss,lr,img_s,elapsed_s\n";
  std::vector<double> x, y;
  for (const auto& h : st_.history) {
    csv << h.epoch << "," << h.step << "," << fmt("%.6f", h.train_loss) << "," << fmt("%.6g", h.lr) << ","
        << fmt("%.2f", h.img_s) << "," << fmt("%.1f", h.elapsed_s) << "\n";
    x.push_back(h.epoch), y.push_back(h.train_loss);
  }
  steps_log_.flush();
  write_text_atomic((fs::path(out_) / "metrics.csv").string(), csv.str());
  write_text_atomic((fs::path(out_) / "loss.svg").string(),
                    line_chart_svg("Masked-autoencoder reconstruction loss", "epoch",
                                   cfg_.norm_pix_loss ? "MSE (normalised pixels)" : "MSE", {{"train", "#3182bd", x, y}}));
  save_encoder();
  save_last();
  const bool last = st_.epoch == cfg_.epochs;
  if (last || (cfg_.pictures_every > 0 && st_.epoch % cfg_.pictures_every == 0)) write_pictures(st_.epoch);
}

// ---------------------------------------------------------------- pictures
// One row per image: the original, what the encoder saw (hidden patches grey), and the
// reconstruction (visible patches as they were, hidden ones predicted), each scaled up to at
// least 96 px with nearest-neighbour pixels.
Image picture_grid(const std::vector<float>& orig, const std::vector<float>& rec, const std::vector<float>& hidden,
                   int n, int S, int P, const DataStats& st) {
  const int z = std::max(1, (96 + S - 1) / S), T = S * z, gap = 4, g = S / P;
  Image out;
  out.width = 3 * T + 4 * gap, out.height = n * T + (n + 1) * gap;
  out.rgb.assign(size_t(out.width) * out.height * 3, 255);
  auto pixel = [&](const std::vector<float>& v, int i, int c, int y, int x) {
    const float f = v[((size_t(i) * 3 + c) * S + y) * S + x] * st.std[c] + st.mean[c];
    return uint8_t(std::clamp(std::lround(f * 255.0f), 0L, 255L));
  };
  for (int i = 0; i < n; i++)
    for (int col = 0; col < 3; col++)
      for (int y = 0; y < T; y++)
        for (int x = 0; x < T; x++) {
          const int sy = y / z, sx = x / z;
          const bool hid = hidden[size_t(i) * g * g + (sy / P) * g + sx / P] != 0.0f;
          uint8_t* px = &out.rgb[(size_t(gap + i * (T + gap) + y) * out.width + gap + col * (T + gap) + x) * 3];
          for (int c = 0; c < 3; c++)
            px[c] = col == 0 ? pixel(orig, i, c, sy, sx) : col == 1 ? (hid ? 128 : pixel(orig, i, c, sy, sx))
                                                                    : pixel(rec, i, c, sy, sx);
        }
  return out;
}

void Pretrainer::write_pictures(int epoch) {
  const int S = ecfg_.image_size, n = int(std::min<size_t>(kPictureImages, data_.samples.size()));
  std::vector<float> x(size_t(n) * 3 * S * S);
  try {
    for (int i = 0; i < n; i++) {
      const size_t at = size_t(i) * data_.samples.size() / size_t(n);  // spread over the data (and its classes)
      Image im;
      if (data_.pack) {
        im.width = im.height = S;
        im.rgb.assign(data_.pack->image(at), data_.pack->image(at) + size_t(S) * S * 3);
      } else {
        im = preprocess(load_image(data_.samples[at].full_path()), S);
      }
      to_chw_normalized(im, data_.stats.mean, data_.stats.std, x.data() + size_t(i) * 3 * S * S);
    }
  } catch (const std::exception& e) {
    log_(std::string("[pretrain] no pictures this epoch: ") + e.what());
    return;
  }
  const int Nv = mae_->num_visible(), Np = ecfg_.num_patches();
  std::vector<int> keep(size_t(n) * Nv);
  for (int i = 0; i < n; i++)  // the same masks every time: the pictures compare across epochs
    draw_visible_patches(mask_seed(uint64_t(cfg_.seed), -1, i), Np, Nv, &keep[size_t(i) * Nv]);
  mae_->forward(x.data(), keep.data(), n);
  const Image grid = picture_grid(x, mae_->reconstruction(), mae_->hidden_mask(), n, S, ecfg_.patch, data_.stats);
  fs::create_directories(fs::path(out_) / "pictures");
  char name[32];
  std::snprintf(name, sizeof name, "epoch_%03d.png", epoch);
  write_png((fs::path(out_) / "pictures" / name).string(), grid);
}

// ---------------------------------------------------------------- start and end
void Pretrainer::write_config() {
  json c = cfg_.to_json();
  c["_model"] = ecfg_.to_string();
  c["_data"] = data_.what;
  c["_images"] = data_.samples.size();
  write_text_atomic((fs::path(out_) / "config.json").string(), json_text(c, 2) + "\n");  // --data may not be UTF-8
}

PretrainSummary Pretrainer::go() {
  t_start_ = Clock::now();
  setup();
  fs::create_directories(out_);  // only once the data, the config and any checkpoint are accepted
  remove_stale_temporaries(out_, log_);
  steps_log_ = open_steps_csv((fs::path(out_) / "steps.csv").string(), req_.resume, st_.step);
  write_config();
  log_("[pretrain] " + ecfg_.to_string() + "; decoder " + std::to_string(cfg_.decoder_dim) + " wide, " +
       std::to_string(cfg_.decoder_depth) + " deep; " + std::to_string(mae_->num_visible()) + " of " +
       std::to_string(ecfg_.num_patches()) + " patches visible; " + std::to_string(data_.samples.size()) +
       " images: " + data_.what + (data_.pack ? " (from its pack)" : ""));
  for (const auto& why : data_.skipped) log_("[pretrain] skipped, cannot be read: " + why);
  PretrainSummary s;
  s.finished = true;
  while (st_.epoch < cfg_.epochs)
    if (!run_epoch()) {
      s.finished = false;
      break;
    }
  s.steps = st_.step;
  s.epochs_done = st_.epoch;
  s.last_epoch_loss = st_.history.empty() ? NAN : st_.history.back().train_loss;
  s.elapsed_s = st_.elapsed_s + since(t_start_);
  s.encoder_path = encoder_path_;
  s.last_path = last_path_;
  return s;
}

}  // namespace

PretrainSummary pretrain(const PretrainRequest& req) { return Pretrainer(req).go(); }

}  // namespace vit
