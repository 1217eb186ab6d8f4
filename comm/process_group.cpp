#include "comm/process_group.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace dape::comm {

struct ProcessGroup::Impl {
  MPI_Comm comm;
};

namespace {

using Clock = std::chrono::steady_clock;

// Whether an MPI launcher started this process: OpenMPI's mpirun, srun --mpi=pmix, MPICH's hydra.
bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(name)) return true;
  return false;
}

// The collective in progress on this process (nullptr: none) and when it started; read by the watchdog.
std::atomic<const char*> current_operation{nullptr};
std::atomic<int64_t> operation_started_ns{0};
std::atomic<double> timeout_seconds{300.0};
std::atomic<bool> watchdog_stop{false};
int world_rank = 0;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// Marks a collective as running for the watchdog, for the lifetime of the object.
class Running {
 public:
  explicit Running(const char* what) {
    operation_started_ns.store(now_ns());
    current_operation.store(what);
  }
  ~Running() { current_operation.store(nullptr); }
};

// Aborts the process when a collective runs longer than the timeout. The exit is _Exit: MPI calls from
// this thread are not allowed, and a launcher ends the job when one of its processes exits with an error.
void watchdog() {
  while (!watchdog_stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const char* op = current_operation.load();
    const double limit = timeout_seconds.load();
    if (!op || limit <= 0) continue;
    const double waited = double(now_ns() - operation_started_ns.load()) * 1e-9;
    if (waited < limit) continue;
    std::fprintf(
        stderr,
        "dape: error: rank %d: the collective '%s' did not finish within %.0f s (parallel.timeout_s): "
        "another rank has probably failed or stopped; see its output above. Aborting this rank.\n",
        world_rank, op, limit);
    std::fflush(stderr);
    std::_Exit(3);
  }
}

std::thread watchdog_thread;

int checked_count(size_t n, const char* what) {
  if (n > size_t(INT_MAX))
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(n) +
                                " elements exceed what one MPI message may hold (2^31 - 1)");
  return int(n);
}

void check_mpi(int code, const char* call, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw std::runtime_error(std::string(call) + " failed during '" + what + "': " + std::string(text, length));
}

// In-place all-reduce in chunks that fit an int count.
template <typename T>
void all_reduce_chunks(MPI_Comm comm, T* data, size_t n, MPI_Datatype type, MPI_Op op, const char* what) {
  constexpr size_t kChunk = size_t(1) << 30;
  Running running(what);
  for (size_t done = 0; done < n; done += kChunk) {
    const int count = int(std::min(kChunk, n - done));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + done, count, type, op, comm), "MPI_Allreduce", what);
  }
}

// A collective of n floats per rank whose result in a group of one (comm nullptr) is `in` itself: checks the
// count and marks the call for the watchdog. collective(comm, count) makes the MPI call.
template <typename Collective>
void exchange(const MPI_Comm* comm, float* out, const float* in, size_t n, const char* what, const char* call,
              Collective collective) {
  if (!comm) {
    std::copy(in, in + n, out);
    return;
  }
  const int count = checked_count(n, what);
  Running running(what);
  check_mpi(collective(*comm, count), call, what);
}

}  // namespace

ProcessGroup::ProcessGroup() = default;

void ProcessGroup::all_reduce_sum(float* data, size_t n, const char* what) const {
  if (impl_) all_reduce_chunks(impl_->comm, data, n, MPI_FLOAT, MPI_SUM, what);
}
void ProcessGroup::all_reduce_sum(double* data, size_t n, const char* what) const {
  if (impl_) all_reduce_chunks(impl_->comm, data, n, MPI_DOUBLE, MPI_SUM, what);
}
void ProcessGroup::all_reduce_max(double* data, size_t n, const char* what) const {
  if (impl_) all_reduce_chunks(impl_->comm, data, n, MPI_DOUBLE, MPI_MAX, what);
}

