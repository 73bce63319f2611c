// Pictures of attention: a patch-grid map upsampled onto the cell image with a heat
// colormap, tiles put together into one grid, and the encoders the CLI and the
// server share (PNG / JPEG via stb_image_write, base64 via OpenSSL).
#pragma once
#include "engine/util/file.h"  // write_file_atomic, write_text_atomic
#include <cstdint>
#include <string>
#include <vector>

#include "engine/data/image.h"

namespace vit {

// Heat colormap (black-red-yellow-white, "hot"), t in [0, 1] -> RGB.
void heat_color(float t, uint8_t rgb[3]);

// Scale `grid` (g x g values, row-major) to [0, 1] by its min and max, upsample it
// bilinearly to the base image's size and blend: out = (1-alpha)*base + alpha*heat.
// The base must be square (the preprocessed model view).
Image heat_overlay(const Image& base, const std::vector<float>& grid, int g, float alpha = 0.55f);

// Nearest/area resize of an RGB image to w x h (for thumbnails and grid tiles).
Image resize_rgb(const Image& img, int w, int h);

// Tiles (all the same size) laid out `cols` per row with `pad` pixels of white between.
Image tile_grid(const std::vector<Image>& tiles, int cols, int pad = 4);

// encode_png, encode_jpeg: engine/data/image.h.
std::string base64(const std::vector<uint8_t>& bytes);

}  // namespace vit
