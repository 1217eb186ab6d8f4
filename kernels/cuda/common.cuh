// Device helpers shared by the .cu files of kernels/cuda: bf16 views of the host-side bf16 type, and warp and
// block reductions in a fixed order. Internal to kernels/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>

#include "kernels/cuda/cuda_error.h"
#include "kernels/cuda/dense.h"

namespace dape::kernels::cuda {

static_assert(sizeof(bf16) == sizeof(__nv_bfloat16) && alignof(bf16) == alignof(__nv_bfloat16));

inline __nv_bfloat16* as_device(bf16* p) {
  return reinterpret_cast<__nv_bfloat16*>(p);
}
inline const __nv_bfloat16* as_device(const bf16* p) {
  return reinterpret_cast<const __nv_bfloat16*>(p);
}

inline unsigned blocks_for(size_t n, int threads) {
  return unsigned((n + threads - 1) / threads);
}

// Butterfly (xor) reductions over a full warp. Every lane ends with the same value: at each level the two
// partners add the same two numbers, and fp addition is commutative. The order depends on nothing but the
// lane ids, so the result is deterministic.
template <typename T>
__device__ inline T warp_sum(T x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ inline float warp_max(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// block_sum / block_max over all threads of a 1-D block whose size is a multiple of 32 (at most 1024): warp
// reductions, then every warp reduces the 32 warp results itself, so every thread returns the same value
// with no further barrier. Must be reached by every thread of the block.
template <typename T>
__device__ inline T block_sum(T x) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  x = warp_sum(x);
  __syncthreads();  // a previous call may still be reading partial
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  return warp_sum(lane < int(blockDim.x / 32) ? partial[lane] : T(0));
}
__device__ inline float block_max(float x) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  x = warp_max(x);
  __syncthreads();
  if (lane == 0) partial[warp] = x;
  __syncthreads();
  return warp_max(lane < int(blockDim.x / 32) ? partial[lane] : -INFINITY);
}

// The activations of kernels/cpu/activation.h on the device: the MLPs, FIRE's and DAPE's MLPs.
__device__ inline float activate(float x, Activation act) {
  switch (act) {
    case Activation::relu:
      return x > 0.0f ? x : 0.0f;
    case Activation::leaky_relu:
      return x > 0.0f ? x : float(kLeakyReluSlope) * x;
    case Activation::gelu:
      return 0.5f * x * (1.0f + erff(x * float(M_SQRT1_2)));
  }
  return 0.0f;
}

// d act / dx; at x = 0 relu gives 0 and leaky_relu its slope, as kernels/cpu/activation.h.
__device__ inline float activate_derivative(float x, Activation act) {
  switch (act) {
    case Activation::relu:
      return x > 0.0f ? 1.0f : 0.0f;
    case Activation::leaky_relu:
      return x > 0.0f ? 1.0f : float(kLeakyReluSlope);
    case Activation::gelu: {
      const float cdf = 0.5f * (1.0f + erff(x * float(M_SQRT1_2)));
      const float pdf = expf(-0.5f * x * x) * float(0.5 * M_2_SQRTPI * M_SQRT1_2);
      return cdf + x * pdf;
    }
  }
  return 0.0f;
}

}  // namespace dape::kernels::cuda