void ProcessGroup::reduce_scatter_sum(float* out, const float* in, size_t n, const char* what) const {
  exchange(impl_ ? &impl_->comm : nullptr, out, in, n, what, "MPI_Reduce_scatter_block",
           [&](MPI_Comm comm, int count) {
             return MPI_Reduce_scatter_block(in, out, count, MPI_FLOAT, MPI_SUM, comm);
           });
}

void ProcessGroup::all_gather(float* out, const float* in, size_t n, const char* what) const {
  exchange(impl_ ? &impl_->comm : nullptr, out, in, n, what, "MPI_Allgather", [&](MPI_Comm comm, int count) {
    return MPI_Allgather(in, count, MPI_FLOAT, out, count, MPI_FLOAT, comm);
  });
}

void ProcessGroup::all_to_all(float* out, const float* in, size_t n, const char* what) const {
  exchange(impl_ ? &impl_->comm : nullptr, out, in, n, what, "MPI_Alltoall", [&](MPI_Comm comm, int count) {
    return MPI_Alltoall(in, count, MPI_FLOAT, out, count, MPI_FLOAT, comm);
  });
}

void ProcessGroup::broadcast(void* data, size_t bytes, int root, const char* what) const {
  if (!impl_) return;
  const int count = checked_count(bytes, what);
  Running running(what);
  check_mpi(MPI_Bcast(data, count, MPI_BYTE, root, impl_->comm), "MPI_Bcast", what);
}

void ProcessGroup::barrier(const char* what) const {
  if (!impl_) return;
  Running running(what);
  check_mpi(MPI_Barrier(impl_->comm), "MPI_Barrier", what);
}

Runtime& Runtime::get() {
  static Runtime runtime;
  return runtime;
}

Runtime::Runtime() {
  if (!launched_by_mpi()) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", "start-up");
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  world_rank = rank;
  world_.rank_ = rank, world_.size_ = size;
  world_.impl_ = std::make_shared<ProcessGroup::Impl>(ProcessGroup::Impl{MPI_COMM_WORLD});
  watchdog_thread = std::thread(watchdog);
}

Runtime::~Runtime() {
  if (!world_.impl_) return;
  watchdog_stop.store(true);
  if (watchdog_thread.joinable()) watchdog_thread.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void Runtime::set_collective_timeout(double seconds) {
  timeout_seconds.store(seconds);
}

Grid Runtime::make_grid(int tp, int dp) const {
  const int world = world_.size();
  if (tp < 1 || world % tp != 0)
    throw std::invalid_argument("parallel.tp = " + std::to_string(tp) + " must divide the " +
                                std::to_string(world) + " processes of the job");
  if (dp == 0) dp = world / tp;
  if (dp < 1 || tp * dp != world)
    throw std::invalid_argument(
        "parallel.tp x parallel.dp = " + std::to_string(tp) + " x " + std::to_string(dp) +
        " must equal the " + std::to_string(world) +
        " processes of the job (start it with that many ranks, or set parallel.dp = 0)");
  Grid grid;
  grid.tp = tp, grid.dp = dp;
  grid.world = world_;
  if (!world_.impl_) return grid;
  // TP ranks adjacent: rank = dp_index * tp + tp_index.
  const int rank = world_.rank();
  auto split = [&](int color, int key) {
    ProcessGroup g;
    MPI_Comm comm;
    check_mpi(MPI_Comm_split(MPI_COMM_WORLD, color, key, &comm), "MPI_Comm_split", "process groups");
    MPI_Comm_rank(comm, &g.rank_);
    MPI_Comm_size(comm, &g.size_);
    g.impl_ = std::make_shared<ProcessGroup::Impl>(ProcessGroup::Impl{comm});
    return g;
  };
  grid.tp_group = split(rank / tp, rank % tp);
  grid.dp_group = split(rank % tp, rank / tp);
  return grid;
}

}  // namespace dape::comm
