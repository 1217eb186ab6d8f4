// Check macros for the CUDA runtime and cuBLAS(Lt): a failed call throws dape::Error naming the call, the
// file and line, and the library's error name and description. For .cu and CUDA-aware .cpp files of
// kernels/cuda only (this header includes CUDA headers).
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <string>

#include "kernels/error.h"

namespace dape::kernels::cuda {

inline void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // so that an unrelated later call does not report this error again
  throw Error(std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
              cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
              cublasGetStatusName(status) + ": " + cublasGetStatusString(status));
}

}  // namespace dape::kernels::cuda

// CUDA_CHECK(cudaMalloc(&p, n)); CUBLAS_CHECK(cublasLtMatmul(...)); CUDA_CHECK_LAUNCH() after a <<<>>>
// launch.
#define CUDA_CHECK(call) ::dape::kernels::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) ::dape::kernels::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define CUDA_CHECK_LAUNCH() \
  ::dape::kernels::cuda::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
