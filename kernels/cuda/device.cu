#if __cplusplus < 202002L
#error "CUDA sources must compile as C++20"
#endif

#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

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
