// One background job at a time, for writes the caller should not wait for: the trainer's
// epoch-end checkpoint. Hashing, writing and fsyncing last.vit with its AdamW moments (66 MB for
// vit_ti16) costs about a tenth of a second per epoch on a small machine (measure it with
// bench_cpu --benchmark_filter=SaveCheckpoint), time the training loop need not wait for.
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
