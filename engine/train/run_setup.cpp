// Setting up a run: the data and its loaders, the model (new, --init or --resume), and the run
// folder's config.json and steps.csv.
#include "engine/train/run.h"

namespace vit::train_detail {

void Run::load_data() {
  const std::string mpath = manifest_path(req_.data);
  if (!fs::exists(mpath)) throw std::runtime_error("no manifest at '" + mpath + "' (run `vitengine prepare` first)");
  Manifest man = read_manifest_resolved(mpath, cfg_.data_root);
  train_samples_ = select(man, cfg_.train_split, cfg_.subset);
  val_samples_ = cfg_.val_split.empty() ? std::vector<Sample>{} : select(man, cfg_.val_split, 100);
  if (train_samples_.empty())
    throw std::runtime_error("'" + mpath + "' has no '" + cfg_.train_split + "' samples in the " +
                             std::to_string(cfg_.subset) + "% subset");
  stats_ = read_stats(report_path(req_.data));
  cfg_.resolve_auto(read_orientation_free(report_path(req_.data)));
  names_ = man.classes;
  measure_cell_size(man);
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
  tl.aug = train_augment(cfg_);
  tl.threads = cfg_.threads;
  tl.prefetch = cfg_.prefetch;
  tl.seed = uint64_t(cfg_.seed);
  tl.shard_rank = comm_ ? comm_->rank() : 0;
  tl.shard_count = ranks();
  apply_cell_size(tl);
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
    vl.shard_rank = comm_ ? comm_->rank() : 0;
    vl.shard_count = ranks();
    vl.shard_whole_batches = true;
    apply_cell_size(vl);
    auto val_pack = find_pack(cfg_.val_split, val_samples_);
    val_loader_ =
        val_pack ? std::make_unique<Loader>(val_pack, stats_, vl) : std::make_unique<Loader>(val_samples_, stats_, vl);
  }
  meta_.class_names = names_;
  for (int c = 0; c < 3; ++c) meta_.mean[c] = stats_.mean[c], meta_.std[c] = stats_.std[c];
  meta_.temperature = 1.0f;
}

// The sample stain-ref takes (the whole train split, not the subset trained on), so the fraction
// stored here is the one `vitengine stain-ref` would store for the same data.
void Run::measure_cell_size(const Manifest& man) {
  if (cfg_.cell_size == "none") return;
  const int S = cfg_.model_config(int(man.classes.size())).image_size;
  const std::vector<Image> sample = reference_images(select(man, cfg_.train_split), S);  // names a bad file
  try {
    cell_ref_ = cell_size_reference(sample);
  } catch (const std::runtime_error& e) {  // no white cell in any image
    throw ConfigError(std::string("cell_size=normalize: ") + e.what() +
                      " (are these blood cells? set cell_size=none for other images)");
  }
  char b[200];
  std::snprintf(b, sizeof b,
                "[train] cell_size=normalize: a white cell in %d of %d sampled train images; every view rescaled "
                "so that it spans %.3f of the side",
                cell_ref_.found, cell_ref_.images, cell_ref_.fraction);
  log_(b);
}

void Run::apply_cell_size(LoaderConfig& lc) const {
  if (cfg_.cell_size == "none") return;
  lc.cell_size = CellSizeNorm::kNormalize;
  lc.cell_fraction = cell_ref_.fraction;
}

