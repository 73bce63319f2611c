// Image decoding and the shared preprocessing (see image.h).
//
// Pad fill: the mean colour of the image border, i.e. the smear background. A black
// border never occurs in these smears and would be one more cue that separates the
// 360x363 PBC originals from the square LMU ones; docs/data.md says more.
// Resize: separable triangle filter whose support is scaled by the downscale
// factor (area-like antialiasing), as Pillow's BILINEAR; tests compare it to PIL.
#include "engine/data/image.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <climits>
#include <cstdint>
#include <iterator>

#define STB_IMAGE_STATIC  // private copies: another file may embed stb too
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#include <stb/stb_image.h>
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include "engine/data/tiff.h"
#include "engine/util/file.h"

namespace vit {
namespace {

// Images larger than this are refused before decoding allocates (a corrupt header
// can claim gigapixels).
constexpr int kMaxSide = 16384;

bool is_jpeg(const uint8_t* b, size_t n) { return n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }
bool is_png(const uint8_t* b, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  return n >= 8 && std::equal(sig, sig + 8, b);
}
bool is_bmp(const uint8_t* b, size_t n) { return n >= 2 && b[0] == 'B' && b[1] == 'M'; }

// stb_image decodes a cut-off JPEG "successfully" (the missing part comes out grey),
// so a JPEG must carry its end-of-image marker. Some encoders pad a few bytes after it.
bool jpeg_has_eoi(const uint8_t* b, size_t n) {
  size_t lo = n > 64 ? n - 64 : 0;
  for (size_t i = n - 1; i > lo; --i)
    if (b[i - 1] == 0xFF && b[i] == 0xD9) return true;
  return false;
}

}  // namespace

bool image_dimensions(const uint8_t* bytes, size_t n, int* width, int* height) {
  if (tiff::is_tiff(bytes, n)) return tiff::dimensions(bytes, n, width, height);
  // PNG and BMP sizes are read from their headers here: stb_image's header check refuses an image
  // whose pixels would pass 1 GiB, so a huge but well-formed PNG would look like "not an image"
  // when the caller wants to say "too large".
  auto be32 = [&](size_t i) {
    return uint32_t(bytes[i]) << 24 | uint32_t(bytes[i + 1]) << 16 | bytes[i + 2] << 8 | bytes[i + 3];
  };
  auto le32 = [&](size_t i) {
    return int32_t(uint32_t(bytes[i]) | uint32_t(bytes[i + 1]) << 8 | uint32_t(bytes[i + 2]) << 16 |
                   uint32_t(bytes[i + 3]) << 24);
  };
  if (is_png(bytes, n) && n >= 24 && std::memcmp(bytes + 12, "IHDR", 4) == 0) {
    const uint32_t w = be32(16), h = be32(20);
    if (w == 0 || h == 0 || w > INT32_MAX || h > INT32_MAX) return false;
    *width = int(w), *height = int(h);
    return true;
  }
  if (is_bmp(bytes, n) && n >= 26) {
    const int32_t w = le32(18), h = le32(22);  // a negative height means rows top to bottom
    if (w <= 0 || h == 0 || h == INT32_MIN) return false;
    *width = w, *height = h < 0 ? -h : h;
    return true;
  }
  int comp = 0;
  const int len = int(std::min<size_t>(n, size_t(INT32_MAX)));
  return n > 0 && stbi_info_from_memory(bytes, len, width, height, &comp) == 1;
}

Image decode_image(const uint8_t* bytes, size_t n, const std::string& what) {
  if (n == 0) throw ImageError(what + ": empty file");
  if (tiff::is_tiff(bytes, n)) return tiff::decode(bytes, n, what, kMaxSide);
  if (!is_jpeg(bytes, n) && !is_png(bytes, n) && !is_bmp(bytes, n))
    throw ImageError(what + ": not an image (no JPEG, PNG, BMP or TIFF signature)");
  if (is_jpeg(bytes, n) && !jpeg_has_eoi(bytes, n))
    throw ImageError(what + ": truncated JPEG (no end-of-image marker)");
  int w = 0, h = 0, c = 0;
  if (!stbi_info_from_memory(bytes, (int)n, &w, &h, &c))
    throw ImageError(what + ": unreadable image header (" + stbi_failure_reason() + ")");
  if (w <= 0 || h <= 0 || w > kMaxSide || h > kMaxSide)
    throw ImageError(what + ": implausible size " + std::to_string(w) + "x" + std::to_string(h));
  uint8_t* px = stbi_load_from_memory(bytes, (int)n, &w, &h, &c, 3);
  if (!px) throw ImageError(what + ": cannot decode (" + std::string(stbi_failure_reason()) + ")");
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(px, px + (size_t)w * h * 3);
  stbi_image_free(px);
  return img;
}

namespace {
// TIFF's are listed in a build without libtiff too: such a file is then refused saying how to read it,
// where leaving it out would skip a microscope's whole folder without a word.
const char* const kImageExtensions[] = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"};
}

bool has_image_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (auto& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return std::find(std::begin(kImageExtensions), std::end(kImageExtensions), ext) != std::end(kImageExtensions);
}

std::string image_extensions_text() {
  std::string s;
  const size_t n = std::size(kImageExtensions);
  for (size_t i = 0; i < n; ++i) s += std::string(i == 0 ? "" : i + 1 == n ? " or " : ", ") + kImageExtensions[i];
  return s + " (any case)";
}

Image load_image(const std::string& path) {
  std::error_code ec;  // a folder opens as a stream, then fails to read with a message naming no file
  if (std::filesystem::is_directory(path, ec)) throw ImageError(path + ": a folder, not an image file");
  std::ifstream f(path, std::ios::binary);
  if (!f) {  // say why, as files_under does for a folder's links
    const int err = errno;
    if (std::filesystem::is_symlink(path, ec) && !std::filesystem::exists(path, ec))
      throw ImageError(path + ": a link to '" + std::filesystem::read_symlink(path, ec).string() +
                       "', which does not exist");
    throw ImageError(path + ": cannot open file (" + std::strerror(err) + ")");
  }
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw ImageError(path + ": read error");
  return decode_image(buf.data(), buf.size(), path);
}

void border_color(const Image& img, uint8_t out[3]) { border_color(img.rgb.data(), img.width, img.height, out); }

void border_color(const uint8_t* rgb, int w, int h, uint8_t out[3]) {
  double s[3] = {0, 0, 0};
  size_t cnt = 0;
  auto add = [&](int x, int y) {
    const uint8_t* p = &rgb[((size_t)y * w + x) * 3];
    for (int c = 0; c < 3; ++c) s[c] += p[c];
    ++cnt;
  };
  for (int x = 0; x < w; ++x) {
    add(x, 0);
    if (h > 1) add(x, h - 1);
  }
  for (int y = 1; y < h - 1; ++y) {
    add(0, y);
    if (w > 1) add(w - 1, y);
  }
  for (int c = 0; c < 3; ++c) out[c] = cnt ? (uint8_t)std::lround(s[c] / cnt) : 0;
}

Image pad_to_square(const Image& img, const uint8_t fill[3]) {
  const int s = std::max(img.width, img.height);
  if (img.width == s && img.height == s) return img;
  Image out;
  out.width = out.height = s;
  out.rgb.resize((size_t)s * s * 3);
  for (size_t i = 0; i < (size_t)s * s; ++i)
    for (int c = 0; c < 3; ++c) out.rgb[i * 3 + c] = fill[c];
  const int ox = (s - img.width) / 2, oy = (s - img.height) / 2;
  for (int y = 0; y < img.height; ++y)
    std::copy_n(&img.rgb[(size_t)y * img.width * 3], (size_t)img.width * 3, &out.rgb[((size_t)(y + oy) * s + ox) * 3]);
  return out;
}

namespace {

// Filter taps for one axis: for output i, weights over input [first[i], first[i]+count[i]).
struct Taps {
  std::vector<int> first, count;
  std::vector<float> w;  // count_max per output
  int kmax = 0;
};

Taps make_taps(int in, int out) {
  Taps t;
  const double scale = (double)in / out;
  const double fscale = std::max(scale, 1.0);  // widen the triangle when shrinking
  const double support = 1.0 * fscale;         // triangle filter has support 1
  t.kmax = (int)std::ceil(support) * 2 + 1;
  t.first.resize(out);
  t.count.resize(out);
  t.w.assign((size_t)out * t.kmax, 0.f);
  for (int i = 0; i < out; ++i) {
    const double center = (i + 0.5) * scale;
    int lo = std::max((int)(center - support + 0.5), 0);
    int hi = std::min((int)(center + support + 0.5), in);
    double sum = 0;
    std::vector<double> ww;
    for (int j = lo; j < hi; ++j) {
      double x = (j - center + 0.5) / fscale;
      double v = std::max(0.0, 1.0 - std::fabs(x));
      ww.push_back(v);
      sum += v;
    }
    t.first[i] = lo;
    t.count[i] = hi - lo;
    for (int k = 0; k < hi - lo; ++k) t.w[(size_t)i * t.kmax + k] = (float)(sum > 0 ? ww[k] / sum : 0.0);
  }
  return t;
}

inline uint8_t clip8(float v) { return (uint8_t)std::min(255.f, std::max(0.f, std::floor(v + 0.5f))); }

}  // namespace

Image resize_aa(const Image& img, int out_w, int out_h) {
  if (out_w <= 0 || out_h <= 0) throw ImageError("resize_aa: bad output size");
  if (img.width == out_w && img.height == out_h) return img;
  const Taps tx = make_taps(img.width, out_w), ty = make_taps(img.height, out_h);
  // Horizontal pass into an 8-bit intermediate (as Pillow does), then vertical.
  std::vector<uint8_t> mid((size_t)out_w * img.height * 3);
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* row = &img.rgb[(size_t)y * img.width * 3];
    for (int x = 0; x < out_w; ++x) {
      float a[3] = {0, 0, 0};
      const float* w = &tx.w[(size_t)x * tx.kmax];
      const uint8_t* p = row + (size_t)tx.first[x] * 3;
      for (int k = 0; k < tx.count[x]; ++k)
        for (int c = 0; c < 3; ++c) a[c] += w[k] * p[k * 3 + c];
      for (int c = 0; c < 3; ++c) mid[((size_t)y * out_w + x) * 3 + c] = clip8(a[c]);
    }
  }
  Image out;
  out.width = out_w;
  out.height = out_h;
  out.rgb.resize((size_t)out_w * out_h * 3);
  const size_t stride = (size_t)out_w * 3;
  std::vector<float> acc(stride);
  for (int y = 0; y < out_h; ++y) {
    std::fill(acc.begin(), acc.end(), 0.f);
    const float* w = &ty.w[(size_t)y * ty.kmax];
    for (int k = 0; k < ty.count[y]; ++k) {
      const uint8_t* r = &mid[(size_t)(ty.first[y] + k) * stride];
      for (size_t i = 0; i < stride; ++i) acc[i] += w[k] * r[i];
    }
    for (size_t i = 0; i < stride; ++i) out.rgb[(size_t)y * stride + i] = clip8(acc[i]);
  }
  return out;
}

