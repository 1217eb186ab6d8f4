// Processes, their groups and the CPU collectives (ARCHITECTURE.md "comm/"). The job's processes come from
// MPI when a launcher started them (mpirun, srun --mpi=pmix); a process started on its own is a world of
// one and never touches MPI. Groups are the TP x DP grid of make_grid: TP ranks adjacent (inside a node),
// DP ranks strided by TP.
//
// Collectives are blocking, on fp32 (and fp64) host buffers, over MPI; each names what it moves so that a
// collective that does not finish within the timeout (set_collective_timeout, parallel.timeout_s) aborts the
// whole job with a message naming this rank and the operation, instead of hanging on a dead peer. MPI's
// reductions add in an order fixed by the group size and the message size, so a run repeats bitwise.
//
// Free of MPI headers: the MPI communicator lives behind ProcessGroup's pointer.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace dape::comm {

class ProcessGroup {
 public:
  ProcessGroup();  // a group of one (this process alone); its collectives copy or do nothing
  int rank() const { return rank_; }
  int size() const { return size_; }

  // data (n) = the element-wise sum over the group's ranks of every rank's data (n).
  void all_reduce_sum(float* data, size_t n, const char* what) const;
  void all_reduce_sum(double* data, size_t n, const char* what) const;
  // data (n) = the element-wise maximum over the ranks.
  void all_reduce_max(double* data, size_t n, const char* what) const;
  // out (n) = the sum over the ranks of in (size() * n) slice rank(): rank r receives slice r.
  void reduce_scatter_sum(float* out, const float* in, size_t n, const char* what) const;
  // out (size() * n): slice r = rank r's in (n).
  void all_gather(float* out, const float* in, size_t n, const char* what) const;
  // out (size() * n): slice r = slice rank() of rank r's in (size() * n).
  void all_to_all(float* out, const float* in, size_t n, const char* what) const;
  // data (bytes) = root's data.
  void broadcast(void* data, size_t bytes, int root, const char* what) const;
  void barrier(const char* what) const;

 private:
  friend class Runtime;
  struct Impl;
  std::shared_ptr<Impl> impl_;  // nullptr for a group of one
  int rank_ = 0, size_ = 1;
};

// The tensor- and data-parallel groups of this rank on a TP x DP grid of the world's ranks.
struct Grid {
  int tp = 1, dp = 1;
  ProcessGroup world, tp_group, dp_group;
};

class Runtime {
 public:
  // The process's runtime: initialises MPI on first use when an MPI launcher started this process (its
  // environment says so), and finalises it at exit.
  static Runtime& get();
  bool distributed() const { return world_.size() > 1; }
  const ProcessGroup& world() const { return world_; }

  // tp x dp must equal the world size (dp = 0: world size / tp). Throws std::invalid_argument naming the
  // numbers otherwise.
  Grid make_grid(int tp, int dp) const;

  // Collectives that take longer than this abort the job (0: never). Default 300 s.
  void set_collective_timeout(double seconds);

  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  ~Runtime();

 private:
  Runtime();
  ProcessGroup world_;
};

}  // namespace dape::comm
