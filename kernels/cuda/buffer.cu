#include "kernels/cuda/buffer.h"

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_error.h"

namespace dape::kernels::cuda {

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  if (bytes > 0) CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

// cudaFree can only fail here for a pointer we did not allocate or a context already torn down at exit;
// neither is worth a throw from a destructor.
void device_free(void* p) noexcept {
  if (p != nullptr) cudaFree(p);
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void device_zero(void* p, size_t bytes) {
  if (bytes > 0) CUDA_CHECK(cudaMemset(p, 0, bytes));
}

void device_synchronize() {
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace dape::kernels::cuda
