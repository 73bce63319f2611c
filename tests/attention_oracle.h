// Attention oracle shared by the GPU test (tests/gpu/test_attention_cuda.cu) and the CPU emulation test
// (tests/test_attention_emu.cpp): softmax(q k^T / sqrt(Dh)) v and its backward in naive loops, per (b, h),
// in fp64 (the oracle) or in fp32 rounding to bf16 where the bf16 kernel rounds (the "same precision"
// reference of the flash-attention tests), plus the comparison helpers.
#pragma once
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace attn_test {

inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("VIT_TEST_SEED");
    const uint64_t s =
        env ? std::strtoull(env, nullptr, 10) : (uint64_t)std::chrono::system_clock::now().time_since_epoch().count();
    std::printf("[ seed     ] attention tests: VIT_TEST_SEED=%llu\n", (unsigned long long)s);
    return s;
  }();
  return seed;
}

struct Shape {
  int B, N, H, Dh;
};
inline std::string shape_name(const Shape& s) {
  return "B" + std::to_string(s.B) + "_N" + std::to_string(s.N) + "_H" + std::to_string(s.H) + "_Dh" +
         std::to_string(s.Dh);
}

inline float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// Attention forward + backward in plain loops. Acc = double: the oracle. Acc = float with emulate_bf16:
// the "same precision" reference, which rounds where the bf16 kernel rounds: P before P V and before
// P^T dO, dS before dS K and dS^T Q, and every output (out, dq, dk, dv) to bf16.
struct RefResult {
  std::vector<double> out, lse, dqkv;
};
template <typename Acc>
inline RefResult reference(const std::vector<float>& qkv, const std::vector<float>& dout, const Shape& sh,
                           bool emulate_bf16) {
  const int B = sh.B, N = sh.N, H = sh.H, Dh = sh.Dh, D = H * Dh, ld = 3 * D;
  auto rnd = [&](Acc x) -> Acc { return emulate_bf16 ? Acc(round_bf16(float(x))) : x; };
  const Acc scale = Acc(1) / std::sqrt(Acc(Dh));
  RefResult r;
  r.out.assign((size_t)B * N * D, 0.0);
  r.lse.assign((size_t)B * H * N, 0.0);
  r.dqkv.assign((size_t)B * N * ld, 0.0);
  // one (b, h) head per task; heads write disjoint parts of r, so threads need no locking
  auto head = [&](int b, int h) {
    std::vector<Acc> P((size_t)N * N), dS((size_t)N * N), O((size_t)N * Dh), s(N);
    // (B, N, 3*D) -> this head's q, k, v rows
    auto q = [&](int i, int d) { return Acc(qkv[((size_t)b * N + i) * ld + h * Dh + d]); };
    auto k = [&](int j, int d) { return Acc(qkv[((size_t)b * N + j) * ld + D + h * Dh + d]); };
    auto v = [&](int j, int d) { return Acc(qkv[((size_t)b * N + j) * ld + 2 * D + h * Dh + d]); };
    auto dO = [&](int i, int d) { return Acc(dout[((size_t)b * N + i) * D + h * Dh + d]); };
    for (int i = 0; i < N; ++i) {
      Acc m = -INFINITY;
      for (int j = 0; j < N; ++j) {
        Acc acc = 0;
        for (int d = 0; d < Dh; ++d) acc += q(i, d) * k(j, d);
        s[j] = acc * scale;
        m = std::max(m, s[j]);
      }
      Acc l = 0;
      for (int j = 0; j < N; ++j) l += std::exp(s[j] - m);
      r.lse[((size_t)b * H + h) * N + i] = double(m + std::log(l));
      for (int j = 0; j < N; ++j) P[(size_t)i * N + j] = std::exp(s[j] - m) / l;
      for (int d = 0; d < Dh; ++d) {
        Acc acc = 0;
        for (int j = 0; j < N; ++j) acc += rnd(P[(size_t)i * N + j]) * v(j, d);
        O[(size_t)i * Dh + d] = rnd(acc);  // the bf16 kernel's delta uses the rounded output
        r.out[((size_t)b * N + i) * D + h * Dh + d] = double(rnd(acc));
      }
    }
    // backward: dP = dO V^T, delta = rowsum(dO o O), dS = P o (dP - delta)
    for (int i = 0; i < N; ++i) {
      Acc delta = 0;
      for (int d = 0; d < Dh; ++d) delta += dO(i, d) * O[(size_t)i * Dh + d];
      for (int j = 0; j < N; ++j) {
        Acc dp = 0;
        for (int d = 0; d < Dh; ++d) dp += dO(i, d) * v(j, d);
        dS[(size_t)i * N + j] = rnd(P[(size_t)i * N + j] * (dp - delta));
      }
    }
    for (int i = 0; i < N; ++i)  // dQ = dS K * scale
      for (int d = 0; d < Dh; ++d) {
        Acc acc = 0;
        for (int j = 0; j < N; ++j) acc += dS[(size_t)i * N + j] * k(j, d);
        r.dqkv[((size_t)b * N + i) * ld + h * Dh + d] = double(rnd(acc * scale));
      }
    for (int j = 0; j < N; ++j)  // dK = dS^T Q * scale, dV = P^T dO
      for (int d = 0; d < Dh; ++d) {
        Acc ak = 0, av = 0;
        for (int i = 0; i < N; ++i) {
          ak += dS[(size_t)i * N + j] * q(i, d);
          av += rnd(P[(size_t)i * N + j]) * dO(i, d);
        }
        r.dqkv[((size_t)b * N + j) * ld + D + h * Dh + d] = double(rnd(ak * scale));
        r.dqkv[((size_t)b * N + j) * ld + 2 * D + h * Dh + d] = double(rnd(av));
      }
  };
  const int n_heads = B * H;
  const int n_threads = std::max(1, std::min<int>(n_heads, (int)std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int w = 0; w < n_threads; ++w)
    pool.emplace_back([&, w] {
      for (int bh = w; bh < n_heads; bh += n_threads) head(bh / H, bh % H);
    });
  for (auto& th : pool) th.join();
  return r;
}

inline double rel_err(const std::vector<double>& x, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - ref[i]) * (x[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// Every element written (no NaN left from the poison), not all zero; on failure, llm.c-style detail.
inline void expect_written(const char* what, const std::vector<double>& x) {
  size_t nan = 0, first_nan = 0;
  bool any_nonzero = false;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      if (nan++ == 0) first_nan = i;
    } else if (x[i] != 0.0) {
      any_nonzero = true;
    }
  }
  EXPECT_EQ(nan, 0u) << what << ": " << nan << " of " << x.size() << " elements never written (NaN), first at "
                     << first_nan;
  EXPECT_TRUE(any_nonzero) << what << ": all zeros";
}
inline std::string detail(const std::vector<double>& x, const std::vector<double>& ref) {
  size_t imax = 0;
  double dmax = -1;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = std::abs(x[i] - ref[i]);
    if (!(d <= dmax)) {  // catches NaN too
      dmax = d;
      imax = i;
    }
  }
  char buf[512];
  int n = std::snprintf(buf, sizeof buf, "max |diff| = %.3g at %zu (got %.6g, ref %.6g); first elements:", dmax, imax,
                        x[imax], ref[imax]);
  for (size_t i = 0; i < std::min<size_t>(5, x.size()) && n < 400; ++i)
    n += std::snprintf(buf + n, sizeof buf - n, " [%zu] %.6g vs %.6g", i, x[i], ref[i]);
  return buf;
}

