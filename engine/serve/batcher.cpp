// Dynamic batching; see batcher.h.
#include "engine/serve/batcher.h"

#include <algorithm>
#include <chrono>

#include "engine/eval/rollout.h"

namespace vit {

Batcher::Batcher(Predictor& predictor, int max_batch, int queue_capacity, int gather_us)
    : predictor_(predictor),
      max_batch_(std::max(1, max_batch)),
      capacity_(std::max(1, queue_capacity)),
      gather_us_(std::max(0, gather_us)) {
  worker_ = std::thread([this] { loop(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  for (auto& j : queue_) j.done.set_exception(std::make_exception_ptr(std::runtime_error("server shutting down")));
}

std::vector<std::future<BatchResult>> Batcher::submit(std::vector<std::vector<float>> images, bool want_rollout) {
  std::vector<std::future<BatchResult>> futures;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) throw QueueFull("server shutting down");
    if (queue_.size() + images.size() > size_t(capacity_))
      throw QueueFull("queue full (" + std::to_string(queue_.size()) + " of " + std::to_string(capacity_) +
                      " images waiting)");
    for (auto& img : images) {
      if (img.size() != predictor_.input_floats()) throw std::invalid_argument("Batcher: wrong input size");
      Job j;
      j.chw = std::move(img);
      j.rollout = want_rollout;
      futures.push_back(j.done.get_future());
      queue_.push_back(std::move(j));
    }
    stats_.queue_depth = queue_.size();
  }
  cv_.notify_all();
  return futures;
}

BatcherStats Batcher::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  BatcherStats s = stats_;
  s.queue_depth = queue_.size();
  return s;
}

void Batcher::loop() {
  std::vector<float> buf;
  for (;;) {
    std::vector<Job> jobs;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      if (int(queue_.size()) < max_batch_ && gather_us_ > 0)
        cv_.wait_for(lk, std::chrono::microseconds(gather_us_),
                     [&] { return stop_ || int(queue_.size()) >= max_batch_; });
      if (stop_) return;
      int n = std::min<int>(max_batch_, int(queue_.size()));
      for (int i = 0; i < n; ++i) {
        jobs.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    const int B = int(jobs.size());
    const size_t F = predictor_.input_floats();
    try {
      buf.resize(size_t(B) * F);
      for (int b = 0; b < B; ++b) std::copy(jobs[b].chw.begin(), jobs[b].chw.end(), buf.begin() + b * F);
      const bool rollout = std::any_of(jobs.begin(), jobs.end(), [](const Job& j) { return j.rollout; });
      std::vector<Prediction> preds = predictor_.run(buf.data(), B, rollout);
      {
        std::lock_guard<std::mutex> lk(mu_);  // before any caller wakes up, so stats() sees this batch
        stats_.batches++;
        stats_.images += B;
        stats_.max_batch_seen = std::max(stats_.max_batch_seen, B);
        if (stats_.batch_sizes.size() <= size_t(B)) stats_.batch_sizes.resize(size_t(B) + 1, 0);
        ++stats_.batch_sizes[size_t(B)];
      }
      const auto& cfg = predictor_.config();
      const int H = cfg.heads, N = cfg.seq_len();
      for (int b = 0; b < B; ++b) {
        BatchResult r;
        r.pred = std::move(preds[b]);
        r.batch_size = B;
        if (jobs[b].rollout) {
          std::vector<const float*> layers;
          for (int l = 0; l < cfg.depth; ++l)
            layers.push_back(predictor_.model().attention_probs(l) + size_t(b) * H * N * N);
          r.rollout = cls_rollout(layers, H, N);
        }
        jobs[b].done.set_value(std::move(r));
      }
    } catch (...) {
      auto e = std::current_exception();
      for (auto& j : jobs) {
        try {
          j.done.set_exception(e);
        } catch (const std::future_error&) {
          // already answered before the failure
        }
      }
    }
  }
}

}  // namespace vit
