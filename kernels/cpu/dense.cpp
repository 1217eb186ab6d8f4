// CPU reference of the dense ops in kernels/dense.h: row-parallel OpenMP loops, CBLAS for the matmuls.
//
// Determinism: every parallel loop either owns disjoint output rows or, for a sum over rows into a
// parameter gradient, owns a tile of columns and walks the rows in order. The result of those sums is
// therefore the serial one, whatever the thread count or schedule.
//
// Outside BLAS, every sum (layernorm moments and backward means, softmax normaliser, sums over rows)
// accumulates in double: the float path then loses no accuracy to long sums, only to rounding its
// inputs and outputs.
#include "kernels/dense.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <utility>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/parallel.h"
#include "kernels/error.h"
#include "kernels/random.h"

namespace dape::kernels {
namespace {

// Columns per task in the sums over rows: wide enough for contiguous inner loops, narrow enough that
// a model width of a few hundred still spreads over several threads.
constexpr int kColumnTile = 64;

using cpu::gemm;

size_t at(int row, int col, int width) {
  return static_cast<size_t>(row) * width + col;
}

}  // namespace

template <typename F>
void encoder_forward(F* out, const int32_t* tokens, const F* wte, int N, int C) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * C))
  for (int n = 0; n < N; ++n) {
    const F* src = wte + at(tokens[n], 0, C);
    std::copy(src, src + C, out + at(n, 0, C));
  }
}

// Rows sharing a token add into the same dwte row, so threads split columns, not rows.
template <typename F>
void encoder_backward(F* dwte, const F* dout, const int32_t* tokens, int N, int C) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * C))
  for (int c0 = 0; c0 < C; c0 += kColumnTile) {
    const int c1 = std::min(C, c0 + kColumnTile);
    for (int n = 0; n < N; ++n) {
      F* dst = dwte + at(tokens[n], 0, C);
      const F* src = dout + at(n, 0, C);
      for (int c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

template <typename F>
void layernorm_forward(F* out, F* mean, F* rstd, const F* inp, const F* weight, const F* bias, int N, int C) {
  constexpr double eps = 1e-5;
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * C))
  for (int n = 0; n < N; ++n) {
    const F* x = inp + at(n, 0, C);
    F* y = out + at(n, 0, C);
    double sum = 0;
    for (int c = 0; c < C; ++c) sum += x[c];
    const double m = sum / C;
    // Two passes: the variance from squares of centred values does not cancel catastrophically.
    double sq = 0;
    for (int c = 0; c < C; ++c) sq += (x[c] - m) * (x[c] - m);
    const double s = 1.0 / std::sqrt(sq / C + eps);
    for (int c = 0; c < C; ++c) y[c] = static_cast<F>((x[c] - m) * s * weight[c] + bias[c]);
    mean[n] = static_cast<F>(m);
    rstd[n] = static_cast<F>(s);
  }
}

// With xhat = (x - mean) rstd and g = dout * weight, per row:
//   dinp = rstd (g - mean(g) - xhat mean(g xhat)).
template <typename F>
void layernorm_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight,
                        const F* mean, const F* rstd, int N, int C) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * C))
  for (int n = 0; n < N; ++n) {
    const F* x = inp + at(n, 0, C);
    const F* dy = dout + at(n, 0, C);
    F* dx = dinp + at(n, 0, C);
    const double m = mean[n], s = rstd[n];
    double g_sum = 0, gx_sum = 0;
    for (int c = 0; c < C; ++c) {
      const double g = static_cast<double>(dy[c]) * weight[c];
      g_sum += g;
      gx_sum += g * (x[c] - m) * s;
    }
    const double g_mean = g_sum / C, gx_mean = gx_sum / C;
    for (int c = 0; c < C; ++c) {
      const double g = static_cast<double>(dy[c]) * weight[c];
      dx[c] += static_cast<F>(s * (g - g_mean - (x[c] - m) * s * gx_mean));
    }
  }
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * C))
  for (int c0 = 0; c0 < C; c0 += kColumnTile) {
    const int c1 = std::min(C, c0 + kColumnTile);
    double dw[kColumnTile] = {}, db[kColumnTile] = {};
    for (int n = 0; n < N; ++n) {
      const F* x = inp + at(n, 0, C);
      const F* dy = dout + at(n, 0, C);
      const double m = mean[n], s = rstd[n];
      for (int c = c0; c < c1; ++c) {
        dw[c - c0] += dy[c] * ((x[c] - m) * s);
        db[c - c0] += dy[c];
      }
    }
    for (int c = c0; c < c1; ++c) {
      dweight[c] += static_cast<F>(dw[c - c0]);
      dbias[c] += static_cast<F>(db[c - c0]);
    }
  }
}

template <typename F>
void matmul_forward(F* out, const F* inp, const F* weight, const F* bias, int N, int C, int OC) {
  if (bias != nullptr) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * OC))
    for (int n = 0; n < N; ++n) std::copy(bias, bias + OC, out + at(n, 0, OC));
  }
  // beta = 0 lets BLAS ignore whatever out held before.
  gemm(CblasNoTrans, CblasTrans, N, OC, C, F(1), inp, C, weight, C, bias != nullptr ? F(1) : F(0), out, OC);
}