Image preprocess(const Image& img, int size) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != (size_t)img.width * img.height * 3)
    throw ImageError("preprocess: empty or inconsistent image");
  if (size <= 0) throw ImageError("preprocess: bad size " + std::to_string(size));
  if (img.width == img.height) return resize_aa(img, size, size);
  uint8_t fill[3];
  border_color(img, fill);
  return resize_aa(pad_to_square(img, fill), size, size);
}

void to_chw_normalized(const Image& img, const float mean[3], const float std[3], float* out) {
  const size_t hw = (size_t)img.width * img.height;
  for (int c = 0; c < 3; ++c) {
    const float scale = 1.f / (255.f * std[c]), shift = mean[c] / std[c];
    float* o = out + c * hw;
    for (size_t i = 0; i < hw; ++i) o[i] = img.rgb[i * 3 + c] * scale - shift;
  }
}

static void append_bytes(void* ctx, void* data, int n) {
  auto* v = static_cast<std::vector<uint8_t>*>(ctx);
  v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + n);
}

std::vector<uint8_t> encode_png(const Image& img) {
  std::vector<uint8_t> out;
  if (!stbi_write_png_to_func(append_bytes, &out, img.width, img.height, 3, img.rgb.data(), img.width * 3))
    throw std::runtime_error("PNG encoding failed");
  return out;
}

std::vector<uint8_t> encode_jpeg(const Image& img, int quality) {
  std::vector<uint8_t> out;
  if (!stbi_write_jpg_to_func(append_bytes, &out, img.width, img.height, 3, img.rgb.data(), quality))
    throw std::runtime_error("JPEG encoding failed");
  return out;
}

void write_png(const std::string& path, const Image& img) {
  try {
    write_file_atomic(path, encode_png(img));
  } catch (const std::runtime_error& e) {
    throw ImageError(e.what());
  }
}

}  // namespace vit
