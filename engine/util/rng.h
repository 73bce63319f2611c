// splitmix64 (Steele, Lea & Flood 2014): the one generator behind every random draw in vitengine
// (augmentation, dropout and drop-path masks, shuffles, test data). A pure function of (seed, i),
// so the CPU and the GPU draw the same numbers and a resumed run draws what the uninterrupted
// one would. Compiles for the host and the device.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>
#include <initializer_list>

#ifdef __CUDACC__
#define VIT_HD __host__ __device__
#else
#define VIT_HD
#endif

namespace vit {

constexpr uint64_t kGolden64 = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio, splitmix64's step

// splitmix64's output function (a bijective mix of 64 bits).
VIT_HD inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// Output i (0-based) of the stream seeded with `seed`, without stepping through 0..i-1.
VIT_HD inline uint64_t splitmix64_at(uint64_t seed, uint64_t i) { return splitmix64_mix(seed + kGolden64 * (i + 1)); }

// The stream as a generator: next() is splitmix64_at(seed, 0), then (seed, 1), ...
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() { return splitmix64_mix(s_ += kGolden64); }
  double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1), 53 bits
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(uniform()); }
  int below(int n) { return int(uniform() * n); }  // [0, n)
  // Where the stream is: Rng(state()) goes on with the same draws (a resumed run).
  uint64_t state() const { return s_; }

 private:
  uint64_t s_;
};

// Fisher-Yates shuffle drawing from r: the one shuffle of the loader, prepare's split, adapt and
// stain-ref (the same draws in the same order, so a seed gives the same permutation everywhere).
template <class T>
void shuffle(std::vector<T>& v, Rng& r) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(r.uniform() * double(i))]);
}

// Mixes several integers into one well-spread seed (seed, epoch, position, ...).
inline uint64_t mix_seed(uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0) {
  uint64_t h = Rng(a).next();
  for (uint64_t v : {b, c, d}) h = Rng(h ^ (v * 0xD6E8FEB86659FD93ull)).next();
  return h;
}

}  // namespace vit
