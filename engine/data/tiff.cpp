#include "engine/data/tiff.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <vector>

#ifdef VITENGINE_HAS_TIFF
#include <tiffio.h>
#endif

namespace vit::tiff {

bool is_tiff(const uint8_t* b, size_t n) {
  if (n < 4) return false;
  const bool le = b[0] == 'I' && b[1] == 'I' && (b[2] == 42 || b[2] == 43) && b[3] == 0;
  const bool be = b[0] == 'M' && b[1] == 'M' && b[2] == 0 && (b[3] == 42 || b[3] == 43);
  return le || be;
}

#ifdef VITENGINE_HAS_TIFF
namespace {

// libtiff reads through these callbacks from the bytes in memory (a file, or an upload).
struct Source {
  const uint8_t* p;
  toff_t n, pos;
};
tmsize_t read_cb(thandle_t h, void* buf, tmsize_t size) {
  auto* s = static_cast<Source*>(h);
  const toff_t k = std::min<toff_t>(toff_t(size), s->pos < s->n ? s->n - s->pos : 0);
  std::memcpy(buf, s->p + s->pos, size_t(k));
  s->pos += k;
  return tmsize_t(k);
}
tmsize_t write_cb(thandle_t, void*, tmsize_t) { return 0; }
toff_t seek_cb(thandle_t h, toff_t off, int whence) {
  auto* s = static_cast<Source*>(h);
  const toff_t base = whence == SEEK_CUR ? s->pos : whence == SEEK_END ? s->n : 0;
  s->pos = base + off;
  return s->pos;
}
int close_cb(thandle_t) { return 0; }
toff_t size_cb(thandle_t h) { return static_cast<Source*>(h)->n; }
int map_cb(thandle_t, void**, toff_t*) { return 0; }
void unmap_cb(thandle_t, void*, toff_t) {}

// libtiff reports through process-wide handlers that print to stderr; the reason a file is refused is
// said by the ImageError instead, so they are silenced once, before the first open.
void quiet_libtiff() {
  static std::once_flag once;
  std::call_once(once, [] {
    TIFFSetErrorHandler(nullptr);
    TIFFSetWarningHandler(nullptr);
  });
}

struct Open {
  Source src;
  TIFF* tif = nullptr;
  Open(const uint8_t* b, size_t n) : src{b, toff_t(n), 0} {
    quiet_libtiff();
    tif = TIFFClientOpen("image", "rm", &src, read_cb, write_cb, seek_cb, close_cb, size_cb, map_cb, unmap_cb);
  }
  ~Open() {
    if (tif) TIFFClose(tif);
  }
  bool size(int* w, int* h) const {
    uint32_t width = 0, height = 0;
    if (!tif || !TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &width) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &height))
      return false;
    if (width == 0 || height == 0 || width > INT32_MAX || height > INT32_MAX) return false;
    *w = int(width), *h = int(height);
    return true;
  }
};

}  // namespace

bool supported() { return true; }

bool dimensions(const uint8_t* b, size_t n, int* width, int* height) {
  if (!is_tiff(b, n)) return false;
  const Open t(b, n);
  return t.size(width, height);
}

Image decode(const uint8_t* b, size_t n, const std::string& what, int max_side) {
  const Open t(b, n);
  int w = 0, h = 0;
  if (!t.size(&w, &h)) throw ImageError(what + ": unreadable TIFF header (truncated or corrupt)");
  if (w > max_side || h > max_side)
    throw ImageError(what + ": implausible size " + std::to_string(w) + "x" + std::to_string(h));
  char why[1024] = "";
  if (!TIFFRGBAImageOK(t.tif, why)) throw ImageError(what + ": a TIFF layout this reader does not take (" + why + ")");
  std::vector<uint32_t> raster(size_t(w) * size_t(h));
  if (!TIFFReadRGBAImageOriented(t.tif, uint32_t(w), uint32_t(h), raster.data(), ORIENTATION_TOPLEFT, 0))
    throw ImageError(what + ": cannot decode the TIFF's pixels (truncated or corrupt)");
  Image img;
  img.width = w, img.height = h;
  img.rgb.resize(raster.size() * 3);
  for (size_t i = 0; i < raster.size(); ++i) {
    img.rgb[3 * i] = uint8_t(TIFFGetR(raster[i]));
    img.rgb[3 * i + 1] = uint8_t(TIFFGetG(raster[i]));
    img.rgb[3 * i + 2] = uint8_t(TIFFGetB(raster[i]));
  }
  return img;
}

#else

bool supported() { return false; }
bool dimensions(const uint8_t*, size_t, int*, int*) { return false; }
Image decode(const uint8_t*, size_t, const std::string& what, int) {
  throw ImageError(what + ": a TIFF image, and this build of vitengine reads none: install libtiff-dev "
                          "(scripts/deps.sh) and rebuild");
}

#endif

}  // namespace vit::tiff
