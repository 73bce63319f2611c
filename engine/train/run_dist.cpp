// Data parallelism in the run (docs/distributed.md): every rank trains the same model on its part
// of each global batch; the gradients are summed over the ranks before the AdamW step, so the
// ranks stay identical and follow the curve of one process at the same global batch.
#include "engine/train/run.h"
#include "engine/util/sha256.h"

namespace vit::train_detail {

namespace {
// "lr (rank 0 0.001, rank 1 0.002)" for every field two ranks' configs disagree on.
std::string config_difference(const std::string& at0, const std::string& atr, int r) {
  const auto a = nlohmann::json::parse(at0), b = nlohmann::json::parse(atr);
  std::string d;
  for (const auto& f : TrainConfig::differing_fields(a, b, false))
    d += (d.empty() ? "" : ", ") + f + " (rank 0 " + (a.contains(f) ? a[f].dump() : "absent") + ", rank " +
         std::to_string(r) + " " + (b.contains(f) ? b[f].dump() : "absent") + ")";
  return d.empty() ? "the JSON differs" : d;
}
}  // namespace

void Run::check_ranks() {
  if (ranks() == 1) return;
  if (cfg_.batch_size % ranks() != 0)
    throw ConfigError("batch_size " + std::to_string(cfg_.batch_size) + " is the global batch, and " +
                      std::to_string(ranks()) + " ranks cannot share it evenly: choose a multiple of " +
                      std::to_string(ranks()));
  dist::check_same(*comm_, "the training config", cfg_.to_json().dump(), config_difference);
  // The same build everywhere: two binaries can round differently and drift apart.
  dist::check_same(*comm_, "the vitengine binary (sha256 of /proc/self/exe)", sha256_file("/proc/self/exe"));
  dist::check_same(*comm_, "the --data argument", req_.data);
  dist::check_same(*comm_, "--resume", req_.resume ? "on" : "off");
}

void Run::share_weights() {
  if (ranks() == 1) return;
  // parameters, gradients and both moments: one broadcast of the whole host arena
  comm_->broadcast(host_->param_data(), 4 * host_->num_params() * sizeof(float), 0,
                   "rank 0's parameters and AdamW moments");
  if (!ema_.empty()) comm_->broadcast(ema_.data(), ema_.size() * sizeof(float), 0, "rank 0's EMA weights");
}

void Run::start_gradient_allreduce(int n, int global_n) {
  // each rank's gradient is the mean over its n images; weighted by n / global_n, their sum is
  // the mean over the whole batch, also for a last batch the ranks cannot split evenly
  backend_->start_gradient_allreduce(*comm_, float(double(n) / double(global_n)));
}

float Run::reduce_loss(float loss, int n, int global_n, int64_t* correct) {
  double v[2] = {double(loss) * double(n), double(*correct)};
  comm_->allreduce_sum(v, 2, "the batch's loss and correct predictions");
  *correct = int64_t(std::llround(v[1]));
  return float(v[0] / double(global_n));
}

double Run::rank0_value(double v) {
  if (reducing()) comm_->broadcast(&v, sizeof v, 0, "rank 0's epoch time");
  return v;
}

void Run::wait_for_ranks(const std::string& what) {
  if (comm_) comm_->barrier(what);
}

}  // namespace vit::train_detail
