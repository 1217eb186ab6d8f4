// CUDA AdamW step and global gradient-norm clipping on the flat fp32 parameter arena, with the semantics of
// model::AdamW and model::clip_grad_norm (model/optimizer.h). Free of CUDA headers; all pointers are device
// pointers unless a comment says host.
#pragma once

#include <cstddef>
#include <vector>

#include "kernels/cuda/dense.h"  // Stream

namespace dape::kernels::cuda {

// One parameter tensor of the flat arena (params, grads, m and v share offsets), as model::ParameterSpec
// gives it: weight_decay false for LayerNorm tensors and biases.
struct AdamWTensor {
  size_t offset = 0, numel = 0;
  bool weight_decay = true;
};

struct AdamWConfig {
  double lr = 0;  // this update's learning rate (model::LrSchedule::lr_at(t - 1))
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // applied only to tensors with AdamWTensor::weight_decay
  long t = 1;                 // the update count including this one: 1 for the first step
};

// adamw_step: for every tensor (host list), elementwise, computed in fp64 and stored in fp32 as model::AdamW:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t)
//   x = x (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps), wd = weight_decay for tensors that decay, else 0.
// params, m, v (arena) fp32 updated in place; grads (arena) fp32. Consecutive tensors with the same decay
// flag that touch are updated by one launch.
void adamw_step(float* params, float* m, float* v, const float* grads,
                const std::vector<AdamWTensor>& tensors, const AdamWConfig& config, Stream stream);

// Blocks of the first pass of global_grad_norm: fixed, so the summation order does not depend on the GPU.
inline constexpr int kGradNormBlocks = 512;

// global_grad_norm: *norm = sqrt(sum_i grads[i]^2), accumulated in fp64 in a fixed order (each of
// kGradNormBlocks blocks sums a fixed strided subset into partials, then one block sums the partials).
// norm (1) fp64 written, stays on the device; partials (kGradNormBlocks) fp64 scratch; grads (n) fp32.
void global_grad_norm(double* norm, double* partials, const float* grads, size_t n, Stream stream);

// clip_grad_scale: if max_norm > 0 and *norm > max_norm, grads *= float(max_norm / (*norm + 1e-6)), as
// model::clip_grad_norm; reads norm on the device, so no host synchronisation. grads (n) fp32 in place.
void clip_grad_scale(float* grads, const double* norm, double max_norm, size_t n, Stream stream);

}  // namespace dape::kernels::cuda
