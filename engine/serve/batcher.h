// Dynamic batching for the server: request threads submit prepared images to a
// bounded queue; one worker thread owns the model and runs whatever is queued (up to
// max_batch images) as one forward pass, then hands each caller its result.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "engine/eval/inference.h"

namespace vit {

// The queue has no room for the images of a request (the server answers 503).
struct QueueFull : std::runtime_error {
  explicit QueueFull(const std::string& what) : std::runtime_error(what) {}
};

struct BatchResult {
  Prediction pred;
  std::vector<float> rollout;  // class-token rollout over the patches, if asked for
  int batch_size = 0;          // how many images shared the forward pass
};

struct BatcherStats {
  uint64_t batches = 0, images = 0;
  int max_batch_seen = 0;
  size_t queue_depth = 0;
  std::vector<uint64_t> batch_sizes;  // [b]: forward passes that ran b images
};

class Batcher {
 public:
  // gather_us: after the first image arrives, wait at most this long for more before
  // running a batch smaller than max_batch (0 = run at once).
  Batcher(Predictor& predictor, int max_batch, int queue_capacity, int gather_us = 2000);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues every image of one request (each predictor.input_floats() floats), or none:
  // throws QueueFull when they do not all fit. Results come back through the futures;
  // a forward-pass failure arrives as the future's exception.
  std::vector<std::future<BatchResult>> submit(std::vector<std::vector<float>> images, bool want_rollout);

  BatcherStats stats() const;
  int queue_capacity() const { return capacity_; }
  int max_batch() const { return max_batch_; }

 private:
  struct Job {
    std::vector<float> chw;
    bool rollout = false;
    std::promise<BatchResult> done;
  };
  void loop();

  Predictor& predictor_;
  const int max_batch_, capacity_, gather_us_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stop_ = false;
  BatcherStats stats_;
  std::thread worker_;
};

}  // namespace vit
