// Data parallelism's communicator: where this process sits in the job (rank, size, local rank)
// and the few collectives training and evaluation need. Built on MPI when vitengine is built
// with it (VITENGINE_MPI) and launched by mpirun or srun; otherwise a one-rank communicator whose
// collectives return at once, so a build without MPI trains exactly as before.
//
// Every call names what it moves (`what`): an MPI error becomes a DistError that says the rank,
// the MPI function and that name, never a hang or an abort deep in the library.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace vit::dist {

struct DistError : std::runtime_error {
  explicit DistError(const std::string& what) : std::runtime_error(what) {}
};

// This process's place in the job, from the launcher's environment: Open MPI (OMPI_COMM_WORLD_*),
// Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) or PMI (PMI_RANK, PMI_SIZE). One process
// outside any launcher is rank 0 of 1, not launched.
struct Place {
  int rank = 0, size = 1, local_rank = 0;
  bool launched = false;  // started by mpirun or srun, even as a job of one rank
};
Place place_from_env();

class Comm {
 public:
  // Joins the job the environment describes: MPI_Init under a launcher, even for one rank (so that
  // `mpirun -np 1` runs the collective path and can be checked against a plain run). Throws
  // DistError when the job has several ranks but this build has no MPI. One per process.
  Comm();
  ~Comm();  // MPI_Finalize
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return place_.rank; }
  int size() const { return place_.size; }
  int local_rank() const { return place_.local_rank; }
  bool distributed() const { return place_.size > 1; }
  // The collectives run through MPI (a launched job of any size); false: they return at once.
  bool active() const { return mpi_; }
  // "rank 1 of 2": the prefix of every message about this process.
  std::string who() const;

  // Sums data[0..n) over the ranks in place, bucket_floats at a time (one MPI_Allreduce each,
  // so no message is larger than a bucket and a huge model does not need one huge buffer).
  void allreduce_sum(float* data, size_t n, const std::string& what, size_t bucket_floats = size_t(1) << 20);
  void allreduce_sum(double* data, size_t n, const std::string& what);
  // Rank root's bytes to every rank.
  void broadcast(void* data, size_t bytes, int root, const std::string& what);
  // Every rank's string, on every rank, in rank order.
  std::vector<std::string> allgather(const std::string& mine, const std::string& what);
  // Returns when every rank has called it.
  void barrier(const std::string& what);
  // Ends every rank of the job with `code` (MPI_Abort): after an error on one rank, the others
  // would otherwise wait in their next collective. Returns only without MPI.
  void abort(int code);

 private:
  Place place_;
  bool mpi_ = false;
};

// Stops every rank with one message when the ranks disagree on `value` (a config, a binary's
// hash): "<what> differs between ranks: rank 0 has A, rank 1 has B". `describe` turns rank 0's
// value and rank r's into that explanation; by default both are quoted whole.
void check_same(Comm& comm, const std::string& what, const std::string& value,
                std::string (*describe)(const std::string& at_rank0, const std::string& at_rank_r, int r) = nullptr);

}  // namespace vit::dist
