// The one way vitengine spreads host work over threads: parallel_for hands out indices
// [0, n) one at a time to `threads` workers (dynamic scheduling: image decoding times vary
// tenfold). The first exception a worker throws stops the hand-out and is rethrown here.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace vit {

template <class F>
void parallel_for(size_t n, int threads, F&& f) {
  std::atomic<size_t> next{0};
  std::exception_ptr err;
  std::mutex err_mu;
  auto work = [&] {
    for (size_t i; (i = next++) < n;) {
      try {
        f(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_mu);
        if (!err) err = std::current_exception();
        next = n;
      }
    }
  };
  const int t = int(std::max<size_t>(1, std::min<size_t>(size_t(std::max(1, threads)), n)));
  if (t == 1) {
    work();
  } else {
    std::vector<std::thread> ts;
    for (int k = 0; k < t; ++k) ts.emplace_back(work);
    for (auto& th : ts) th.join();
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace vit
