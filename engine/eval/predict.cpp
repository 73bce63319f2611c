#include "engine/eval/predict.h"

#include "engine/eval/tta.h"

namespace vit {

Predictions predict(TrainBackend& model, Loader& loader, int views) {
  Predictions p;
  p.k = model.num_classes();
  loader.start_epoch(0, 0);
  Batch b;
  ForwardOptions fo;
  fo.training = false;
  fo.keep_attention = false;
  fo.inference = true;
  const int S = loader.config().image_size;
  while (loader.next(b)) {
    if (b.n == 0) continue;
    const size_t row0 = p.logits.size();
    p.logits.resize(row0 + size_t(b.n) * size_t(p.k));
    mean_view_logits([&](const float* x) { return model.forward(x, b.n, fo); }, b.images.data(), b.n, S, p.k, views,
                     p.logits.data() + row0);
    p.labels.insert(p.labels.end(), b.labels.begin(), b.labels.begin() + b.n);
    if (b.index.size() >= size_t(b.n)) p.index.insert(p.index.end(), b.index.begin(), b.index.begin() + b.n);
  }
  return p;
}

}  // namespace vit
