// Weight-space ensemble (WiSE-FT): OUT = A * adapted + (1 - A) * original, every parameter, with the
// adapted model's metadata. Usage: wise ORIGINAL ADAPTED A OUT. An experiment (README.md).
#include <cstdio>
#include <string>
#include "weights/checkpoint.h"
int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: wise ORIGINAL.vit ADAPTED.vit A OUT.vit\n");
    return 2;
  }
  auto o = vit::load_model(argv[1]);
  auto f = vit::load_model(argv[2]);
  if (o.model->num_params() != f.model->num_params()) {
    std::fprintf(stderr, "wise: '%s' and '%s' are not the same architecture\n", argv[1], argv[2]);
    return 1;
  }
  const double a = std::stod(argv[3]);
  float* w = f.model->param_data();
  const float* w0 = o.model->param_data();
  for (size_t i = 0; i < f.model->num_params(); ++i) w[i] = float(a * w[i] + (1 - a) * w0[i]);
  f.meta.extra.erase("version");
  vit::save_model(argv[4], *f.model, f.meta);
}
