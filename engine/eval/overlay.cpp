// Attention overlays and encoders; see overlay.h.
#include "engine/eval/overlay.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace vit {

void heat_color(float t, uint8_t rgb[3]) {
  t = std::min(1.0f, std::max(0.0f, std::isfinite(t) ? t : 0.0f));
  // "hot": red rises over [0, 3/8], green over [3/8, 3/4], blue over [3/4, 1].
  float r = std::min(1.0f, t / 0.375f), g = std::min(1.0f, std::max(0.0f, (t - 0.375f) / 0.375f)),
        b = std::max(0.0f, (t - 0.75f) / 0.25f);
  rgb[0] = uint8_t(std::lround(255 * r));
  rgb[1] = uint8_t(std::lround(255 * g));
  rgb[2] = uint8_t(std::lround(255 * b));
}

Image heat_overlay(const Image& base, const std::vector<float>& grid, int g, float alpha) {
  if (base.width != base.height || base.width <= 0) throw std::invalid_argument("heat_overlay: base must be square");
  if (g <= 0 || grid.size() != size_t(g) * g) throw std::invalid_argument("heat_overlay: grid is not g x g");
  float lo = *std::min_element(grid.begin(), grid.end()), hi = *std::max_element(grid.begin(), grid.end());
  float span = hi - lo > 1e-12f ? hi - lo : 1.0f;
  int S = base.width;
  Image out = base;
  for (int y = 0; y < S; ++y) {
    // pixel centre in grid coordinates; cell centres sit at integer + 0.5
    float gy = std::min(float(g - 1), std::max(0.0f, (y + 0.5f) * g / S - 0.5f));
    int y0 = int(gy), y1 = std::min(g - 1, y0 + 1);
    float fy = gy - y0;
    for (int x = 0; x < S; ++x) {
      float gx = std::min(float(g - 1), std::max(0.0f, (x + 0.5f) * g / S - 0.5f));
      int x0 = int(gx), x1 = std::min(g - 1, x0 + 1);
      float fx = gx - x0;
      float v = (1 - fy) * ((1 - fx) * grid[y0 * g + x0] + fx * grid[y0 * g + x1]) +
                fy * ((1 - fx) * grid[y1 * g + x0] + fx * grid[y1 * g + x1]);
      uint8_t h[3];
      heat_color((v - lo) / span, h);
      uint8_t* p = &out.rgb[(size_t(y) * S + x) * 3];
      for (int c = 0; c < 3; ++c) p[c] = uint8_t(std::lround((1 - alpha) * p[c] + alpha * h[c]));
    }
  }
  return out;
}

Image resize_rgb(const Image& img, int w, int h) {
  if (img.width <= 0 || img.height <= 0 || w <= 0 || h <= 0) throw std::invalid_argument("resize_rgb: empty image");
  Image out;
  out.width = w;
  out.height = h;
  out.rgb.resize(size_t(w) * h * 3);
  // box filter over the source rectangle each output pixel covers
  for (int y = 0; y < h; ++y) {
    int sy0 = y * img.height / h, sy1 = std::max(sy0 + 1, (y + 1) * img.height / h);
    for (int x = 0; x < w; ++x) {
      int sx0 = x * img.width / w, sx1 = std::max(sx0 + 1, (x + 1) * img.width / w);
      unsigned acc[3] = {0, 0, 0}, n = 0;
      for (int sy = sy0; sy < sy1; ++sy)
        for (int sx = sx0; sx < sx1; ++sx, ++n)
          for (int c = 0; c < 3; ++c) acc[c] += img.rgb[(size_t(sy) * img.width + sx) * 3 + c];
      for (int c = 0; c < 3; ++c) out.rgb[(size_t(y) * w + x) * 3 + c] = uint8_t((acc[c] + n / 2) / n);
    }
  }
  return out;
}

Image tile_grid(const std::vector<Image>& tiles, int cols, int pad) {
  if (tiles.empty() || cols <= 0) throw std::invalid_argument("tile_grid: no tiles");
  int tw = tiles[0].width, th = tiles[0].height;
  for (auto& t : tiles)
    if (t.width != tw || t.height != th) throw std::invalid_argument("tile_grid: tiles differ in size");
  int rows = (int(tiles.size()) + cols - 1) / cols;
  Image out;
  out.width = cols * tw + (cols + 1) * pad;
  out.height = rows * th + (rows + 1) * pad;
  out.rgb.assign(size_t(out.width) * out.height * 3, 255);
  for (size_t i = 0; i < tiles.size(); ++i) {
    int ox = pad + int(i % cols) * (tw + pad), oy = pad + int(i / cols) * (th + pad);
    for (int y = 0; y < th; ++y)
      std::copy_n(&tiles[i].rgb[size_t(y) * tw * 3], size_t(tw) * 3, &out.rgb[(size_t(oy + y) * out.width + ox) * 3]);
  }
  return out;
}

std::string base64(const std::vector<uint8_t>& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(), int(bytes.size()));
  out.resize(size_t(n));
  return out;
}

}  // namespace vit
