// Naive CPU references for the CUDA op tests: plain loops in double over the same inputs the GPU reads (bf16
// values widened to double), with the semantics of kernels/dense.h, kernels/attention.h and
// model/optimizer.h. No BLAS, so the CUDA test binary also builds on a GPU node without OpenBLAS; in the
// main build, test_reference_vs_cpu.cpp checks these loops against the CPU ops themselves. The attention
// reference builds on the independent forward references of tests/kernels/attention_testing.h (header
// only) and is checked against their finite differences in test_attention.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kernels/attention_testing.h"  // tests/kernels: the independent attention forward references
#include "kernels/positional.h"         // Activation, kLeakyReluSlope

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

// ---- Attention (kernels/cuda/attention.h) ---------------------------------------------------------------

struct AttentionReference {
  Vec out, probs;                    // (B,T,C), (B,NH,T,T)
  std::map<std::string, Vec> grads;  // d sum(out * dout) / d x for every tensor x of the parameters
};

// The attention of DAPE-SPEC §1.2 / §4.1 and its backward (§4.6, the PE backwards of §3.4-3.6), in double,
// for the tensors p of kernels::attention_test::random_parameters ("qkv" (B,T,3C) and the PE and DAPE
// parameters by name), with dout (B,T,C). The forward repeats attention_test::reference_attention on the
// visible pairs and keeps what the backward needs; biases come from attention_test::reference_bias. Kerple's
// gradient is taken at the clamped values and passed straight through to the raw ones.
inline AttentionReference attention_reference(const kernels::AttentionSpec& s,
                                              const kernels::attention_test::Tensors<double>& p,
                                              const Vec& dout) {
  namespace at = kernels::attention_test;
  using kernels::DapeMode;
  using kernels::PeKind;
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS, D = s.dape_width;
  const bool dape = s.dape != DapeMode::off, bias = at::has_bias(s.pe);
  const bool concat = s.dape == DapeMode::concat_residual || s.dape == DapeMode::concat;
  const bool residual =
      s.dape == DapeMode::off || s.dape == DapeMode::concat_residual || s.dape == DapeMode::add_residual;
  const int Zin = concat ? 2 * NH : NH;
  const size_t TT = size_t(T) * T;
  auto n_keys = [&](int i) { return s.causal ? i + 1 : T; };
  auto e4 = [&](int b, int h, int i, int j) { return ((size_t(b) * NH + h) * T + i) * T + j; };
  auto e3 = [&](int h, int i, int j) { return (size_t(h) * T + i) * T + j; };

  Vec q(size_t(B) * NH * T * HS), k(q.size()), v(q.size());
  const Vec& qkv = p.at("qkv");
  auto head_at = [&](int b, int h, int t) { return ((size_t(b) * NH + h) * T + t) * HS; };
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < NH; ++h)
        for (int c = 0; c < HS; ++c) {
          const size_t src = (size_t(b) * T + t) * 3 * C + h * HS + c;
          q[head_at(b, h, t) + c] = qkv[src], k[head_at(b, h, t) + c] = qkv[src + C];
          v[head_at(b, h, t) + c] = qkv[src + 2 * C];
        }
  if (s.pe == PeKind::rope) {
    at::reference_rope(q, s.rope_positions, B * NH, T, HS, 1);
    at::reference_rope(k, s.rope_positions, B * NH, T, HS, 1);
  }
  const Vec beta = bias ? at::reference_bias(at::reference_bias_spec(s), p) : Vec(size_t(NH) * TT, 0.0);
  const Vec empty;
  const Vec& W1 = dape ? p.at("dape_fc1_weight") : empty;
  const Vec& c1 = dape ? p.at("dape_fc1_bias") : empty;
  const Vec& W2 = dape ? p.at("dape_fc2_weight") : empty;
  const Vec& c2 = dape ? p.at("dape_fc2_bias") : empty;

  Vec S(size_t(B) * NH * TT, 0.0);
  // The DAPE MLP of pair (b, i, j): z (Zin), u (D), its output o (NH).
  auto mlp = [&](int b, int i, int j, Vec& z, Vec& u, Vec& o) {
    for (int h = 0; h < NH; ++h) {
      const double sc = S[e4(b, h, i, j)], be = beta[e3(h, i, j)];
      z[h] = s.dape == DapeMode::add_residual ? sc + be : sc;
      if (concat) z[NH + h] = be;
    }
    for (int d = 0; d < D; ++d) {
      u[d] = c1[d];
      for (int m = 0; m < Zin; ++m) u[d] += W1[size_t(d) * Zin + m] * z[m];
    }
    for (int h = 0; h < NH; ++h) {
      o[h] = c2[h];
      for (int d = 0; d < D; ++d) o[h] += W2[size_t(h) * D + d] * activation(u[d], s.dape_activation);
    }
  };

  AttentionReference r{Vec(size_t(B) * T * C, 0.0), Vec(size_t(B) * NH * TT, 0.0), {}};
  Vec z(Zin), u(D), o(NH);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i) {
      const int n = n_keys(i);
      for (int h = 0; h < NH; ++h)
        for (int j = 0; j < n; ++j) {
          double dot = 0;
          for (int c = 0; c < HS; ++c) dot += q[head_at(b, h, i) + c] * k[head_at(b, h, j) + c];
          S[e4(b, h, i, j)] = dot / std::sqrt(double(HS));
        }
      std::vector<Vec> logits(NH, Vec(n));
      for (int j = 0; j < n; ++j) {
        if (dape) mlp(b, i, j, z, u, o);
        for (int h = 0; h < NH; ++h)
          logits[h][j] = S[e4(b, h, i, j)] + (residual ? beta[e3(h, i, j)] : 0.0) + (dape ? o[h] : 0.0);
      }
      for (int h = 0; h < NH; ++h) {
        const double mx = *std::max_element(logits[h].begin(), logits[h].end());
        double sum = 0;
        for (int j = 0; j < n; ++j) sum += std::exp(logits[h][j] - mx);
        for (int j = 0; j < n; ++j) {
          const double pij = std::exp(logits[h][j] - mx) / sum;
          r.probs[e4(b, h, i, j)] = pij;
          for (int c = 0; c < HS; ++c)
            r.out[(size_t(b) * T + i) * C + h * HS + c] += pij * v[head_at(b, h, j) + c];
        }
      }
    }

  // Step 1: dv, and g = dLoss/dlogits.
  Vec dq(q.size(), 0.0), dk(q.size(), 0.0), dv(q.size(), 0.0), g(S.size(), 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < T; ++i) {
        const double* doi = dout.data() + (size_t(b) * T + i) * C + h * HS;
        double delta = 0;
        for (int j = 0; j < n_keys(i); ++j) {
          const double pij = r.probs[e4(b, h, i, j)];
          double dp = 0;
          for (int c = 0; c < HS; ++c) {
            dp += doi[c] * v[head_at(b, h, j) + c];
            dv[head_at(b, h, j) + c] += pij * doi[c];
          }
          g[e4(b, h, i, j)] = dp;
          delta += pij * dp;
        }
        for (int j = 0; j < n_keys(i); ++j)
          g[e4(b, h, i, j)] = r.probs[e4(b, h, i, j)] * (g[e4(b, h, i, j)] - delta);
      }

  // Step 2: the DAPE MLP, routing to ds and dbeta.
  Vec ds = g, dbeta(size_t(NH) * TT, 0.0);
  Vec dW1(W1.size(), 0.0), dc1(c1.size(), 0.0), dW2(W2.size(), 0.0), dc2(c2.size(), 0.0);
  Vec gu(D), gz(Zin);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i)
      for (int j = 0; j < n_keys(i); ++j) {
        if (!dape) {
          for (int h = 0; h < NH; ++h) dbeta[e3(h, i, j)] += g[e4(b, h, i, j)];
          continue;
        }
        mlp(b, i, j, z, u, o);
        for (int d = 0; d < D; ++d) {
          double ga = 0;
          for (int h = 0; h < NH; ++h) {
            const double gh = g[e4(b, h, i, j)];
            dW2[size_t(h) * D + d] += gh * activation(u[d], s.dape_activation);
            ga += W2[size_t(h) * D + d] * gh;
          }
          gu[d] = ga * activation_derivative(u[d], s.dape_activation);
          dc1[d] += gu[d];
          for (int m = 0; m < Zin; ++m) dW1[size_t(d) * Zin + m] += gu[d] * z[m];
        }
        for (int m = 0; m < Zin; ++m) {
          gz[m] = 0;
          for (int d = 0; d < D; ++d) gz[m] += W1[size_t(d) * Zin + m] * gu[d];
        }
        for (int h = 0; h < NH; ++h) {
          const double gh = g[e4(b, h, i, j)];
          dc2[h] += gh;
          ds[e4(b, h, i, j)] = gh + gz[h];
          if (s.dape == DapeMode::concat_residual) dbeta[e3(h, i, j)] += gh + gz[NH + h];
          if (s.dape == DapeMode::concat) dbeta[e3(h, i, j)] += gz[NH + h];
          if (s.dape == DapeMode::add_residual) dbeta[e3(h, i, j)] += gh + gz[h];
        }
      }
  if (dape) {
    r.grads["dape_fc1_weight"] = dW1, r.grads["dape_fc1_bias"] = dc1;
    r.grads["dape_fc2_weight"] = dW2, r.grads["dape_fc2_bias"] = dc2;
  }

  // Step 3: q and k, RoPE back, dqkv.
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < T; ++i)
        for (int j = 0; j < n_keys(i); ++j) {
          const double gij = ds[e4(b, h, i, j)] / std::sqrt(double(HS));
          for (int c = 0; c < HS; ++c) {
            dq[head_at(b, h, i) + c] += gij * k[head_at(b, h, j) + c];
            dk[head_at(b, h, j) + c] += gij * q[head_at(b, h, i) + c];
          }
        }
  if (s.pe == PeKind::rope) {
    at::reference_rope(dq, s.rope_positions, B * NH, T, HS, -1);
    at::reference_rope(dk, s.rope_positions, B * NH, T, HS, -1);
  }
  Vec dqkv(qkv.size());
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < NH; ++h)
        for (int c = 0; c < HS; ++c) {
          const size_t dst = (size_t(b) * T + t) * 3 * C + h * HS + c;
          dqkv[dst] = dq[head_at(b, h, t) + c], dqkv[dst + C] = dk[head_at(b, h, t) + c];
          dqkv[dst + 2 * C] = dv[head_at(b, h, t) + c];
        }
  r.grads["qkv"] = dqkv;

  // Step 4: the bias parameters from G = dbeta summed over the batch.
  auto distance = [&](int i, int j) {
    const int d = std::abs(i - j);
    return s.distance_ladder ? s.distance_ladder[d] : d;
  };
  const std::vector<std::string> sides =
      s.causal ? std::vector<std::string>{""} : std::vector<std::string>{"", "_right"};
  if (s.pe == PeKind::kerple) {
    for (const std::string& side : sides)
      r.grads["kerple_p" + side] = r.grads["kerple_a" + side] = Vec(NH, 0.0);
    for (int i = 0; i < T; ++i)
      for (int j = 0; j < n_keys(i); ++j) {
        const std::string side = j > i ? "_right" : "";
        const double delta = distance(i, j);
        for (int h = 0; h < NH; ++h) {
          const double pc = std::max(p.at("kerple_p" + side)[h], 0.01),
                       ac = std::max(p.at("kerple_a" + side)[h], 0.01);
          const double G = dbeta[e3(h, i, j)];
          r.grads["kerple_p" + side][h] -= G * std::log1p(ac * delta);
          r.grads["kerple_a" + side][h] -= G * pc * delta / (1 + ac * delta);
        }
      }
  } else if (s.pe == PeKind::t5) {
    Vec& dtable = r.grads["t5_table"] = Vec(size_t(kernels::kT5Buckets) * NH, 0.0);
    for (int i = 0; i < T; ++i)
      for (int j = 0; j < n_keys(i); ++j) {
        const int bucket = at::reference_t5_bucket(j > i ? -distance(i, j) : distance(i, j), s.causal);
        for (int h = 0; h < NH; ++h) dtable[bucket * NH + h] += std::sqrt(double(HS)) * dbeta[e3(h, i, j)];
      }
  } else if (s.pe == PeKind::fire) {
    // r = psi(delta) / N, N = psi(M) + 1e-6, M = max(largest distance of row i, |lambda L0|), psi(x) =
    // ln(1 + |c| x): DAPE-SPEC §3.5 (at a tie dM/dLambda is shared half and half).
    const int DF = s.fire_width;
    const kernels::Activation act = dape ? kernels::Activation::leaky_relu : kernels::Activation::relu;
    const double c = p.at("fire_c")[0], lambda = p.at("fire_lambda")[0], abs_c = std::abs(c);
    const double Lambda = std::abs(lambda * s.fire_L0);
    for (const std::string& side : sides)
      for (const char* name : {"fire_fc1_weight", "fire_fc1_bias", "fire_fc2_weight", "fire_fc2_bias"})
        r.grads[name + side] = Vec(p.at(name + side).size(), 0.0);
    double dc = 0, dlambda = 0;
    for (int i = 0; i < T; ++i) {
      const int last = s.causal ? i : std::max(i, T - 1 - i);
      const double largest = s.distance_ladder ? s.distance_ladder[last] : last;
      const double M = std::max(largest, Lambda), N = std::log1p(abs_c * M) + 1e-6;
      const double share = Lambda > largest ? 1.0 : (Lambda == largest ? 0.5 : 0.0);
      for (int j = 0; j < n_keys(i); ++j) {
        const std::string side = j > i ? "_right" : "";
        const Vec &w1 = p.at("fire_fc1_weight" + side), &b1 = p.at("fire_fc1_bias" + side);
        const Vec& w2 = p.at("fire_fc2_weight" + side);
        const double delta = distance(i, j), rr = std::log1p(abs_c * delta) / N;
        double gamma_r = 0;
        for (int kk = 0; kk < DF; ++kk) {
          const double y = w1[kk] * rr + b1[kk];
          double gamma = 0;
          for (int h = 0; h < NH; ++h) {
            const double G = dbeta[e3(h, i, j)];
            r.grads["fire_fc2_weight" + side][size_t(h) * DF + kk] += G * activation(y, act);
            gamma += w2[size_t(h) * DF + kk] * G;
          }
          const double gy = gamma * activation_derivative(y, act);
          r.grads["fire_fc1_weight" + side][kk] += gy * rr;
          r.grads["fire_fc1_bias" + side][kk] += gy;
          gamma_r += w1[kk] * gy;
        }
        for (int h = 0; h < NH; ++h) r.grads["fire_fc2_bias" + side][h] += dbeta[e3(h, i, j)];
        const double sgn_c = double((c > 0) - (c < 0)), sgn_l = double((lambda > 0) - (lambda < 0));
        dc += gamma_r * sgn_c * (delta / (1 + abs_c * delta) - rr * M / (1 + abs_c * M)) / N;
        dlambda += gamma_r * -(rr / N) * abs_c / (1 + abs_c * M) * sgn_l * s.fire_L0 * share;
      }
    }
    r.grads["fire_c"] = {dc};
    r.grads["fire_lambda"] = {dlambda};
  }
  return r;
}

}  // namespace dape::cuda_test
