// The training loop: steps, epochs, the EMA, and the checkpoints written along the way.
#include "engine/train/run.h"

namespace vit::train_detail {

// One optimizer step on `batch` at learning rate `lr`: forward, loss, backward, AdamW. Returns the
// loss and the batch's correct predictions; a non-finite loss or gradient norm ends the run
// (TrainingDiverged) before anything is saved.
float Run::train_step(const Batch& batch, float lr, int64_t* correct) {
  ForwardOptions fo;
  fo.training = true;
  fo.keep_attention = false;
  fo.dropout_seed = dropout_seed(uint64_t(cfg_.seed), st_.step);
  // masks are drawn by position in the rank's part of the batch: each rank its own draws
  if (ranks() > 1) fo.dropout_seed = splitmix64_at(fo.dropout_seed, uint64_t(comm_->rank()));
  fo.drop_path = cfg_.drop_path;
  backend_->zero_grad();
  float loss = 0;
  *correct = 0;
  if (reducing()) start_gradient_allreduce(batch.n, batch.global_n);
  if (batch.n > 0) {  // a rank's part of a last, short batch can be empty
    const float* logits = cfg_.data_on_device
                              ? backend_->forward_uploaded(batch.index.data(), batch.aug.data(), batch.n, fo)
                              : backend_->forward(batch.images.data(), batch.n, fo);
    loss = backend_->loss(batch.labels.data(), cfg_.label_smoothing);
    auto pred = argmax_rows(logits, size_t(batch.n), model_cfg_.num_classes);
    for (int i = 0; i < batch.n; ++i) *correct += pred[i] == batch.labels[i];
    backend_->backward();
  }
  if (reducing()) {
    loss = reduce_loss(loss, batch.n, batch.global_n, correct);
    backend_->finish_gradient_allreduce();
  }
  if (req_.hooks.nan_at_step > 0 && st_.step + 1 == req_.hooks.nan_at_step) loss = NAN;
  if (!std::isfinite(loss)) diverged(std::string("loss is ") + (std::isnan(loss) ? "NaN" : "inf"));
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
  return loss;
}

void Run::loop() {
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
      int64_t correct = 0;
      const float loss = train_step(batch, lr, &correct);
      ++st_.step;
      ++st_.batch_in_epoch;
      st_.epoch_loss_sum += double(loss);
      st_.epoch_correct += correct;
      st_.epoch_seen += batch.global_n;
      ++st_.epoch_batches;
      epoch_imgs += batch.global_n;
      log_imgs += batch.global_n;
      last_lr_ = lr;
      update_ema();
      char line[128];
      std::snprintf(line, sizeof line, "%lld,%d,%.9g,%.9g\n", (long long)st_.step, st_.epoch + 1, double(loss),
                    double(lr));
      if (lead()) {
        steps_log_ << line;
        steps_log_.flush();
      }
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

void Run::end_epoch(int64_t imgs, double secs) {
  secs = rank0_value(secs);  // the time budget below must cut every rank's run at the same epoch
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
    Predictions p = predict(eb, *val_loader_, 1, comm_);
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
  if (!lead()) return;
  write_text_atomic((fs::path(out_) / "metrics.csv").string(), metrics_csv(st_.history));
  write_training_curves((fs::path(out_) / "metrics.csv").string(), out_);
}

void Run::update_ema() {
  if (cfg_.ema_decay <= 0 || st_.step % cfg_.ema_every != 0) return;
  if (cfg_.device != "cpu") backend_->pull(*host_);
  // timm-style warmup of the decay, so that short runs are not dominated by the init
  double d = std::pow(double(cfg_.ema_decay), cfg_.ema_every);
  d = std::min(d, double(1 + st_.step) / double(10 + st_.step));
  const float* p = host_->param_data();
  const float a = float(d), b = float(1 - d);
  for (size_t i = 0; i < ema_.size(); ++i) ema_[i] = a * ema_[i] + b * p[i];
}

std::vector<float> Run::lr_scales() const {
  const int depth = model_cfg_.depth;
  const bool frozen = st_.epoch < cfg_.freeze_backbone_epochs;
  std::vector<float> s;
  for (const auto& p : host_->params()) {
    if (p.name.rfind("heads.", 0) == 0) {  // the head always trains at lr
      s.push_back(1.0f);
      continue;
    }
    // Layer-wise decay: the further from the head, the smaller the step (layer_decay = 1: none).
    const int below_head = depth + 1 - layer_id(p.name, depth);
    s.push_back(frozen ? 0.0f : cfg_.backbone_lr_mult * float(std::pow(double(cfg_.layer_decay), below_head)));
  }
  return s;
}

void Run::save_last() {
  if (!lead()) {
    last_saved_step_ = st_.step;
    return;
  }
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

void Run::save_best(const EpochRow& r) {
  if (!lead()) return;
  ModelMeta m = meta_;
  m.extra["epoch"] = r.epoch;
  m.extra["step"] = r.step;
  m.extra["val"] = {{"accuracy", r.val_acc}, {"macro_f1", r.val_macro_f1}, {"loss", r.val_loss}};
  m.extra["ema"] = cfg_.ema_decay > 0;
  save_model(best_path_, eval_weights_host(), m, false);
}

TrainBackend& Run::eval_backend() {
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

const ViT& Run::eval_weights_host() {
  if (cfg_.ema_decay > 0) {
    std::copy(ema_.begin(), ema_.end(), eval_host_->param_data());
    return *eval_host_;
  }
  backend_->pull(*host_);
  return *host_;
}

}  // namespace vit::train_detail
