#include "model/optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"

namespace dape::model {

double LrSchedule::lr_at(long t) const {
  // The warmup ramp starts at 0 and is not clamped at min_lr (the original returns before its clamp),
  // so the first update has lr 0 (DAPE-SPEC §2.2).
  if (warmup_steps > 0 && t <= warmup_steps) return lr * double(t) / warmup_steps;
  const double progress = std::min(1.0, double(t - warmup_steps) / std::max(1, decay_steps - warmup_steps));
  return std::max(min_lr, min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

template <typename F>
AdamW<F>::AdamW(std::vector<ParameterSpec> table, AdamWConfig config)
    : table_(std::move(table)), config_(config) {
  const size_t n = table_.empty() ? 0 : table_.back().offset + table_.back().numel;
  m_.assign(n, F(0));
  v_.assign(n, F(0));
}

template <typename F>
void AdamW<F>::step(F* params, const F* grads, double lr) {
  ++t_;
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double correction1 = 1.0 - std::pow(b1, double(t_));
  const double correction2 = 1.0 - std::pow(b2, double(t_));
  for (const ParameterSpec& p : table_) {
    const double decay = p.weight_decay ? config_.weight_decay : 0.0;
    F* x = params + p.offset;
    const F* g = grads + p.offset;
    F* m = m_.data() + p.offset;
    F* v = v_.data() + p.offset;
#pragma omp parallel for schedule(static) if (p.numel > 65536)
    for (size_t i = 0; i < p.numel; ++i) {
      m[i] = F(b1 * m[i] + (1.0 - b1) * g[i]);
      v[i] = F(b2 * v[i] + (1.0 - b2) * double(g[i]) * g[i]);
      const double m_hat = m[i] / correction1;
      const double v_hat = v[i] / correction2;
      // Decoupled decay first, as torch.optim.AdamW does.
      double xi = double(x[i]) * (1.0 - lr * decay);
      xi -= lr * m_hat / (std::sqrt(v_hat) + config_.eps);
      x[i] = F(xi);
    }
  }
}

template <typename F>
double clip_grad_norm(F* grads, size_t n, double max_norm) {
  // Fixed-size chunks summed in order: the norm does not depend on the thread count.
  constexpr size_t kChunk = 1 << 16;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (size_t c = 0; c < chunks; ++c) {
    double sum = 0;
    for (size_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) sum += double(grads[i]) * grads[i];
    partial[c] = sum;
  }
  double total = 0;
  for (double p : partial) total += p;
  const double norm = std::sqrt(total);
  if (max_norm > 0 && norm > max_norm) {
    const F scale = F(max_norm / (norm + 1e-6));
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; ++i) grads[i] *= scale;
  }
  return norm;
}

template class AdamW<float>;
template class AdamW<double>;
template double clip_grad_norm<float>(float*, size_t, double);
template double clip_grad_norm<double>(double*, size_t, double);

}  // namespace dape::model
