// The collectives of engine/dist under mpirun (ctest dist_collectives, tests/dist.cmake): run as
// N ranks, every rank checks the result against a float64 sum of what every rank contributed,
// which it can compute itself (rank r's values are a function of r). Prints one line and exits
// non-zero on the first difference.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/dist/dist.h"

namespace {
float value(int rank, size_t i) { return float(std::sin(0.37 * double(i) + 1.3 * rank)) * float(1 + rank); }

int fail(const vit::dist::Comm& c, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", c.who().c_str(), what.c_str());
  return 1;
}
}  // namespace

int main() {
  vit::dist::Comm comm;
  const int N = comm.size();
  if (N < 2) return fail(comm, "run me under mpirun -np 2 or more");
  // 2,500 floats in buckets of 1,000: two full buckets and a partial one
  const size_t n = 2500;
  std::vector<float> g(n);
  for (size_t i = 0; i < n; ++i) g[i] = value(comm.rank(), i);
  comm.allreduce_sum(g.data(), n, "test floats", 1000);
  for (size_t i = 0; i < n; ++i) {
    double ref = 0;
    for (int r = 0; r < N; ++r) ref += double(value(r, i));
    // N float additions of terms up to N in size: a few float ulps of the largest
    if (std::abs(double(g[i]) - ref) > 1e-6 * N * N + 1e-6 * std::abs(ref))
      return fail(comm, "float sum " + std::to_string(i) + ": " + std::to_string(g[i]) + " vs " + std::to_string(ref));
  }
  double d[2] = {double(comm.rank()), 1.0};
  comm.allreduce_sum(d, 2, "test doubles");
  if (d[0] != double(N * (N - 1) / 2) || d[1] != double(N)) return fail(comm, "double sum");
  // strings of different lengths (rank 0's is empty), in rank order
  const auto all = comm.allgather(std::string(size_t(comm.rank()) * 3, char('a' + comm.rank())), "test strings");
  for (int r = 0; r < N; ++r)
    if (all.at(size_t(r)) != std::string(size_t(r) * 3, char('a' + r)))
      return fail(comm, "allgather rank " + std::to_string(r));
  std::vector<int> b(100, comm.rank() == 0 ? 7 : -1);
  comm.broadcast(b.data(), b.size() * sizeof(int), 0, "test broadcast");
  for (int v : b)
    if (v != 7) return fail(comm, "broadcast");
  // a disagreement is refused on every rank, with the differing values named
  try {
    vit::dist::check_same(comm, "the test value", comm.rank() == 0 ? "x" : "y");
    return fail(comm, "check_same accepted different values");
  } catch (const vit::dist::DistError& e) {
    if (std::string(e.what()).find("rank 0 has 'x', rank 1 has 'y'") == std::string::npos)
      return fail(comm, std::string("check_same said: ") + e.what());
  }
  vit::dist::check_same(comm, "the same value", "z");
  comm.barrier("test end");
  if (comm.rank() == 0) std::printf("dist_collectives: %d ranks agree\n", N);
  return 0;
}
