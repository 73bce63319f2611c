// TIFF decoding through libtiff (microscopes and slide scanners write TIFF more often than any other
// format). Internal to engine/data: image.cpp calls it for bytes with a TIFF signature. Built
// without libtiff (VITENGINE_HAS_TIFF undefined), a TIFF is recognised and refused by name, saying
// how to add the support.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/data/image.h"

namespace vit::tiff {

// "II*\0" (little-endian) or "MM\0*" (big-endian); BigTIFF's 43 as well.
bool is_tiff(const uint8_t* b, size_t n);
// Width and height of the first page from its header; false when they cannot be read.
bool dimensions(const uint8_t* b, size_t n, int* width, int* height);
// The first page as 8-bit RGB: any layout libtiff's RGBA interface reads (RGB, grey, palette, 16 bits,
// LZW / deflate / JPEG / packbits); alpha is dropped, as stb_image drops a PNG's. Throws ImageError
// naming `what`; a side above max_side is refused before the pixels are allocated.
Image decode(const uint8_t* b, size_t n, const std::string& what, int max_side);
// Whether this build reads TIFF.
bool supported();

}  // namespace vit::tiff
