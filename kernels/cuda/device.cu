#if __cplusplus < 202002L
#error "CUDA sources must compile as C++20"
#endif

#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace dape::kernels {
namespace {

std::string describe(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

}  // namespace

int cuda_device_count(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // Clears the error so that a later, unrelated runtime call does not report it again.
    cudaGetLastError();
    if (why != nullptr) *why = "cudaGetDeviceCount failed: " + describe(err);
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "cudaGetDeviceCount reported no device";
  return count;
}

std::string cuda_device_name(int device) {
  cudaDeviceProp prop{};
  const cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("cudaGetDeviceProperties(device " + std::to_string(device) + ") failed: " +
                             describe(err) + " at " + __FILE__ + ":" + std::to_string(__LINE__));
  }
  return prop.name;
}

int local_rank_from_environment() {
  for (const char* name : {"SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK"})
    if (const char* value = std::getenv(name)) return std::atoi(value);
  return 0;
}

int cuda_use_local_device() {
  std::string why;
  const int count = cuda_device_count(&why);
  if (count == 0) throw std::runtime_error("no usable CUDA device: " + why);
  const int device = device_for_local_rank(local_rank_from_environment(), count);
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("cudaSetDevice(" + std::to_string(device) + ") failed: " + describe(err));
  }
  return device;
}

size_t cuda_memory_in_use() {
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("cudaMemGetInfo failed: " + describe(err) + " at " + __FILE__ + ":" +
                             std::to_string(__LINE__));
  }
  return total_bytes - free_bytes;
}

}  // namespace dape::kernels
