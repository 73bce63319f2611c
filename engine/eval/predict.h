// Batched prediction over a loader: the one loop behind validation in `train` and `vitengine eval`.
#pragma once
#include <cstddef>
#include <vector>

#include "engine/data/dataset.h"
#include "engine/dist/dist.h"
#include "engine/runtime/backend.h"

namespace vit {

// Logits of every sample the loader yields in one epoch (no augmentation), in sample order.
// views > 1: test-time augmentation, the mean logits of the first `views` dihedral views
// (engine/eval/tta.h mean_view_logits; 2 = identity + mirror, 8 = all of D4; throws outside [1, 8]).
struct Predictions {
  int k = 0;
  std::vector<float> logits;  // (n, k)
  std::vector<int> labels;    // (n)
  std::vector<size_t> index;  // sample index of each row
  size_t n() const { return labels.size(); }
};
// comm (data parallelism): every rank calls predict with a loader that deals out whole batches
// (LoaderConfig::shard_whole_batches); each rank gets every rank's rows, in sample order, so the
// result is the single process's, bit for bit (the same batches run through the same code).
Predictions predict(TrainBackend& model, Loader& loader, int views = 1, dist::Comm* comm = nullptr);

}  // namespace vit
