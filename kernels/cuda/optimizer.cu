// Kernels of kernels/cuda/optimizer.h.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/optimizer.h"

namespace dape::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per element of one run of tensors sharing a decay value; fp64 arithmetic as model::AdamW, so
// the result differs from the CPU's only where nvcc fuses a multiply-add.
__global__ void adamw_kernel(float* params, float* m, float* v, const float* grads, size_t n, double lr,
                             double beta1, double beta2, double correction1, double correction2, double eps,
                             double decay) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const double g = grads[i];
  m[i] = float(beta1 * m[i] + (1.0 - beta1) * g);
  v[i] = float(beta2 * v[i] + (1.0 - beta2) * g * g);
  const double m_hat = m[i] / correction1, v_hat = v[i] / correction2;
  // Decoupled decay first, as torch.optim.AdamW does.
  double x = double(params[i]) * (1.0 - lr * decay);
  x -= lr * m_hat / (sqrt(v_hat) + eps);
  params[i] = float(x);
}

// Pass 1: block b sums grads[i]^2 for i = b * blockDim + threadIdx + k * gridDim * blockDim, k = 0, 1, ...
// (a fixed grid, so a fixed order), into partials[b].
__global__ void grad_norm_partials_kernel(double* partials, const float* grads, size_t n) {
  double sum = 0.0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double g = grads[i];
    sum += g * g;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// Pass 2: one block of kGradNormBlocks threads, thread k reads partials[k].
__global__ void grad_norm_final_kernel(double* norm, const double* partials) {
  const double total = block_sum(partials[threadIdx.x]);
  if (threadIdx.x == 0) *norm = sqrt(total);
}

// One thread per element; every thread computes the same scale from *norm.
__global__ void clip_grad_scale_kernel(float* grads, const double* norm, double max_norm, size_t n) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n || *norm <= max_norm) return;
  grads[i] *= float(max_norm / (*norm + 1e-6));
}

}  // namespace

void adamw_step(float* params, float* m, float* v, const float* grads,
                const std::vector<AdamWTensor>& tensors, const AdamWConfig& config, Stream stream) {
  const double correction1 = 1.0 - std::pow(config.beta1, double(config.t));
  const double correction2 = 1.0 - std::pow(config.beta2, double(config.t));
  for (size_t k = 0; k < tensors.size();) {
    const size_t begin = tensors[k].offset;
    size_t end = begin + tensors[k].numel;
    const bool decays = tensors[k].weight_decay;
    for (++k; k < tensors.size() && tensors[k].offset == end && tensors[k].weight_decay == decays; ++k)
      end += tensors[k].numel;
    const size_t n = end - begin;
    if (n == 0) continue;
    adamw_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        params + begin, m + begin, v + begin, grads + begin, n, config.lr, config.beta1, config.beta2,
        correction1, correction2, config.eps, decays ? config.weight_decay : 0.0);
    CUDA_CHECK_LAUNCH();
  }
}

void global_grad_norm(double* norm, double* partials, const float* grads, size_t n, Stream stream) {
  grad_norm_partials_kernel<<<kGradNormBlocks, kThreads, 0, stream>>>(partials, grads, n);
  CUDA_CHECK_LAUNCH();
  grad_norm_final_kernel<<<1, kGradNormBlocks, 0, stream>>>(norm, partials);
  CUDA_CHECK_LAUNCH();
}

void clip_grad_scale(float* grads, const double* norm, double max_norm, size_t n, Stream stream) {
  if (n == 0 || max_norm <= 0) return;
  clip_grad_scale_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(grads, norm, max_norm, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dape::kernels::cuda
