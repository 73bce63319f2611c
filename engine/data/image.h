// Image decoding (stb_image: JPEG, PNG, BMP; libtiff: TIFF) and the preprocessing every path shares:
// pad to square, antialiased resize to the model size, normalise to CHW floats.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace vit {

struct ImageError : std::runtime_error {
  explicit ImageError(const std::string& what) : std::runtime_error(what) {}
};

// 8-bit RGB, row-major, interleaved (HWC).
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // width * height * 3
};

// Width and height from the header alone (JPEG, PNG, BMP, TIFF), without decoding: lets a server refuse
// a huge image before allocating it. False when the header is not one of the four.
bool image_dimensions(const uint8_t* bytes, size_t n, int* width, int* height);
// Throws ImageError naming `what` (a path or an upload's name) and the reason.
Image decode_image(const uint8_t* bytes, size_t n, const std::string& what);
Image load_image(const std::string& path);
// True when the path ends in an extension load_image reads: .jpg, .jpeg, .png, .bmp, .tif or .tiff, any case.
bool has_image_extension(const std::string& path);
// Those extensions for a message: ".jpg, .jpeg, .png, .bmp, .tif or .tiff (any case)".
std::string image_extensions_text();

// Pad to a square canvas (centred), then antialiased resize to size x size.
Image preprocess(const Image& img, int size);

// ---- building blocks of preprocess (additive; used by augment and prepare) ----
// Mean colour of the image's outermost 1-pixel ring: the smear background in practice.
void border_color(const Image& img, uint8_t out[3]);
void border_color(const uint8_t* rgb, int w, int h, uint8_t out[3]);  // the same on raw HWC pixels
// Centre img on a square canvas of side max(w, h) filled with `fill` (floor offset).
Image pad_to_square(const Image& img, const uint8_t fill[3]);
// Antialiased resize with a triangle filter whose support widens with the
// downscale factor (Pillow's BILINEAR / torchvision antialias=True semantics).
Image resize_aa(const Image& img, int out_w, int out_h);
// PNG / JPEG bytes (stb_image_write); throw std::runtime_error if encoding fails.
std::vector<uint8_t> encode_png(const Image& img);
std::vector<uint8_t> encode_jpeg(const Image& img, int quality = 85);
// Lossless PNG, written atomically (engine/util/file.h). Throws ImageError.
void write_png(const std::string& path, const Image& img);

// HWC uint8 -> CHW float, (x/255 - mean[c]) / std[c]. out has 3*size*size floats.
void to_chw_normalized(const Image& img, const float mean[3], const float std[3], float* out);

}  // namespace vit
