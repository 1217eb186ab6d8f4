// Naive CPU references for the CUDA op tests: plain loops in double over the same inputs the GPU reads (bf16
// values widened to double), with the semantics of kernels/dense.h and model/optimizer.h. No BLAS, so the
// CUDA test binary also builds on a GPU node without OpenBLAS; in the main build,
// test_reference_vs_cpu.cpp checks these loops against the CPU ops themselves.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/positional.h"  // Activation, kLeakyReluSlope

namespace dape::cuda_test {

using Vec = std::vector<double>;

inline size_t at(int row, int col, int width) {
  return size_t(row) * width + col;
}

inline void encoder_forward(Vec& out, const std::vector<int32_t>& tokens, const Vec& wte, int N, int C) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) out[at(n, c, C)] = wte[at(tokens[n], c, C)];
}

inline void encoder_backward(Vec& dwte, const Vec& dout, const std::vector<int32_t>& tokens, int N, int C) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) dwte[at(tokens[n], c, C)] += dout[at(n, c, C)];
}

inline void layernorm_forward(Vec& out, Vec& mean, Vec& rstd, const Vec& inp, const Vec& weight,
                              const Vec& bias, int N, int C) {
  for (int n = 0; n < N; ++n) {
    double m = 0, sq = 0;
    for (int c = 0; c < C; ++c) m += inp[at(n, c, C)];
    m /= C;
    for (int c = 0; c < C; ++c) sq += (inp[at(n, c, C)] - m) * (inp[at(n, c, C)] - m);
    const double s = 1.0 / std::sqrt(sq / C + 1e-5);
    for (int c = 0; c < C; ++c) out[at(n, c, C)] = (inp[at(n, c, C)] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

// dinp +=, dweight +=, dbias +=, as kernels/dense.h.
inline void layernorm_backward(Vec& dinp, Vec& dweight, Vec& dbias, const Vec& dout, const Vec& inp,
                               const Vec& weight, const Vec& mean, const Vec& rstd, int N, int C) {
  for (int n = 0; n < N; ++n) {
    double g_sum = 0, gx_sum = 0;
    for (int c = 0; c < C; ++c) {
      const double g = dout[at(n, c, C)] * weight[c], xhat = (inp[at(n, c, C)] - mean[n]) * rstd[n];
      g_sum += g;
      gx_sum += g * xhat;
      dweight[c] += dout[at(n, c, C)] * xhat;
      dbias[c] += dout[at(n, c, C)];
    }
    for (int c = 0; c < C; ++c) {
      const double g = dout[at(n, c, C)] * weight[c], xhat = (inp[at(n, c, C)] - mean[n]) * rstd[n];
      dinp[at(n, c, C)] += rstd[n] * (g - g_sum / C - xhat * gx_sum / C);
    }
  }
}

// out (N,OC) = inp (N,C) weight (OC,C)^T + bias; bias empty means none.
inline void matmul_forward(Vec& out, const Vec& inp, const Vec& weight, const Vec& bias, int N, int C,
                           int OC) {
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double sum = bias.empty() ? 0.0 : bias[o];
      for (int c = 0; c < C; ++c) sum += inp[at(n, c, C)] * weight[at(o, c, C)];
      out[at(n, o, OC)] = sum;
    }
}

// dinp =, dweight +=, dbias += (skipped when empty).
inline void matmul_backward(Vec& dinp, Vec& dweight, Vec& dbias, const Vec& dout, const Vec& inp,
                            const Vec& weight, int N, int C, int OC) {
  std::fill(dinp.begin(), dinp.end(), 0.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      const double d = dout[at(n, o, OC)];
      for (int c = 0; c < C; ++c) {
        dinp[at(n, c, C)] += d * weight[at(o, c, C)];
        dweight[at(o, c, C)] += d * inp[at(n, c, C)];
      }
      if (!dbias.empty()) dbias[o] += d;
    }
}

inline double activation(double x, kernels::Activation act) {
  switch (act) {
    case kernels::Activation::relu:
      return x > 0 ? x : 0.0;
    case kernels::Activation::leaky_relu:
      return x > 0 ? x : kernels::kLeakyReluSlope * x;
    case kernels::Activation::gelu:
      return 0.5 * x * (1.0 + std::erf(x * M_SQRT1_2));
  }
  return 0;
}

inline double activation_derivative(double x, kernels::Activation act) {
  switch (act) {
    case kernels::Activation::relu:
      return x > 0 ? 1.0 : 0.0;
    case kernels::Activation::leaky_relu:
      return x > 0 ? 1.0 : kernels::kLeakyReluSlope;
    case kernels::Activation::gelu:
      return 0.5 * (1.0 + std::erf(x * M_SQRT1_2)) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
  }
  return 0;
}

inline void crossentropy_forward(Vec& losses, const Vec& logits, const std::vector<int32_t>& targets, int N,
                                 int V) {
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      losses[n] = 0;
      continue;
    }
    const double* x = logits.data() + at(n, 0, V);
    const double m = *std::max_element(x, x + V);
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(x[v] - m);
    losses[n] = std::log(sum) + m - x[targets[n]];
  }
}

inline void crossentropy_backward(Vec& dlogits, const Vec& logits, const std::vector<int32_t>& targets,
                                  double dloss, int N, int V) {
  for (int n = 0; n < N; ++n) {
    double* dx = dlogits.data() + at(n, 0, V);
    if (targets[n] < 0) {
      std::fill(dx, dx + V, 0.0);
      continue;
    }
    const double* x = logits.data() + at(n, 0, V);
    const double m = *std::max_element(x, x + V);
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(x[v] - m);
    for (int v = 0; v < V; ++v) dx[v] = (std::exp(x[v] - m) / sum - (v == targets[n] ? 1.0 : 0.0)) * dloss;
  }
}

// One AdamW update of elements [offset, offset + numel) as model::AdamW::step, fp32 storage of the moments
// and the parameters between steps (the CPU and GPU optimizers both keep fp32 state).
inline void adamw_update(std::vector<float>& x, std::vector<float>& m, std::vector<float>& v,
                         const std::vector<float>& g, size_t offset, size_t numel, double lr, double beta1,
                         double beta2, double eps, double decay, long t) {
  const double c1 = 1.0 - std::pow(beta1, double(t)), c2 = 1.0 - std::pow(beta2, double(t));
  for (size_t i = offset; i < offset + numel; ++i) {
    m[i] = float(beta1 * m[i] + (1.0 - beta1) * g[i]);
    v[i] = float(beta2 * v[i] + (1.0 - beta2) * double(g[i]) * g[i]);
    double xi = double(x[i]) * (1.0 - lr * decay);
    xi -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
    x[i] = float(xi);
  }
}

inline double grad_norm(const std::vector<float>& g) {
  double sum = 0;
  for (float x : g) sum += double(x) * x;
  return std::sqrt(sum);
}

}  // namespace dape::cuda_test
