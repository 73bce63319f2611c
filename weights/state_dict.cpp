#include "weights/state_dict.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace vit {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) s += ",";
  return s + ")";
}

int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  const int64_t kMax = int64_t(1) << 40;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::runtime_error(what + ": negative dimension in shape " + shape_str(shape));
    if (d != 0 && n > kMax / d)
      throw std::runtime_error(what + ": shape " + shape_str(shape) + " is implausibly large");
    n *= d;
  }
  return n;
}

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal half: value = man * 2^-24, exact in float
      float v = std::ldexp(float(man), -24);
      return sign ? -v : v;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);  // keep NaN a NaN
  bits += 0x7fffu + ((bits >> 16) & 1);                                          // round to nearest, ties to even
  return uint16_t(bits >> 16);
}

uint16_t float_to_half(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000);
  uint32_t absb = bits & 0x7fffffffu;
  if (absb > 0x7f800000u) return sign | 0x7e00;   // NaN
  if (absb >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: infinity
  if (absb < 0x38800000u) {                       // below the smallest normal half
    // value = m * 2^-24 with m rounded to nearest even; std::nearbyint uses ties-to-even.
    float a;
    std::memcpy(&a, &absb, 4);
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));
  }
  uint32_t r = absb + 0xfffu + ((absb >> 13) & 1);
  return sign | uint16_t(((r >> 13) - (112u << 10)) & 0xffff);
}

}  // namespace vit
