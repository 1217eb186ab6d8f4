// CPU positional encodings: RoPE and the additive biases (DAPE-SPEC §3, docs/positional-encodings.md).
// Parameter-gradient sums run per query row into a row buffer, then rows are added in order, so the
// result does not depend on the number of threads.
#include "kernels/positional.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/parallel.h"
#include "kernels/error.h"

namespace dape::kernels {
using cpu::activation_derivative;
using cpu::activation_forward;

namespace {

// Keys with j <= i use the left parameter set, keys with j > i the right one (bidirectional only).
bool is_right(int i, int j) {
  return j > i;
}

// One past the last key index row i reads.
int key_end(int i, int T, bool causal) {
  return causal ? i + 1 : T;
}

// The distance the PEs read where the deterministic form reads d: the ladder's s_d, or d itself.
int ladder_at(const BiasSpec& s, int d) {
  return s.distance_ladder ? s.distance_ladder[d] : d;
}

// The distance of query i to key j as the PEs read it.
int distance(const BiasSpec& s, int i, int j) {
  return ladder_at(s, std::abs(i - j));
}

// A ladder starts at s_0 = 0, a query's own key; anything else is a caller bug (positions passed as a
// ladder).
void check_ladder(const BiasSpec& s) {
  DAPE_ASSERT(!s.distance_ladder || s.distance_ladder[0] == 0);
}

template <typename F>
F clamp_kerple(F x) {
  return std::max(x, F(kKerpleMin));
}

// FIRE's row quantities: M(i) = max(m_i, Lambda) with m_i the largest distance row i sees (the ladder
// value of its farthest key), N(i) = psi(M(i)) + 1e-6, and the share of dM/dLambda (1, 1/2 at a tie, 0).
template <typename F>
struct FireRow {
  F M, N, lambda_share;
};

template <typename F>
FireRow<F> fire_row(int i, const BiasSpec& s, F abs_c, F Lambda) {
  const F largest = F(ladder_at(s, s.causal ? i : std::max(i, s.T - 1 - i)));
  FireRow<F> row;
  row.M = std::max(largest, Lambda);
  row.lambda_share = Lambda > largest ? F(1) : (Lambda == largest ? F(0.5) : F(0));
  row.N = std::log1p(abs_c * row.M) + F(1e-6);
  return row;
}

// The signed distance i - j that T5 buckets, its magnitude read from the ladder.
int t5_offset(const BiasSpec& s, int i, int j) {
  return i >= j ? distance(s, i, j) : -distance(s, i, j);
}

template <typename F>
F sign(F x) {
  return F((x > 0) - (x < 0));
}

}  // namespace

std::vector<double> alibi_slopes(int NH) {
  DAPE_ASSERT(NH >= 1);
  int c = 1;
  while (c * 2 <= NH) c *= 2;
  std::vector<double> slopes;
  for (int k = 1; k <= c; ++k) slopes.push_back(std::exp2(-8.0 * k / c));
  for (int k = 1; k <= NH - c; ++k) slopes.push_back(std::exp2(-4.0 * (2 * k - 1) / c));
  return slopes;
}

int t5_bucket(int n, bool causal) {
  // log2 of a power of two is exact, so distances on a bucket boundary (16, 32, 64) land exactly.
  if (causal) {
    const int a = std::max(n, 0);
    if (a < 16) return a;
    return std::min(31, 16 + static_cast<int>(std::floor(16.0 * std::log2(a / 16.0) / 3.0)));
  }
  const int a = std::abs(n);
  const int side = n < 0 ? 16 : 0;  // n = i - j < 0: the key is after the query
  if (a < 8) return side + a;
  return side + std::min(15, 8 + static_cast<int>(std::floor(2.0 * std::log2(a / 8.0))));
}

template <typename F>
void bias_forward_rows(F* bias, const PositionalTensors<const F*>& p, const BiasSpec& s, int row_begin,
                       int row_end) {
  const int NH = s.NH, T = s.T, rows = row_end - row_begin;
  DAPE_ASSERT(0 <= row_begin && row_begin <= row_end && row_end <= T);
  const size_t head_stride = size_t(rows) * T;  // the head stride of this block
  check_ladder(s);
  std::fill(bias, bias + NH * head_stride, F(0));
  switch (s.kind) {
    case PeKind::alibi: {
      const std::vector<double> m = alibi_slopes(NH);
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(rows) * T * NH))
      for (int i = row_begin; i < row_end; ++i)
        for (int j = 0; j < key_end(i, T, s.causal); ++j)
          for (int h = 0; h < NH; ++h) {
            double b = -m[h] * distance(s, i, j);
            if (!s.causal && j < i) b += 0.5 * m[h];
            bias[h * head_stride + size_t(i - row_begin) * T + j] = F(b);
          }
      break;
    }
    case PeKind::kerple: {
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(rows) * T * NH))
      for (int i = row_begin; i < row_end; ++i)
        for (int j = 0; j < key_end(i, T, s.causal); ++j) {
          const bool right = is_right(i, j);
          const F* pp = right ? p.kerple_p_right : p.kerple_p;
          const F* pa = right ? p.kerple_a_right : p.kerple_a;
          const F delta = F(distance(s, i, j));
          for (int h = 0; h < NH; ++h)
            bias[h * head_stride + size_t(i - row_begin) * T + j] =
                -clamp_kerple(pp[h]) * std::log1p(clamp_kerple(pa[h]) * delta);
        }
      break;
    }
    case PeKind::fire: {
      const int DF = s.fire_width;
      const F abs_c = std::abs(*p.fire_c), Lambda = std::abs(*p.fire_lambda * F(s.fire_L0));
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(rows) * T * NH))
      for (int i = row_begin; i < row_end; ++i) {
        std::vector<F> hidden(DF);
        const FireRow<F> row = fire_row(i, s, abs_c, Lambda);
        for (int j = 0; j < key_end(i, T, s.causal); ++j) {
          const bool right = is_right(i, j);
          const F* w1 = right ? p.fire_fc1_weight_right : p.fire_fc1_weight;
          const F* b1 = right ? p.fire_fc1_bias_right : p.fire_fc1_bias;
          const F* w2 = right ? p.fire_fc2_weight_right : p.fire_fc2_weight;
          const F* b2 = right ? p.fire_fc2_bias_right : p.fire_fc2_bias;
          const F r = std::log1p(abs_c * F(distance(s, i, j))) / row.N;
          for (int k = 0; k < DF; ++k) hidden[k] = activation_forward(w1[k] * r + b1[k], s.fire_activation);
          for (int h = 0; h < NH; ++h) {
            F acc = b2[h];
            for (int k = 0; k < DF; ++k) acc += w2[h * DF + k] * hidden[k];
            bias[h * head_stride + size_t(i - row_begin) * T + j] = acc;
          }
        }
      }
      break;
    }
    case PeKind::t5: {
      const F scale = std::sqrt(F(s.HS));
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(rows) * T * NH))
      for (int i = row_begin; i < row_end; ++i)
        for (int j = 0; j < key_end(i, T, s.causal); ++j) {
          const int bucket = t5_bucket(t5_offset(s, i, j), s.causal);
          for (int h = 0; h < NH; ++h)
            bias[h * head_stride + size_t(i - row_begin) * T + j] = scale * p.t5_table[bucket * NH + h];
        }
      break;
    }
    case PeKind::none:
    case PeKind::rope:
      DAPE_ASSERT(false);
  }
}