template <typename F>
void matmul_backward(F* dinp, F* dweight, F* dbias, const F* dout, const F* inp, const F* weight, int N,
                     int C, int OC) {
  gemm(CblasNoTrans, CblasNoTrans, N, C, OC, F(1), dout, OC, weight, C, F(0), dinp, C);
  gemm(CblasTrans, CblasNoTrans, OC, C, N, F(1), dout, OC, inp, C, F(1), dweight, C);
  if (dbias == nullptr) return;
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * OC))
  for (int o0 = 0; o0 < OC; o0 += kColumnTile) {
    const int o1 = std::min(OC, o0 + kColumnTile);
    double sum[kColumnTile] = {};
    for (int n = 0; n < N; ++n) {
      const F* dy = dout + at(n, 0, OC);
      for (int o = o0; o < o1; ++o) sum[o - o0] += dy[o];
    }
    for (int o = o0; o < o1; ++o) dbias[o] += static_cast<F>(sum[o - o0]);
  }
}

template <typename F>
void activation_forward(F* out, const F* inp, size_t n, Activation act) {
  constexpr size_t kChunk = 4096;  // elements per task; each chunk's loop vectorises
  const size_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(n))
  for (size_t c = 0; c < chunks; ++c)
    cpu::activation_forward(out + c * kChunk, inp + c * kChunk, std::min(kChunk, n - c * kChunk), act);
}

template <typename F>
void activation_backward(F* dinp, const F* inp, const F* dout, size_t n, Activation act) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(n))
  for (size_t i = 0; i < n; ++i) dinp[i] = dout[i] * cpu::activation_derivative(inp[i], act);
}

// Sequential on purpose: the mask is a function of (seed, n) alone, whatever the thread count.
template <typename F>
void dropout_forward(F* x, F* mask, double p, size_t n, uint64_t seed) {
  DAPE_ASSERT(p >= 0 && p < 1);
  Rng rng(seed);
  const F keep = static_cast<F>(1.0 / (1.0 - p));
  for (size_t i = 0; i < n; ++i) {
    mask[i] = rng.uniform() < p ? F(0) : keep;
    x[i] *= mask[i];
  }
}

template <typename F>
void dropout_backward(F* dx, const F* mask, size_t n) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(n))
  for (size_t i = 0; i < n; ++i) dx[i] *= mask[i];
}

template <typename F>
void residual_forward(F* out, const F* a, const F* b, size_t n) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(n))
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

namespace {

// Returns (row max, sum of exp(x - max)); subtracting the max keeps every exp in (0, 1].
template <typename F>
std::pair<double, double> softmax_normaliser(const F* x, int V) {
  const double m = *std::max_element(x, x + V);
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += std::exp(x[v] - m);
  return {m, sum};
}

}  // namespace

template <typename F>
void crossentropy_forward(F* losses, const F* logits, const int32_t* targets, int N, int V) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * V))
  for (int n = 0; n < N; ++n) {
    DAPE_ASSERT(targets[n] < V);
    if (targets[n] < 0) {
      losses[n] = F(0);
      continue;
    }
    const F* x = logits + at(n, 0, V);
    const auto [m, sum] = softmax_normaliser(x, V);
    losses[n] = static_cast<F>(std::log(sum) + m - x[targets[n]]);
  }
}

// In place is safe: the row's normaliser is complete before the first write, and each element is
// read just before it is overwritten.
template <typename F>
void crossentropy_backward(F* dlogits, const F* logits, const int32_t* targets, F dloss, int N, int V) {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(N) * V))
  for (int n = 0; n < N; ++n) {
    DAPE_ASSERT(targets[n] < V);
    F* dx = dlogits + at(n, 0, V);
    if (targets[n] < 0) {
      std::fill(dx, dx + V, F(0));
      continue;
    }
    const F* x = logits + at(n, 0, V);
    const auto [m, sum] = softmax_normaliser(x, V);
    const double scale = static_cast<double>(dloss) / sum;
    const int t = targets[n];
    for (int v = 0; v < V; ++v) {
      const double p_scaled = std::exp(x[v] - m) * scale;
      dx[v] = static_cast<F>(v == t ? p_scaled - dloss : p_scaled);
    }
  }
}

#define DAPE_INSTANTIATE_DENSE(F)                                                                        \
  template void encoder_forward<F>(F*, const int32_t*, const F*, int, int);                              \
  template void encoder_backward<F>(F*, const F*, const int32_t*, int, int);                             \
  template void layernorm_forward<F>(F*, F*, F*, const F*, const F*, const F*, int, int);                \
  template void layernorm_backward<F>(F*, F*, F*, const F*, const F*, const F*, const F*, const F*, int, \
                                      int);                                                              \
  template void matmul_forward<F>(F*, const F*, const F*, const F*, int, int, int);                      \
  template void matmul_backward<F>(F*, F*, F*, const F*, const F*, const F*, int, int, int);             \
  template void activation_forward<F>(F*, const F*, size_t, Activation);                                 \
  template void activation_backward<F>(F*, const F*, const F*, size_t, Activation);                      \
  template void dropout_forward<F>(F*, F*, double, size_t, uint64_t);                                    \
  template void dropout_backward<F>(F*, const F*, size_t);                                               \
  template void residual_forward<F>(F*, const F*, const F*, size_t);                                     \
  template void crossentropy_forward<F>(F*, const F*, const int32_t*, int, int);                         \
  template void crossentropy_backward<F>(F*, const F*, const int32_t*, F, int, int);

DAPE_INSTANTIATE_DENSE(float)
DAPE_INSTANTIATE_DENSE(double)
#undef DAPE_INSTANTIATE_DENSE

}  // namespace dape::kernels
