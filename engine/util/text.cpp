#include "engine/util/text.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace vit {
namespace {

struct Range {
  char32_t lo, hi;
};

// East Asian Width W and F (Unicode's EastAsianWidth.txt), by block; the rarer single wide
// symbols outside these blocks count 1.
constexpr Range kWide[] = {
    {0x1100, 0x115F}, {0x2E80, 0x303E},   {0x3041, 0x33FF},   {0x3400, 0x4DBF},   {0x4E00, 0x9FFF},  {0xA000, 0xA4CF},
    {0xA960, 0xA97F}, {0xAC00, 0xD7A3},   {0xF900, 0xFAFF},   {0xFE10, 0xFE19},   {0xFE30, 0xFE6F},  {0xFF00, 0xFF60},
    {0xFFE0, 0xFFE6}, {0x1F300, 0x1F64F}, {0x1F900, 0x1F9FF}, {0x20000, 0x2FFFD}, {0x30000, 0x3FFFD}};
// Drawn on the character before them: combining diacritics, zero-width spaces and joiners,
// variation selectors.
constexpr Range kZero[] = {{0x0300, 0x036F}, {0x200B, 0x200F}, {0xFE00, 0xFE0F}};

bool in(const Range* begin, const Range* end, char32_t c) {
  return std::any_of(begin, end, [c](const Range& r) { return c >= r.lo && c <= r.hi; });
}

// The code point starting at s[i] and its length in bytes; 0 bytes for an invalid sequence.
char32_t decode(const std::string& s, size_t i, size_t& len) {
  const auto b = uint8_t(s[i]);
  len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) return len = 0, 0;
  char32_t c = len == 1 ? b : b & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    const auto t = uint8_t(s[i + k]);
    if ((t >> 6) != 0x2) return len = 0, 0;
    c = (c << 6) | (t & 0x3F);
  }
  return c;
}

}  // namespace

int display_width(const std::string& utf8) {
  int w = 0;
  for (size_t i = 0; i < utf8.size();) {
    size_t len;
    const char32_t c = decode(utf8, i, len);
    if (len == 0) {
      ++w, ++i;  // an invalid byte
      continue;
    }
    i += len;
    w += in(std::begin(kZero), std::end(kZero), c) ? 0 : in(std::begin(kWide), std::end(kWide), c) ? 2 : 1;
  }
  return w;
}

std::string pad_to_width(const std::string& s, int width) {
  return s + std::string(size_t(std::max(0, width - display_width(s))), ' ');
}

}  // namespace vit