template <typename F>
void bias_forward(F* bias, const PositionalTensors<const F*>& p, const BiasSpec& s) {
  bias_forward_rows(bias, p, s, 0, s.T);
}

template <typename F>
void bias_backward(const PositionalTensors<F*>& g, const F* G, const PositionalTensors<const F*>& p,
                   const BiasSpec& s) {
  const int NH = s.NH, T = s.T;
  const size_t TT = size_t(T) * T;
  check_ladder(s);
  switch (s.kind) {
    case PeKind::alibi:
      return;
    case PeKind::kerple: {
      // Row buffer: [dp_left, da_left, dp_right, da_right], each NH.
      const int width = 4 * NH;
      std::vector<F> rows(size_t(T) * width, F(0));
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(T) * T * NH))
      for (int i = 0; i < T; ++i) {
        F* acc = rows.data() + size_t(i) * width;
        for (int j = 0; j < key_end(i, T, s.causal); ++j) {
          const bool right = is_right(i, j);
          const F* pp = right ? p.kerple_p_right : p.kerple_p;
          const F* pa = right ? p.kerple_a_right : p.kerple_a;
          F* dp = acc + (right ? 2 * NH : 0);
          F* da = dp + NH;
          const F delta = F(distance(s, i, j));
          for (int h = 0; h < NH; ++h) {
            const F gij = G[h * TT + size_t(i) * T + j];
            const F pc = clamp_kerple(pp[h]), ac = clamp_kerple(pa[h]);
            dp[h] -= gij * std::log1p(ac * delta);
            da[h] -= gij * pc * delta / (F(1) + ac * delta);
          }
        }
      }
      for (int i = 0; i < T; ++i) {
        const F* acc = rows.data() + size_t(i) * width;
        for (int h = 0; h < NH; ++h) {
          g.kerple_p[h] += acc[h];
          g.kerple_a[h] += acc[NH + h];
          if (!s.causal) {
            g.kerple_p_right[h] += acc[2 * NH + h];
            g.kerple_a_right[h] += acc[3 * NH + h];
          }
        }
      }
      return;
    }
    case PeKind::fire: {
      const int DF = s.fire_width;
      // Row buffer per side: [dW1 (DF), db1 (DF), dW2 (NH*DF), db2 (NH)], then dc, dlambda.
      const int side = 2 * DF + NH * DF + NH;
      const int width = 2 * side + 2;
      std::vector<F> rows(size_t(T) * width, F(0));
      const F c = *p.fire_c, lambda = *p.fire_lambda;
      const F abs_c = std::abs(c), Lambda = std::abs(lambda * F(s.fire_L0));
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(T) * T * NH))
      for (int i = 0; i < T; ++i) {
        F* acc = rows.data() + size_t(i) * width;
        std::vector<F> y(DF), gamma(DF);
        const FireRow<F> row = fire_row(i, s, abs_c, Lambda);
        for (int j = 0; j < key_end(i, T, s.causal); ++j) {
          const bool right = is_right(i, j);
          const F* w1 = right ? p.fire_fc1_weight_right : p.fire_fc1_weight;
          const F* b1 = right ? p.fire_fc1_bias_right : p.fire_fc1_bias;
          const F* w2 = right ? p.fire_fc2_weight_right : p.fire_fc2_weight;
          F* dw1 = acc + (right ? side : 0);
          F* db1 = dw1 + DF;
          F* dw2 = db1 + DF;
          F* db2 = dw2 + NH * DF;
          const F delta = F(distance(s, i, j));
          const F r = std::log1p(abs_c * delta) / row.N;
          for (int k = 0; k < DF; ++k) y[k] = w1[k] * r + b1[k];
          std::fill(gamma.begin(), gamma.end(), F(0));
          for (int h = 0; h < NH; ++h) {
            const F gij = G[h * TT + size_t(i) * T + j];
            db2[h] += gij;
            for (int k = 0; k < DF; ++k) {
              dw2[h * DF + k] += gij * activation_forward(y[k], s.fire_activation);
              gamma[k] += w2[h * DF + k] * gij;
            }
          }
          F gamma_r = 0;
          for (int k = 0; k < DF; ++k) {
            const F gy = gamma[k] * activation_derivative(y[k], s.fire_activation);
            dw1[k] += gy * r;
            db1[k] += gy;
            gamma_r += w1[k] * gy;
          }
          const F dr_dc =
              sign(c) * (delta / (F(1) + abs_c * delta) - r * row.M / (F(1) + abs_c * row.M)) / row.N;
          const F dr_dlambda =
              -(r / row.N) * abs_c / (F(1) + abs_c * row.M) * sign(lambda) * F(s.fire_L0) * row.lambda_share;
          acc[2 * side] += gamma_r * dr_dc;
          acc[2 * side + 1] += gamma_r * dr_dlambda;
        }
      }
      for (int i = 0; i < T; ++i) {
        const F* acc = rows.data() + size_t(i) * width;
        for (int r = 0; r < (s.causal ? 1 : 2); ++r) {
          const F* a = acc + r * side;
          F* dw1 = r ? g.fire_fc1_weight_right : g.fire_fc1_weight;
          F* db1 = r ? g.fire_fc1_bias_right : g.fire_fc1_bias;
          F* dw2 = r ? g.fire_fc2_weight_right : g.fire_fc2_weight;
          F* db2 = r ? g.fire_fc2_bias_right : g.fire_fc2_bias;
          for (int k = 0; k < DF; ++k) dw1[k] += a[k], db1[k] += a[DF + k];
          for (int k = 0; k < NH * DF; ++k) dw2[k] += a[2 * DF + k];
          for (int h = 0; h < NH; ++h) db2[h] += a[2 * DF + NH * DF + h];
        }
        *g.fire_c += acc[2 * side];
        *g.fire_lambda += acc[2 * side + 1];
      }
      return;
    }
    case PeKind::t5: {
      const int width = kT5Buckets * NH;
      std::vector<F> rows(size_t(T) * width, F(0));
      const F scale = std::sqrt(F(s.HS));
#pragma omp parallel for schedule(static) if (cpu::worth_parallel(size_t(T) * T * NH))
      for (int i = 0; i < T; ++i) {
        F* acc = rows.data() + size_t(i) * width;
        for (int j = 0; j < key_end(i, T, s.causal); ++j) {
          const int bucket = t5_bucket(t5_offset(s, i, j), s.causal);
          for (int h = 0; h < NH; ++h) acc[bucket * NH + h] += scale * G[h * TT + size_t(i) * T + j];
        }
      }
      for (int i = 0; i < T; ++i)
        for (int k = 0; k < width; ++k) g.t5_table[k] += rows[size_t(i) * width + k];
      return;
    }
    case PeKind::none:
    case PeKind::rope:
      DAPE_ASSERT(false);
  }
}

