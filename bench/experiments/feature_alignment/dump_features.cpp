// Experiment (not part of the build): dumps the class-token features (after the final LayerNorm,
// what the head reads) of each image listed in a file, for the analysis in align.py and probe.py.
// Usage: dump_features MODEL LIST OUT.f32 VIEWS; also writes OUT.f32.head (head weight, bias).
#include <cstdio>
#include <fstream>
#include <iostream>
#include "engine/eval/inference.h"
#include "engine/eval/tta.h"
#include "engine/data/image.h"
using namespace vit;
int main(int argc, char** argv) {
  Predictor pred(argv[1]);
  std::ifstream in(argv[2]);
  int views = std::atoi(argv[4]);
  std::FILE* out = std::fopen(argv[3], "wb");
  ViT& m = pred.model();
  const int S = m.config().image_size, D = m.config().dim;
  std::vector<float> x(pred.input_floats()), v(pred.input_floats());
  ForwardOptions opt; opt.inference = true;
  std::string path; int n = 0;
  while (std::getline(in, path)) {
    pred.prepare(load_image(path), x.data());
    for (int k = 0; k < views; ++k) {
      dihedral_view(x.data(), v.data(), 1, 3, S, k);
      m.forward(v.data(), 1, opt);
      std::fwrite(m.features(), 4, D, out);
    }
    ++n;
  }
  std::fclose(out);
  const float* W = m.param_data() + m.param("heads.head.weight").offset;
  const float* b = m.param_data() + m.param("heads.head.bias").offset;
  std::FILE* h = std::fopen((std::string(argv[3]) + ".head").c_str(), "wb");
  std::fwrite(W, 4, size_t(m.config().num_classes) * D, h); std::fwrite(b, 4, m.config().num_classes, h); std::fclose(h);
  std::fprintf(stderr, "%d images, D=%d C=%d\n", n, D, m.config().num_classes);
}
