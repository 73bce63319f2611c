#include "engine/eval/predict.h"

#include "engine/eval/tta.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>

namespace vit {

namespace {
// Every rank's rows on every rank, ordered by sample index as one process yields them.
void gather_rows(Predictions& p, dist::Comm& comm) {
  const size_t k = size_t(p.k), d = size_t(p.dim), row = sizeof(uint64_t) + sizeof(int) + (k + d) * sizeof(float);
  if (p.index.size() != p.n()) throw std::logic_error("predict: a sharded loader must report sample indices");
  std::string mine(p.n() * row, '\0');
  for (size_t i = 0; i < p.n(); ++i) {
    char* at = mine.data() + i * row;
    const uint64_t idx = p.index[i];
    std::memcpy(at, &idx, sizeof idx);
    std::memcpy(at + sizeof idx, &p.labels[i], sizeof(int));
    std::memcpy(at + sizeof idx + sizeof(int), p.logits.data() + i * k, k * sizeof(float));
    if (d) std::memcpy(at + sizeof idx + sizeof(int) + k * sizeof(float), p.features.data() + i * d, d * sizeof(float));
  }
  std::string all;
  for (const auto& part : comm.allgather(mine, "predictions")) all += part;
  const size_t n = all.size() / row;
  std::vector<size_t> order(n);
  std::vector<uint64_t> idx(n);
  for (size_t i = 0; i < n; ++i) std::memcpy(&idx[i], all.data() + i * row, sizeof(uint64_t));
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return idx[a] < idx[b]; });
  p.logits.resize(n * k);
  p.features.resize(n * d);
  p.labels.resize(n);
  p.index.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const char* at = all.data() + order[i] * row;
    p.index[i] = size_t(idx[order[i]]);
    std::memcpy(&p.labels[i], at + sizeof(uint64_t), sizeof(int));
    std::memcpy(p.logits.data() + i * k, at + sizeof(uint64_t) + sizeof(int), k * sizeof(float));
    if (d) std::memcpy(p.features.data() + i * d, at + sizeof(uint64_t) + sizeof(int) + k * sizeof(float), d * sizeof(float));
  }
}
}  // namespace

Predictions predict(TrainBackend& model, Loader& loader, int views, dist::Comm* comm, int features_dim,
                    const PredictProgress& progress) {
  Predictions p;
  p.k = model.num_classes();
  p.dim = std::max(0, features_dim);
  loader.start_epoch(0, 0);
  Batch b;
  ForwardOptions fo;
  fo.training = false;
  fo.keep_attention = false;
  fo.inference = true;
  const int S = loader.config().image_size;
  const size_t batches = loader.batches_per_epoch();
  for (size_t batch = 1; loader.next(b); ++batch) {
    if (b.n == 0) continue;
    const size_t row0 = p.logits.size();
    const size_t frow0 = p.features.size();
    p.logits.resize(row0 + size_t(b.n) * size_t(p.k));
    p.features.resize(frow0 + size_t(b.n) * size_t(p.dim));
    std::function<const float*()> feats;
    if (p.dim) feats = [&] { return model.features(); };
    mean_view_logits([&](const float* x) { return model.forward(x, b.n, fo); }, b.images.data(), b.n, S, p.k, views,
                     p.logits.data() + row0, feats, p.dim, p.features.data() + frow0);
    p.labels.insert(p.labels.end(), b.labels.begin(), b.labels.begin() + b.n);
    if (b.index.size() >= size_t(b.n)) p.index.insert(p.index.end(), b.index.begin(), b.index.begin() + b.n);
    if (progress) progress(p.labels.size(), batch, batches);
  }
  if (comm && comm->distributed()) {
    const LoaderConfig& c = loader.config();
    if (!c.shard_whole_batches || c.shard_count != comm->size() || c.shard_rank != comm->rank())
      throw std::logic_error("predict: the loader is not this rank's whole-batch shard");
    gather_rows(p, *comm);
  }
  return p;
}

}  // namespace vit
