// Test-time entropy minimisation (TENT, Wang et al., ICLR 2021) of a ViT's LayerNorm parameters on
// unlabelled images of a new lab: an experiment (README.md), not part of the build.
// Usage: tent MODEL.vit LIST OUT.vit LR EPOCHS [STAIN_NORM CELL_SIZE]
//   LIST: one image path per line (a tab and a label may follow; labels are unused).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "engine/data/image.h"
#include "engine/eval/inference.h"
#include "engine/eval/tta.h"
#include "engine/util/rng.h"
#include "weights/checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 6 && argc != 8) {
    std::fprintf(stderr, "usage: tent MODEL.vit LIST OUT.vit LR EPOCHS [STAIN_NORM CELL_SIZE]\n");
    return 2;
  }
  vit::Predictor pred(argv[1]);
  if (argc == 8) {
    pred.set_stain_norm(argv[6]);
    pred.set_cell_size(argv[7]);
  }
  std::vector<std::string> paths;
  std::ifstream list(argv[2]);
  for (std::string l; std::getline(list, l);)
    if (!l.empty()) paths.push_back(l.substr(0, l.find('\t')));
  const size_t F = pred.input_floats(), n = paths.size();
  const int S = pred.image_size(), C = pred.num_classes();
  std::vector<float> x(n * F);
  for (size_t i = 0; i < n; ++i) pred.prepare(vit::load_image(paths[i]), x.data() + i * F);
  vit::ViT& model = pred.model();
  model.reset_optimizer();
  std::vector<float> scale;  // LayerNorm weights and biases only (torchvision names: ln_1, ln_2, encoder.ln)
  for (const auto& p : model.params()) scale.push_back(p.name.find(".ln") != std::string::npos ? 1.0f : 0.0f);
  vit::cpu::AdamWParams hp;
  hp.lr = std::stof(argv[4]), hp.weight_decay = 0;
  vit::Rng r(17);
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  const int B = 16;
  std::vector<float> batch, dz;
  for (int e = 0; e < std::stoi(argv[5]); ++e) {
    vit::shuffle(order, r);
    double ent = 0;
    for (size_t b0 = 0; b0 < n; b0 += B) {
      const int nb = int(std::min(n - b0, size_t(B)));
      batch.resize(size_t(nb) * F);
      dz.assign(size_t(nb) * C, 0.0f);
      for (int b = 0; b < nb; ++b)
        vit::dihedral_view(x.data() + order[b0 + size_t(b)] * F, batch.data() + size_t(b) * F, 1, 3, S,
                           int(r.next() % 8));
      const float* z = model.forward(batch.data(), nb, vit::ForwardOptions{});
      for (int b = 0; b < nb; ++b) {  // H = -sum p log p; dH/dz_j = -p_j (log p_j + H)
        const float* zb = z + size_t(b) * C;
        double mx = zb[0], sum = 0, H = 0;
        for (int c = 1; c < C; ++c) mx = std::max(mx, double(zb[c]));
        std::vector<double> p(static_cast<size_t>(C));
        for (int c = 0; c < C; ++c) sum += p[size_t(c)] = std::exp(double(zb[c]) - mx);
        for (auto& v : p) v /= sum;
        for (double v : p) H -= v > 0 ? v * std::log(v) : 0;
        for (int c = 0; c < C; ++c) {
          const double pc = p[size_t(c)];
          dz[size_t(b) * C + size_t(c)] = float(-pc * ((pc > 0 ? std::log(pc) : 0) + H) / nb);
        }
        ent += H;
      }
      model.zero_grad();
      model.backward_from(dz.data());
      model.adamw_step_scaled(hp, 1.0f, scale);
      hp.step++;
    }
    std::fprintf(stderr, "epoch %d: mean entropy %.4f\n", e + 1, ent / double(n));
  }
  vit::ModelMeta meta = pred.meta();
  meta.extra.erase("version");
  vit::save_model(argv[3], model, meta);
}
