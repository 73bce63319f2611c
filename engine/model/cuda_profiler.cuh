#pragma once
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_check.cuh"

namespace vit {

// VIT_PROFILE=1: GPU time per operation of the eager training / inference step, from cudaEvents
// recorded between the operations (skipped while a CUDA graph is being captured). Printed to
// stderr every 10 steps, per step averaged, largest first. For performance engineers: it shows
// where a step's milliseconds go without Nsight. Off: one branch per mark.
// Every mark also opens an NVTX range named after the operation (closing the previous one), always:
// Nsight Systems then shows each op of the step on the CPU timeline and its kernels under it; without
// a tool attached an NVTX call returns at once.
struct OpProfiler {
  bool on = false;
  cudaStream_t stream = nullptr;
  std::vector<cudaEvent_t> events;
  std::vector<const char*> names;
  size_t used = 0;
  std::map<std::string, double> total_ms;
  int steps = 0;
  nvtxRangeId_t nvtx_range = 0;
  void mark(const char* name) {
    if (nvtx_range) nvtxRangeEnd(nvtx_range);
    nvtx_range = nvtxRangeStartA(name);
    if (!on) return;
    cudaStreamCaptureStatus cs;
    VIT_CHECK(cudaStreamIsCapturing(stream, &cs));
    if (cs != cudaStreamCaptureStatusNone) return;
    if (used == events.size()) {
      cudaEvent_t e;
      VIT_CHECK(cudaEventCreate(&e));
      events.push_back(e);
      names.push_back(nullptr);
    }
    if (used > 100000) used = 0;  // forward-only use never ends a step: do not grow forever
    VIT_CHECK(cudaEventRecord(events[used], stream));
    names[used++] = name;
  }
  // End of a step: attribute the time between consecutive marks to the earlier mark's name.
  void end_step() {
    if (nvtx_range) nvtxRangeEnd(nvtx_range), nvtx_range = 0;
    if (!on) return;
    mark("(end)");
    VIT_CHECK(cudaEventSynchronize(events[used - 1]));
    for (size_t i = 0; i + 1 < used; ++i) {
      float ms = 0;
      VIT_CHECK(cudaEventElapsedTime(&ms, events[i], events[i + 1]));
      total_ms[names[i]] += ms;
    }
    used = 0;
    if (++steps % 10 == 0) print();
  }
  void print() const {
    std::vector<std::pair<double, std::string>> rows;
    double sum = 0;
    for (const auto& [k, v] : total_ms) rows.push_back({v / steps, k}), sum += v / steps;
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "[profile] GPU ms per step over %d steps (total %.2f ms):\n", steps, sum);
    for (const auto& [ms, k] : rows)
      std::fprintf(stderr, "[profile] %9.3f ms %5.1f%%  %s\n", ms, 100 * ms / sum, k.c_str());
  }
  ~OpProfiler() {
    for (auto e : events) cudaEventDestroy(e);
  }
};

}  // namespace vit
