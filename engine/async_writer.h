// One background job at a time, for writes the caller should not wait for: the trainer's
// epoch-end checkpoint (hashing, writing and fsyncing last.vit with its AdamW moments takes
// ~0.25 s for vit_ti16; done in line, 100 of them were a fifth of the shipped model's 117 s
// GPU run, bench/results/2026-11-26-nvidia-h200-vitengine-train-100ep.log).
//
// submit() first waits for the job in flight, so jobs run in order and never overlap; a job's
// exception is rethrown by the next submit() or wait(). The destructor waits too (and drops an
// error it can no longer report), so nothing is left half-written behind the caller's back.
#pragma once
#include <exception>
#include <functional>
#include <thread>

namespace vit {

class AsyncWriter {
 public:
  AsyncWriter() = default;
  AsyncWriter(const AsyncWriter&) = delete;
  AsyncWriter& operator=(const AsyncWriter&) = delete;
  ~AsyncWriter();

  // Waits for the previous job (rethrowing its error), then starts `job` on its own thread.
  void submit(std::function<void()> job);
  // Waits for the job in flight, if any; rethrows its error once.
  void wait();
  bool busy() const { return thread_.joinable(); }

 private:
  std::thread thread_;
  std::exception_ptr error_;
};

}  // namespace vit