// Inputs ~ N(0, 1): scores q.k/sqrt(Dh) ~ N(0, 1), so the softmax is neither flat nor one-hot.
// round = true makes them exactly representable in bf16, so that every reference sees the kernel's inputs.
inline void make_inputs(const Shape& sh, bool round, std::vector<float>& qkv, std::vector<float>& dout) {
  std::mt19937_64 rng(test_seed() ^ (uint64_t(sh.B) << 48 ^ uint64_t(sh.N) << 32 ^ uint64_t(sh.H) << 16 ^ sh.Dh));
  std::normal_distribution<float> nd(0.f, 1.f);
  qkv.resize((size_t)sh.B * sh.N * 3 * sh.H * sh.Dh);
  dout.resize((size_t)sh.B * sh.N * sh.H * sh.Dh);
  for (auto& x : qkv) x = round ? round_bf16(nd(rng)) : nd(rng);
  for (auto& x : dout) x = round ? round_bf16(nd(rng)) : nd(rng);
}

struct Outputs {
  std::vector<double> out, lse, dqkv;
};

// fp32 kernels against the fp64 oracle.
inline void check_fp32(const char* tag, const Shape& sh, const Outputs& got, const RefResult& ref) {
  // fp32 SIMT kernels: fp32 sums of <= 256 terms and expf/logf of ~1 ulp give relative errors ~1e-6;
  // 1e-5 leaves that margin, while any indexing or masking mistake gives errors of order 1.
  const double tol = 1e-5;
  struct {
    const char* name;
    const std::vector<double>& x;
    const std::vector<double>& r;
  } cmp[] = {{"out", got.out, ref.out}, {"lse", got.lse, ref.lse}, {"dqkv", got.dqkv, ref.dqkv}};
  for (auto& c : cmp) {
    expect_written(c.name, c.x);
    const double e = rel_err(c.x, c.r);
    std::printf("[ %-8s ] %-22s %-5s rel err %.3g\n", tag, shape_name(sh).c_str(), c.name, e);
    EXPECT_LT(e, tol) << c.name << ": " << detail(c.x, c.r);
  }
}

// bf16 kernels against the fp64 oracle and the bf16-emulating reference.
inline void check_bf16(const char* tag, const Shape& sh, const Outputs& got, const RefResult& ref,
                       const RefResult& lowp) {
  // bf16 keeps 8 significant bits (unit roundoff 2^-9 = 2e-3). The kernel must be as exact as bf16
  // arithmetic allows: at most 2x the error of the reference that rounds in the same places
  // (flash-attention's test rule), plus a floor for outputs whose bf16-emulating error is ~0 (lse is
  // fp32 in both: 1e-5; out/dqkv: 1e-4). Independently, < 2e-2 outright: a few roundings of 2e-3 each
  // compound to ~5e-3 at most, while a wrong index or mask gives errors of order 1.
  struct {
    const char* name;
    const std::vector<double>& x;
    const std::vector<double>& r;
    const std::vector<double>& lp;
    double floor;
  } cmp[] = {{"out", got.out, ref.out, lowp.out, 1e-4},
             {"lse", got.lse, ref.lse, lowp.lse, 1e-5},
             {"dqkv", got.dqkv, ref.dqkv, lowp.dqkv, 1e-4}};
  for (auto& c : cmp) {
    expect_written(c.name, c.x);
    const double e = rel_err(c.x, c.r), e_lowp = rel_err(c.lp, c.r);
    std::printf("[ %-8s ] %-22s %-5s rel err %.3g (bf16-emulating reference: %.3g)\n", tag, shape_name(sh).c_str(),
                c.name, e, e_lowp);
    EXPECT_LE(e, 2 * e_lowp + c.floor) << c.name << ": " << detail(c.x, c.r);
    EXPECT_LT(e, 2e-2) << c.name << ": " << detail(c.x, c.r);
  }
}

}  // namespace attn_test
