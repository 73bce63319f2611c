#include "engine/dist/dist.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#ifdef VITENGINE_HAS_MPI
#include <mpi.h>
#endif

namespace vit::dist {

namespace {
// The first of `names` that is set, as an int; -1 when none is.
int env_int(std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (const char* v = std::getenv(n); v && *v) return std::atoi(v);
  return -1;
}
}  // namespace

Place place_from_env() {
  Place p;
  // Open MPI's launcher first (it may run inside a Slurm allocation, whose variables then describe
  // the allocation, not this job), then Slurm's srun, then the PMI of MPICH-style launchers.
  const int size = env_int({"OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "PMI_SIZE"});
  if (size < 1) return p;
  p.size = size;
  p.launched = true;
  p.rank = std::max(0, env_int({"OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "PMI_RANK"}));
  p.local_rank = std::max(0, env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}));
  if (p.rank >= p.size)
    throw DistError("the launcher says rank " + std::to_string(p.rank) + " of " + std::to_string(p.size));
  return p;
}

std::string Comm::who() const { return "rank " + std::to_string(rank()) + " of " + std::to_string(size()); }

#ifdef VITENGINE_HAS_MPI
namespace {
// Throws DistError naming the rank, the MPI function and what it moved, when rc is an error.
void check(int rc, const Comm& c, const char* fn, const std::string& what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw DistError(c.who() + ": " + fn + " (" + what + ") failed: " + std::string(msg, size_t(len)));
}
}  // namespace

Comm::Comm() : place_(place_from_env()) {
  if (!place_.launched) return;
  int provided = 0;
  // Loader workers and the checkpoint writer are threads, but only the main thread calls MPI.
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw DistError(who() + ": MPI_Init_thread failed");
  mpi_ = true;
  // Errors come back as return codes (check() turns them into DistError) instead of aborting.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int r = 0, n = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  if (r != place_.rank || n != place_.size)
    throw DistError("the environment says rank " + std::to_string(place_.rank) + " of " + std::to_string(place_.size) +
                    ", MPI says rank " + std::to_string(r) + " of " + std::to_string(n));
}

Comm::~Comm() {
  if (mpi_) MPI_Finalize();
}

void Comm::allreduce_sum(float* data, size_t n, const std::string& what, size_t bucket) {
  if (!mpi_) return;
  bucket = std::max<size_t>(bucket, 1);
  const size_t buckets = (n + bucket - 1) / bucket;
  for (size_t b = 0; b < buckets; ++b) {
    const size_t lo = b * bucket, len = std::min(bucket, n - lo);
    check(MPI_Allreduce(MPI_IN_PLACE, data + lo, int(len), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), *this, "MPI_Allreduce",
          what + ", bucket " + std::to_string(b + 1) + " of " + std::to_string(buckets));
  }
}

void Comm::allreduce_sum(double* data, size_t n, const std::string& what) {
  if (!mpi_) return;
  check(MPI_Allreduce(MPI_IN_PLACE, data, int(n), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), *this, "MPI_Allreduce", what);
}

void Comm::broadcast(void* data, size_t bytes, int root, const std::string& what) {
  if (!mpi_) return;
  // MPI counts are ints: a model's arena (vit_b16's is 1.4 GB) goes in pieces of 1 GiB
  const size_t piece = size_t(1) << 30;
  for (size_t at = 0; at < bytes; at += piece)
    check(MPI_Bcast(static_cast<char*>(data) + at, int(std::min(piece, bytes - at)), MPI_BYTE, root, MPI_COMM_WORLD),
          *this, "MPI_Bcast", what);
}

std::vector<std::string> Comm::allgather(const std::string& mine, const std::string& what) {
  if (!mpi_) return {mine};
  const size_t n = size_t(size());
  std::vector<int> len(n), at(n);
  int my_len = int(mine.size());
  check(MPI_Allgather(&my_len, 1, MPI_INT, len.data(), 1, MPI_INT, MPI_COMM_WORLD), *this, "MPI_Allgather",
        what + " sizes");
  int total = 0;
  for (size_t r = 0; r < len.size(); ++r) at[r] = total, total += len[r];
  std::string all(size_t(total), '\0');
  check(MPI_Allgatherv(mine.data(), my_len, MPI_CHAR, all.data(), len.data(), at.data(), MPI_CHAR, MPI_COMM_WORLD),
        *this, "MPI_Allgatherv", what);
  std::vector<std::string> out;
  for (size_t r = 0; r < len.size(); ++r) out.push_back(all.substr(size_t(at[r]), size_t(len[r])));
  return out;
}

void Comm::barrier(const std::string& what) {
  if (mpi_) check(MPI_Barrier(MPI_COMM_WORLD), *this, "MPI_Barrier", what);
}

void Comm::abort(int code) {
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
}

#else  // no MPI: one rank

Comm::Comm() : place_(place_from_env()) {
  if (distributed())
    throw DistError("launched as " + who() +
                    ", but this vitengine was built without MPI (configure with -DVITENGINE_MPI=ON "
                    "after installing libopenmpi-dev)");
}
Comm::~Comm() = default;
void Comm::allreduce_sum(float*, size_t, const std::string&, size_t) {}
void Comm::allreduce_sum(double*, size_t, const std::string&) {}
void Comm::broadcast(void*, size_t, int, const std::string&) {}
std::vector<std::string> Comm::allgather(const std::string& mine, const std::string&) { return {mine}; }
void Comm::barrier(const std::string&) {}
void Comm::abort(int) {}

#endif

void check_same(Comm& comm, const std::string& what, const std::string& value,
                std::string (*describe)(const std::string&, const std::string&, int)) {
  if (!comm.distributed()) return;
  const std::vector<std::string> all = comm.allgather(value, what);
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    const std::string d = describe ? describe(all[0], all[r], int(r))
                                   : "rank 0 has '" + all[0] + "', rank " + std::to_string(r) + " has '" + all[r] + "'";
    // every rank sees every value, so all of them stop here with the same message
    throw DistError(what + " differs between ranks: " + d);
  }
}

}  // namespace vit::dist