namespace {

// Rotates each row t of x (BH,T,HS) by angle p_t * theta_m, theta_m = 10000^(-2m/HS), p_t = positions[t]
// or t; direction -1 inverts.
template <typename F>
void rope_rotate(F* x, const int32_t* positions, int BH, int T, int HS, int direction) {
  const int half = HS / 2;
  std::vector<F> cosines(size_t(T) * half), sines(size_t(T) * half);
  for (int t = 0; t < T; ++t)
    for (int m = 0; m < half; ++m) {
      const double angle = (positions ? positions[t] : t) * std::pow(10000.0, -2.0 * m / HS);
      cosines[size_t(t) * half + m] = F(std::cos(angle));
      sines[size_t(t) * half + m] = F(direction * std::sin(angle));
    }
#pragma omp parallel for collapse(2) schedule(static) if (cpu::worth_parallel(size_t(BH) * T * HS))
  for (int bh = 0; bh < BH; ++bh)
    for (int t = 0; t < T; ++t) {
      F* row = x + (size_t(bh) * T + t) * HS;
      const F* c = cosines.data() + size_t(t) * half;
      const F* s = sines.data() + size_t(t) * half;
      for (int m = 0; m < half; ++m) {
        const F a = row[m], b = row[m + half];
        row[m] = a * c[m] - b * s[m];
        row[m + half] = b * c[m] + a * s[m];
      }
    }
}

}  // namespace

