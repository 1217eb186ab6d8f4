// The CUDA devices this process can see. Built only with DAPE_CUDA; free of CUDA headers so host code
// (launcher, tests) can include it.
#pragma once

#include <cstddef>
#include <string>

namespace dape::kernels {

// cuda_device_count: the number of devices the CUDA runtime reports for this process (after
// CUDA_VISIBLE_DEVICES). Never throws: on any cudaGetDeviceCount error (no driver, driver too old for
// the runtime, no device) returns 0 and, if why is not null, sets *why to the call, the error name and
// the runtime's description. On success *why is left as it was.
int cuda_device_count(std::string* why);

// cuda_device_name: the marketing name of device `device` in [0, cuda_device_count()).
// Throws std::runtime_error naming the call, the device and the CUDA error when the runtime fails.
std::string cuda_device_name(int device);

// The GPU of a process when several ranks share a node: local_rank % device_count. That gives each rank
// its own GPU when the launcher shows every rank all of the node's GPUs, and device 0 when it shows each
// rank only its own (srun --gpus-per-task=1, or cgroup confinement). device_count > 0.
inline int device_for_local_rank(int local_rank, int device_count) {
  return (local_rank < 0 ? 0 : local_rank) % device_count;
}
// The node-local rank of this process from its launcher: SLURM_LOCALID (srun), OMPI_COMM_WORLD_LOCAL_RANK
// (mpirun), LOCAL_RANK (others); 0 when none is set.
int local_rank_from_environment();
// cuda_use_local_device: makes device_for_local_rank(local_rank_from_environment(), cuda_device_count()) the
// current device and returns it. Throws std::runtime_error when the runtime fails or there is no device.
int cuda_use_local_device();

// cuda_memory_in_use: bytes of the current device's memory in use (cudaMemGetInfo: total - free), by every
// process and by this process's CUDA context too; sample it before and after to measure a program's share.
// Throws std::runtime_error naming the call and the CUDA error when the runtime fails.
size_t cuda_memory_in_use();

}  // namespace dape::kernels