std::shared_ptr<const PackFile> Run::find_pack(const std::string& split, const std::vector<Sample>& samples) {
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

void Run::upload_train_images() {
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

void Run::setup_model() {
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
    if (lead())
      for (const char* f : {"steps.csv", "metrics.csv", "best.vit", "last_ema.vit"}) fs::remove(fs::path(out_) / f);
  }
  if (cfg_.ema_decay > 0) {
    if (ema_.empty()) ema_.assign(host_->param_data(), host_->param_data() + host_->num_params());
    eval_host_ = std::make_unique<ViT>(model_cfg_);
  }
  share_weights();
  if (cfg_.device == "cuda") set_gpu_attention(cfg_.attention);
  backend_ = make_backend(cfg_.device, *host_, max_batch(), cfg_.precision);
  // the per-tensor lr scales for fine-tuning
  uses_scaled_ = cfg_.layer_decay != 1.0f ||
                 (!cfg_.init.empty() && (cfg_.freeze_backbone_epochs > 0 || cfg_.backbone_lr_mult != 1.0f));
}

void Run::load_init_weights() {
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

// The data's class list must be the checkpoint's, in its order: a label is an index into it, so
// another list of the same length (a re-prepared set, an edited classes.txt) would silently give
// every image another class from the resumed step on.
void Run::check_resumed_classes(const std::vector<std::string>& saved) const {
  if (saved.empty() || saved == names_) return;  // a checkpoint without names: nothing to compare
  size_t i = 0;
  while (i < saved.size() && i < names_.size() && saved[i] == names_[i]) ++i;
  auto name_at = [i](const std::vector<std::string>& v) { return i < v.size() ? "'" + v[i] + "'" : "none"; };
  throw CheckpointMismatch("--resume: '" + last_path_ + "' was trained on other classes than the data '" +
                           req_.data + "' has: class " + std::to_string(i) + " is " + name_at(saved) +
                           " in the checkpoint and " + name_at(names_) + " in the data (" +
                           std::to_string(saved.size()) + " and " + std::to_string(names_.size()) +
                           " classes); refusing to resume");
}

void Run::resume_from_checkpoint() {
  if (!fs::exists(last_path_)) throw std::runtime_error("--resume: no checkpoint '" + last_path_ + "' to resume from");
  LoadedModel lm = load_model(last_path_);
  if (!lm.model) throw std::runtime_error("--resume: '" + last_path_ + "' holds no model");
  if (!lm.model->config().same_architecture(model_cfg_))
    throw CheckpointMismatch("--resume: '" + last_path_ + "' holds model " + lm.model->config().to_string() +
                             ", but this config asks for " + model_cfg_.to_string() + "; refusing to resume");
  check_resumed_classes(lm.meta.class_names);
  if (!lm.has_optimizer || !lm.train_state.is_object() || !lm.train_state.contains("step"))
    throw CheckpointMismatch("--resume: '" + last_path_ +
                             "' has no optimizer state or train_state (is it an exported model?)");
  const auto& st = lm.train_state;
  nlohmann::json saved = st.value("config", nlohmann::json::object());
  auto diff = TrainConfig::differing_fields(saved, cfg_.to_json(), true);
  // More epochs extend the run (the lr schedule then spans the new count, as time_budget_s does);
  // fewer than the checkpoint's would end it in the past, and any other recipe change is refused.
  const int saved_epochs = saved.value("epochs", 0);
  if (cfg_.epochs > saved_epochs) {
    diff.erase(std::remove(diff.begin(), diff.end(), std::string("epochs")), diff.end());
    log_("[train] --resume extends the run from " + std::to_string(saved_epochs) + " to " +
         std::to_string(cfg_.epochs) + " epochs; the lr schedule now spans " + std::to_string(cfg_.epochs));
  }
  if (!diff.empty()) {
    throw CheckpointMismatch("--resume: '" + last_path_ + "' was written by a run with another config: " +
                             TrainConfig::describe_differences(diff, saved, cfg_.to_json()) + "; refusing to resume");
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

void Run::write_config() {
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
  if (lead()) write_text_atomic((fs::path(out_) / "config.json").string(), j.dump(2) + "\n");
  meta_.extra = {{"config", cfg_.to_json()}, {"model", j["model"]}};
  if (cfg_.cell_size != "none") {  // what --cell-size normalize reads; "trained" says the views were rescaled
    meta_.extra["cell_size"] = cell_ref_.to_json();
    meta_.extra["cell_size"]["data"] = manifest_path(req_.data);
    meta_.extra["cell_size"]["trained"] = true;
  }
  log_("[train] " + model_cfg_.to_string() + ", " + std::to_string(host_->num_params()) + " parameters; " +
       std::to_string(train_samples_.size()) + " train / " + std::to_string(val_samples_.size()) + " val images; " +
       std::to_string(spe_) + " steps per epoch, " + std::to_string(total_steps_) + " in all; device " +
       backend_->device() + (cfg_.data_on_device ? " (train images augmented on the device)" : ""));
}

void Run::open_steps_log() {
  if (!lead()) return;
  steps_log_ = open_steps_csv((fs::path(out_) / "steps.csv").string(), req_.resume, st_.step);
}

}  // namespace vit::train_detail
