// AdamW with decoupled weight decay, global gradient-norm clipping and the learning-rate schedule
// (DAPE-SPEC §2.2). Moments are fp32 or fp64 like the parameters.
#pragma once

#include <cstddef>
#include <vector>

#include "model/parameters.h"

namespace dape::model {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // applied only to tensors with ParameterSpec::weight_decay
};

struct LrSchedule {
  double lr = 6e-4, min_lr = 6e-5;
  int warmup_steps = 0, decay_steps = 1;
  // The learning rate after t optimizer steps (DAPE-SPEC §2.2): linear warmup from 0, cosine to min_lr
  // at decay_steps, never below min_lr. The n-th update (n = 1, 2, ...) uses lr_at(n - 1).
  double lr_at(long t) const;
};

template <typename F>
class AdamW {
 public:
  AdamW(std::vector<ParameterSpec> table, AdamWConfig config);
  // One update of every tensor: params -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * params).
  void step(F* params, const F* grads, double lr);
  long steps_taken() const { return t_; }
  // Resuming from a checkpoint: the update count t of the bias correction (the moments are restored through
  // first_moment() and second_moment()).
  void set_steps_taken(long t) { t_ = t; }
  F* first_moment() { return m_.data(); }
  F* second_moment() { return v_.data(); }

 private:
  std::vector<ParameterSpec> table_;
  AdamWConfig config_;
  std::vector<F> m_, v_;
  long t_ = 0;
};

// The L2 norm of all gradients; if it exceeds max_norm > 0, scales grads by max_norm / norm.
// Returns the norm before clipping.
template <typename F>
double clip_grad_norm(F* grads, size_t n, double max_norm);

extern template class AdamW<float>;
extern template class AdamW<double>;

}  // namespace dape::model