template <typename F>
void rope_forward(F* x, const int32_t* positions, int BH, int T, int HS) {
  rope_rotate(x, positions, BH, T, HS, +1);
}

template <typename F>
void rope_backward(F* dx, const int32_t* positions, int BH, int T, int HS) {
  rope_rotate(dx, positions, BH, T, HS, -1);
}

namespace {

// Both samplers draw T distinct values from a range of max_position values.
void check_sample_size(int T, int max_position) {
  if (T < 1 || T > max_position)
    throw Error("randomized positions: cannot draw T = " + std::to_string(T) +
                " distinct positions below the maximum position L = " + std::to_string(max_position) +
                "; randomized positions need 1 <= T <= L: raise L (the maximum randomized position) or "
                "shorten the sequences");
}

// k distinct values drawn uniformly from {lo..lo+n-1}, in increasing order. Floyd's algorithm makes k
// draws whether k is small or close to n; a bitmap of the n candidates gives membership in O(1) and the
// sorted order by one scan.
std::vector<int32_t> sample_sorted_distinct(int k, int lo, int n, Rng& rng) {
  std::vector<bool> taken(n, false);
  for (int j = n - k; j < n; ++j) {
    const int t = static_cast<int>(rng.below(uint64_t(j) + 1));
    taken[taken[t] ? j : t] = true;
  }
  std::vector<int32_t> values;
  values.reserve(k);
  for (int v = 0; v < n; ++v)
    if (taken[v]) values.push_back(lo + v);
  return values;
}

}  // namespace

std::vector<int32_t> sample_distance_ladder(int T, int max_position, Rng& rng) {
  check_sample_size(T, max_position);
  std::vector<int32_t> ladder = sample_sorted_distinct(T - 1, 1, max_position - 1, rng);
  ladder.insert(ladder.begin(), 0);
  return ladder;
}

std::vector<int32_t> sample_positions(int T, int max_position, Rng& rng) {
  check_sample_size(T, max_position);
  return sample_sorted_distinct(T, 0, max_position, rng);
}

#define DAPE_INSTANTIATE(F)                                                                                  \
  template void bias_forward<F>(F*, const PositionalTensors<const F*>&, const BiasSpec&);                    \
  template void bias_forward_rows<F>(F*, const PositionalTensors<const F*>&, const BiasSpec&, int, int);     \
  template void bias_backward<F>(const PositionalTensors<F*>&, const F*, const PositionalTensors<const F*>&, \
                                 const BiasSpec&);                                                           \
  template void rope_forward<F>(F*, const int32_t*, int, int, int);                                          \
  template void rope_backward<F>(F*, const int32_t*, int, int, int);
DAPE_INSTANTIATE(float)
DAPE_INSTANTIATE(double)
#undef DAPE_INSTANTIATE

}  // namespace dape::kernels
