// Batched prediction over a loader: the one loop behind validation in `train` and `vitengine eval`.
#pragma once
#include <cstddef>
#include <functional>
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
  int dim = 0;                  // width of `features`; 0 when not asked for
  std::vector<float> logits;    // (n, k)
  std::vector<float> features;  // (n, dim): the (mean over views) class-token features, if asked for
  std::vector<int> labels;    // (n)
  std::vector<size_t> index;  // sample index of each row
  size_t n() const { return labels.size(); }
};
// comm (data parallelism): every rank calls predict with a loader that deals out whole batches
// (LoaderConfig::shard_whole_batches); each rank gets every rank's rows, in sample order, so the
// result is the single process's, bit for bit (the same batches run through the same code).
// features_dim > 0 (the model's width): also the features the head read (TrainBackend::features),
// for a feature-space out-of-distribution score (engine/eval/ood.h).
// progress, if set, is called after each of this rank's batches with the rows predicted so far,
// the batch's number (from 1) and the batches in the epoch.
using PredictProgress = std::function<void(size_t rows, size_t batch, size_t batches)>;
Predictions predict(TrainBackend& model, Loader& loader, int views = 1, dist::Comm* comm = nullptr,
                    int features_dim = 0, const PredictProgress& progress = {});

}  // namespace vit
