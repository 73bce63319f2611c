// What the CPU and the CUDA ops share: the AdamW hyper-parameters and the dropout keep test.
// Compiles for the host and the device (kernels/cpu/ops.h and kernels/cuda/*.cuh both include it),
// so both paths take the same parameters and draw the same masks.
#pragma once
#include <cstdint>

#include "engine/util/rng.h"  // splitmix64_at, VIT_HD

namespace vit {

// AdamW hyper-parameters of one step (kernels/cpu/ops.h adamw_step has the update rule).
struct AdamWParams {
  float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 1e-2f;
  int step = 1;  // 1-based, for bias correction
  float grad_scale = 1.0f;
};

// The keep test both paths share: output i of the splitmix64 stream `seed`, top 24 bits.
VIT_HD inline bool dropout_keep(uint64_t seed, uint64_t i, float p) {
  return float(splitmix64_at(seed, i) >> 40) * (1.0f / 16777216.0f) >= p;
}

}  // namespace vit
