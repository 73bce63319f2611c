// The end of a run: the best model's calibration and validation report, and summary.md.
#include "engine/train/run.h"

namespace vit::train_detail {

TrainSummary Run::finish() {
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
  // No validation split: best.vit is simply the final eval weights, written again when a --resume
  // extends the run (what the first end wrote is no longer the end).
  if (!val_loader_) {
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

void Run::report_on_val(TrainSummary& s) {
  wait_for_ranks("rank 0 has written best.vit");
  LoadedModel best = load_model(best_path_);
  auto be = make_backend(cfg_.device, *best.model, max_batch(), cfg_.precision);
  Predictions p = predict(*be, *val_loader_, 1, comm_);
  const size_t n = p.n();
  double T = 1.0;
  auto before = calibration(p.logits.data(), p.labels.data(), n, p.k, 1.0, cfg_.ece_bins);
  if (cfg_.calibrate) T = fit_temperature(p.logits.data(), p.labels.data(), n, p.k);
  if (!lead()) {  // every rank has the same predictions and T; rank 0 writes
    s.temperature = T;
    return;
  }
  if (cfg_.calibrate) {
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

void Run::write_summary(const TrainSummary& s) {
  if (!lead()) return;
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
  } else {
    md << "best.vit: the " << (cfg_.ema_decay > 0 ? "EMA " : "") << "weights after the last epoch (" << st_.epoch
       << "): no val images, so no epoch was picked and no temperature fitted.\n";
  }
  write_text_atomic((fs::path(out_) / "summary.md").string(), md.str());
}

}  // namespace vit::train_detail
