// The attention test harness shared by the kernel tests (test_attention.cpp,
// test_randomized_positions.cpp): the tiny shapes, independent reference implementations of DAPE-SPEC §3
// and §4 (and the bidirectional rules and randomized positions of CHE.md §3.6), buffers that run the ops
// under test, parameter draws away from activation kinks, and the finite-difference gradient check.
// Nothing here calls an op under test to compute an expected value.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "kernels/attention.h"

namespace dape::kernels::attention_test {

using Vec = std::vector<double>;
template <typename F>
using Tensors = std::map<std::string, std::vector<F>>;

// The "tiny-odd" shape: T not a power of two, H not a power of two, small DAPE and FIRE widths.
constexpr int kB = 2, kT = 7, kNH = 3, kHS = 4, kD = 5, kDF = 5;
// Lambda L0 = 3.3 sits between row indices, so no row ties the FIRE threshold (a kink).
constexpr double kFireL0 = 3, kFireLambda = 1.1;
constexpr double kFdEps = 1e-4;
// Pre-activations of ReLU / LeakyReLU units must stay this far from 0, so that no finite-difference step
// (which moves them by at most 2 kFdEps times an O(1) sensitivity) crosses the kink.
constexpr double kKinkMargin = 1e-3;

// Checks d loss / d x for every tensor x of p against `analytic`; asserts each tensor's relative error
// (testing::relative_error, with the largest gradient as model scale for true-zero gradients) < 1e-6.
// Returns the worst error and names its tensor.
inline double check_all_gradients(const std::function<double()>& loss, Tensors<double>& p,
                                  const Tensors<double>& analytic, const std::string& label,
                                  std::string* worst_tensor) {
  std::map<std::string, testing::GradCheckResult> results;
  double model_max = 0, worst = 0;
  for (auto& [name, x] : p) {
    results[name] = testing::check_gradient(loss, x.data(), x.size(), analytic.at(name).data(), kFdEps);
    model_max = std::max(model_max, results[name].max_ref);
  }
  for (const auto& [name, r] : results) {
    const double rel = testing::relative_error(r.max_abs_err, r.max_ref, model_max);
    EXPECT_LT(rel, 1e-6) << label << " d" << name << ": max abs err " << r.max_abs_err << ", max |ref| "
                         << r.max_ref;
    if (rel >= worst) worst = rel, *worst_tensor = name;
  }
  return worst;
}

// Uniform in [lo, hi), rounded to float so that float and double runs read identical inputs.
inline Vec random_vec(std::mt19937_64& rng, size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double& x : v) x = static_cast<float>(dist(rng));
  return v;
}

template <typename F>
Tensors<F> convert(const Tensors<double>& t) {
  Tensors<F> r;
  for (const auto& [name, v] : t) r[name] = std::vector<F>(v.begin(), v.end());
  return r;
}

template <typename F>
double dot(const std::vector<F>& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

template <typename F>
double max_abs(const std::vector<F>& v) {
  double m = 0;
  for (F x : v) m = std::max(m, std::abs(double(x)));
  return m;
}

// Max |a - b|; infinite when either holds a NaN.
template <typename F>
double max_abs_diff(const std::vector<F>& a, const Vec& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - b[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    m = std::max(m, d);
  }
  return m;
}

inline bool all_finite(const Vec& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

inline const char* name_of(PeKind k) {
  static const char* names[] = {"none", "rope", "alibi", "kerple", "fire", "t5"};
  return names[int(k)];
}
inline const char* name_of(DapeMode m) {
  static const char* names[] = {"off", "concat_residual", "concat", "add_residual", "scores_only"};
  return names[int(m)];
}
inline const char* name_of(Activation a) {
  static const char* names[] = {"leaky_relu", "relu", "gelu"};
  return names[int(a)];
}

inline std::string describe(const AttentionSpec& s) {
  std::string d = std::string(name_of(s.pe)) + "+" + name_of(s.dape);
  if (s.dape != DapeMode::off) d += std::string("/") + name_of(s.dape_activation);
  if (s.distance_ladder) d += " ladder";
  if (s.rope_positions) d += " positions";
  return d + (s.causal ? " causal" : " bidirectional");
}

inline AttentionSpec tiny_spec(PeKind pe, DapeMode dape, bool causal,
                               Activation act = Activation::leaky_relu) {
  AttentionSpec s;
  s.B = kB, s.T = kT, s.NH = kNH, s.HS = kHS;
  s.causal = causal, s.pe = pe, s.dape = dape;
  s.dape_width = kD, s.dape_activation = act;
  s.fire_width = kDF, s.fire_L0 = kFireL0;
  return s;
}

inline bool has_bias(PeKind k) {
  return k == PeKind::alibi || k == PeKind::kerple || k == PeKind::fire || k == PeKind::t5;
}

// ---- Independent reference implementations of the spec's formulas -----------------------------------

// DAPE-SPEC §3.3, phrased as the original builds it: the geometric list of the largest power of two
// c <= H, then every other member (the 1st, 3rd, ...) of the 2c-head list.
inline Vec reference_alibi_slopes(int H) {
  int c = 1;
  while (2 * c <= H) c *= 2;
  auto geometric = [](int n) {
    Vec m;
    for (int k = 1; k <= n; ++k) m.push_back(double(std::pow(2.0L, -8.0L * k / n)));
    return m;
  };
  Vec slopes = geometric(c);
  const Vec twice = geometric(2 * c);
  for (size_t k = 0; int(slopes.size()) < H; k += 2) slopes.push_back(twice[k]);
  return slopes;
}

// DAPE-SPEC §3.6 by exact integer comparisons. Causal: bucket 16 + k starts where
// 16 ln(n/16) / ln 8 >= k, i.e. n^16 >= 2^(64 + 3k). Bidirectional: 8 + k starts where
// 8 ln(n/8) / ln 16 >= k, i.e. n^2 >= 64 * 2^k; keys after the query (n < 0) add 16.
inline int reference_t5_bucket(int n, bool causal) {
  if (causal) {
    const int a = std::max(n, 0);
    if (a < 16) return a;
    if (a >= 256) return 31;  // n >= 113 saturates; n^16 below fits 128 bits
    unsigned __int128 power = 1;
    for (int e = 0; e < 16; ++e) power *= unsigned(a);
    int k = 0;
    while (k < 15 && power >= (static_cast<unsigned __int128>(1) << (64 + 3 * (k + 1)))) ++k;
    return 16 + k;
  }
  const int a = std::min(std::abs(n), 1 << 20), side = n < 0 ? 16 : 0;
  if (a < 8) return side + a;
  const long long square = static_cast<long long>(a) * a;
  int k = 0;
  while (k < 7 && square >= (64LL << (k + 1))) ++k;
  return side + 8 + k;
}

inline double reference_activation(double y, Activation a) {
  switch (a) {
    case Activation::relu:
      return std::max(y, 0.0);
    case Activation::leaky_relu:
      return y > 0 ? y : 0.01 * y;
    case Activation::gelu:
      return 0.5 * y * std::erfc(-y / std::sqrt(2.0));  // y * Phi(y)
  }
  return NAN;
}

inline bool has_kink(Activation a) {
  return a != Activation::gelu;
}

// The bias spec the attention must use: FIRE's inner MLP is ReLU, LeakyReLU inside DAPE (§4.2).
inline BiasSpec reference_bias_spec(const AttentionSpec& s) {
  BiasSpec b;
  b.kind = s.pe, b.NH = s.NH, b.T = s.T, b.HS = s.HS, b.causal = s.causal;
  b.fire_width = s.fire_width, b.fire_L0 = s.fire_L0;
  b.fire_activation = s.dape == DapeMode::off ? Activation::relu : Activation::leaky_relu;
  b.distance_ladder = s.distance_ladder;
  return b;
}

// beta (NH,T,T) of DAPE-SPEC §3.3-3.6; bidirectional per CHE.md §3.6 (|i-j|, right set for j > i,
// ALiBi +0.5 m for j < i); with a distance ladder, s_d stands for every distance d, FIRE's largest
// distance and T5's signed distance included. Causal entries j > i are 0. Lowers *kink_margin to the
// smallest |y_F| of a FIRE ReLU / LeakyReLU unit.
inline Vec reference_bias(const BiasSpec& s, const Tensors<double>& p, double* kink_margin = nullptr) {
  const int NH = s.NH, T = s.T;
  Vec beta(size_t(NH) * T * T, 0);
  const Vec slopes = reference_alibi_slopes(NH);
  auto ladder = [&s](int d) { return s.distance_ladder ? s.distance_ladder[d] : d; };
  for (int i = 0; i < T; ++i)
    for (int j = 0; j < (s.causal ? i + 1 : T); ++j) {
      const int delta = ladder(std::abs(i - j)), signed_delta = j > i ? -delta : delta;
      const std::string side = j > i ? "_right" : "";
      Vec b(NH);
      if (s.kind == PeKind::alibi) {
        for (int h = 0; h < NH; ++h) b[h] = -slopes[h] * delta + (!s.causal && j < i ? 0.5 * slopes[h] : 0);
      } else if (s.kind == PeKind::kerple) {
        for (int h = 0; h < NH; ++h) {
          const double pp = std::max(p.at("kerple_p" + side)[h], 0.01);
          const double aa = std::max(p.at("kerple_a" + side)[h], 0.01);
          b[h] = -pp * std::log(1 + aa * delta);
        }
      } else if (s.kind == PeKind::t5) {
        for (int h = 0; h < NH; ++h)
          b[h] = std::sqrt(double(s.HS)) *
                 p.at("t5_table")[reference_t5_bucket(signed_delta, s.causal) * NH + h];
      } else if (s.kind == PeKind::fire) {
        const double c = std::abs(p.at("fire_c")[0]), Lambda = std::abs(p.at("fire_lambda")[0] * s.fire_L0);
        const double largest = ladder(s.causal ? i : std::max(i, T - 1 - i));  // largest distance row i sees
        const double N = std::log(1 + c * std::max(largest, Lambda)) + 1e-6;
        const double r = std::log(1 + c * delta) / N;
        const Vec &w1 = p.at("fire_fc1_weight" + side), &b1 = p.at("fire_fc1_bias" + side);
        const Vec &w2 = p.at("fire_fc2_weight" + side), &b2 = p.at("fire_fc2_bias" + side);
        for (int h = 0; h < NH; ++h) b[h] = b2[h];
        for (int k = 0; k < s.fire_width; ++k) {
          const double y = w1[k] * r + b1[k];
          if (kink_margin && has_kink(s.fire_activation)) *kink_margin = std::min(*kink_margin, std::abs(y));
          const double a = reference_activation(y, s.fire_activation);
          for (int h = 0; h < NH; ++h) b[h] += w2[h * s.fire_width + k] * a;
        }
      }
      for (int h = 0; h < NH; ++h) beta[(size_t(h) * T + i) * T + j] = b[h];
    }
  return beta;
}

// DAPE-SPEC §3.2 rotation of x (BH,T,HS), row t at position positions[t] (t when positions is nullptr);
// direction -1 rotates back.
inline void reference_rope(Vec& x, const int32_t* positions, int BH, int T, int HS, int direction) {
  const int half = HS / 2;
  for (int bh = 0; bh < BH; ++bh)
    for (int t = 0; t < T; ++t)
      for (int m = 0; m < half; ++m) {
        const long double angle = (positions ? positions[t] : t) * std::pow(10000.0L, -2.0L * m / HS);
        const long double c = std::cos(angle), s = direction * std::sin(angle);
        double* row = x.data() + (size_t(bh) * T + t) * HS;
        const long double a = row[m], b = row[m + half];
        row[m] = double(a * c - b * s);
        row[m + half] = double(b * c + a * s);
      }
}

struct Reference {
  Vec out, probs;      // (B,T,C), (B,NH,T,T)
  double kink_margin;  // smallest |pre-activation| of a ReLU / LeakyReLU unit that reaches the output
};

// The attention of DAPE-SPEC §1.2 / §4.1. The DAPE MLP runs on every (i, j), future keys included (with
// their real q.k scores), and the mask is applied afterwards, as in the original (§4.4, §4.7.2).
inline Reference reference_attention(const AttentionSpec& s, const Tensors<double>& p) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS, D = s.dape_width;
  const int Zin = (s.dape == DapeMode::concat_residual || s.dape == DapeMode::concat) ? 2 * NH : NH;
  const bool residual =
      s.dape == DapeMode::off || s.dape == DapeMode::concat_residual || s.dape == DapeMode::add_residual;
  Vec q(size_t(B) * NH * T * HS), k(q.size()), v(q.size());
  const Vec& qkv = p.at("qkv");
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < NH; ++h)
        for (int c = 0; c < HS; ++c) {
          const size_t src = (size_t(b) * T + t) * 3 * C + h * HS + c,
                       dst = ((size_t(b) * NH + h) * T + t) * HS + c;
          q[dst] = qkv[src], k[dst] = qkv[src + C], v[dst] = qkv[src + 2 * C];
        }
  if (s.pe == PeKind::rope) {
    reference_rope(q, s.rope_positions, B * NH, T, HS, 1);
    reference_rope(k, s.rope_positions, B * NH, T, HS, 1);
  }
  Reference r{Vec(size_t(B) * T * C, 0), Vec(size_t(B) * NH * T * T, 0), INFINITY};
  const Vec beta = has_bias(s.pe) ? reference_bias(reference_bias_spec(s), p, &r.kink_margin) : Vec();
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i) {
      std::vector<Vec> logits(NH, Vec(T));
      for (int j = 0; j < T; ++j) {
        const bool visible = !s.causal || j <= i;
        Vec sc(NH), be(NH, 0.0);
        for (int h = 0; h < NH; ++h) {
          const size_t qi = ((size_t(b) * NH + h) * T + i) * HS, kj = ((size_t(b) * NH + h) * T + j) * HS;
          double d = 0;
          for (int c = 0; c < HS; ++c) d += q[qi + c] * k[kj + c];
          sc[h] = d / std::sqrt(double(HS));
          if (!beta.empty()) be[h] = beta[(size_t(h) * T + i) * T + j];
          logits[h][j] = sc[h] + (residual ? be[h] : 0);
        }
        if (s.dape == DapeMode::off) continue;
        Vec z(Zin);
        for (int h = 0; h < NH; ++h) {
          z[h] = s.dape == DapeMode::add_residual ? sc[h] + be[h] : sc[h];
          if (Zin == 2 * NH) z[NH + h] = be[h];
        }
        Vec a(D);
        for (int d = 0; d < D; ++d) {
          double u = p.at("dape_fc1_bias")[d];
          for (int m = 0; m < Zin; ++m) u += p.at("dape_fc1_weight")[d * Zin + m] * z[m];
          if (visible && has_kink(s.dape_activation)) r.kink_margin = std::min(r.kink_margin, std::abs(u));
          a[d] = reference_activation(u, s.dape_activation);
        }
        for (int h = 0; h < NH; ++h) {
          double o = p.at("dape_fc2_bias")[h];
          for (int d = 0; d < D; ++d) o += p.at("dape_fc2_weight")[h * D + d] * a[d];
          logits[h][j] += o;
        }
      }
      for (int h = 0; h < NH; ++h) {
        const int n = s.causal ? i + 1 : T;  // the mask: keys j > i are excluded
        const double mx = *std::max_element(logits[h].begin(), logits[h].begin() + n);
        double sum = 0;
        for (int j = 0; j < n; ++j) sum += std::exp(logits[h][j] - mx);
        for (int j = 0; j < n; ++j) {
          const double pij = std::exp(logits[h][j] - mx) / sum;
          r.probs[((size_t(b) * NH + h) * T + i) * T + j] = pij;
          for (int c = 0; c < HS; ++c)
            r.out[(size_t(b) * T + i) * C + h * HS + c] += pij * v[((size_t(b) * NH + h) * T + j) * HS + c];
        }
      }
    }
  return r;
}

// ---- Running the ops under test ----------------------------------------------------------------------

// Views of named tensors as the ops' parameter structs; a missing name is nullptr.
template <typename P, typename Map>
auto lookup(Map& t) {
  return [&t](const char* name) -> P {
    auto it = t.find(name);
    return it == t.end() ? nullptr : it->second.data();
  };
}

template <typename P, typename Map>
PositionalTensors<P> pe_view(Map& t) {
  const auto get = lookup<P>(t);
  PositionalTensors<P> v;
  v.kerple_p = get("kerple_p"), v.kerple_a = get("kerple_a");
  v.kerple_p_right = get("kerple_p_right"), v.kerple_a_right = get("kerple_a_right");
  v.fire_c = get("fire_c"), v.fire_lambda = get("fire_lambda");
  v.fire_fc1_weight = get("fire_fc1_weight"), v.fire_fc1_bias = get("fire_fc1_bias");
  v.fire_fc2_weight = get("fire_fc2_weight"), v.fire_fc2_bias = get("fire_fc2_bias");
  v.fire_fc1_weight_right = get("fire_fc1_weight_right"), v.fire_fc1_bias_right = get("fire_fc1_bias_right");
  v.fire_fc2_weight_right = get("fire_fc2_weight_right"), v.fire_fc2_bias_right = get("fire_fc2_bias_right");
  v.t5_table = get("t5_table");
  return v;
}

template <typename P, typename Map>
DapeTensors<P> dape_view(Map& t) {
  const auto get = lookup<P>(t);
  return {get("dape_fc1_weight"), get("dape_fc1_bias"), get("dape_fc2_weight"), get("dape_fc2_bias")};
}

template <typename F>
std::vector<F> nans(size_t n) {
  return std::vector<F>(n, std::numeric_limits<F>::quiet_NaN());
}

// One attention layer's buffers. Outputs and scratch start as NaN, so an element an op should write but
// skips, or scratch it reads before writing, shows up.
template <typename F>
struct AttentionRun {
  AttentionSpec s;
  std::vector<F> out, q, k, v, scores, probs, bias;
  explicit AttentionRun(const AttentionSpec& spec) : s(spec) {
    const size_t bths = size_t(s.B) * s.NH * s.T * s.HS, btt = size_t(s.B) * s.NH * s.T * s.T;
    out = nans<F>(size_t(s.B) * s.T * s.NH * s.HS);
    q = nans<F>(bths), k = nans<F>(bths), v = nans<F>(bths), scores = nans<F>(btt), probs = nans<F>(btt);
    if (has_bias(s.pe)) bias = nans<F>(size_t(s.NH) * s.T * s.T);
  }
  AttentionSaved<F> saved() {
    return {q.data(), k.data(), v.data(), scores.data(), probs.data(), bias.empty() ? nullptr : bias.data()};
  }
  const std::vector<F>& forward(const Tensors<F>& p) {
    attention_forward(out.data(), saved(), p.at("qkv").data(), pe_view<const F*>(p), dape_view<const F*>(p),
                      s);
    return out;
  }
  // Gradients of sum(out * dout) after the last forward: parameters accumulate onto param_init, qkv
  // starts as qkv_init and must be overwritten.
  Tensors<F> backward(const Tensors<F>& p, const std::vector<F>& dout, F param_init = 0,
                      F qkv_init = std::numeric_limits<F>::quiet_NaN()) {
    Tensors<F> g;
    for (const auto& [name, t] : p) g[name] = std::vector<F>(t.size(), name == "qkv" ? qkv_init : param_init);
    const size_t bths = q.size(), btt = scores.size();
    std::vector<F> dq = nans<F>(bths), dk = nans<F>(bths), dv = nans<F>(bths), dscores = nans<F>(btt);
    std::vector<F> dbias = nans<F>(has_bias(s.pe) ? size_t(s.NH) * s.T * s.T : 0);
    const AttentionScratch<F> scratch{dq.data(), dk.data(), dv.data(), dscores.data(),
                                      dbias.empty() ? nullptr : dbias.data()};
    attention_backward(g["qkv"].data(), pe_view<F*>(g), dape_view<F*>(g), scratch, dout.data(), saved(),
                       pe_view<const F*>(p), dape_view<const F*>(p), s);
    return g;
  }
};

// Random parameters for spec s (rounded to float). Kerple raw values stay above the clamp; FIRE's
// lambda avoids the threshold tie; c is negative in bidirectional runs to exercise sgn(c).
inline Tensors<double> random_parameters(const AttentionSpec& s, std::mt19937_64& rng) {
  Tensors<double> p;
  const int NH = s.NH, C = NH * s.HS, DF = s.fire_width, D = s.dape_width;
  p["qkv"] = random_vec(rng, size_t(s.B) * s.T * 3 * C);
  const std::vector<std::string> sides =
      s.causal ? std::vector<std::string>{""} : std::vector<std::string>{"", "_right"};
  for (const std::string& side : sides) {
    if (s.pe == PeKind::kerple) {
      p["kerple_p" + side] = random_vec(rng, NH, 0.05, 2);
      p["kerple_a" + side] = random_vec(rng, NH, 0.05, 2);
    }
    if (s.pe == PeKind::fire) {
      p["fire_fc1_weight" + side] = random_vec(rng, DF);
      p["fire_fc1_bias" + side] = random_vec(rng, DF);
      p["fire_fc2_weight" + side] = random_vec(rng, size_t(NH) * DF);
      p["fire_fc2_bias" + side] = random_vec(rng, NH);
    }
  }
  if (s.pe == PeKind::fire) {
    p["fire_c"] = {s.causal ? 0.6 : -0.6};
    p["fire_lambda"] = {kFireLambda};
  }
  if (s.pe == PeKind::t5) p["t5_table"] = random_vec(rng, size_t(kT5Buckets) * NH);
  if (s.dape != DapeMode::off) {
    const int Zin = (s.dape == DapeMode::concat_residual || s.dape == DapeMode::concat) ? 2 * NH : NH;
    p["dape_fc1_weight"] = random_vec(rng, size_t(D) * Zin);
    p["dape_fc1_bias"] = random_vec(rng, D);
    p["dape_fc2_weight"] = random_vec(rng, size_t(NH) * D);
    p["dape_fc2_bias"] = random_vec(rng, NH);
  }
  return p;
}

// Random parameters whose ReLU / LeakyReLU pre-activations all keep kKinkMargin from 0.
inline Tensors<double> draw_parameters(const AttentionSpec& s, uint64_t seed) {
  for (uint64_t attempt = 0; attempt < 100; ++attempt) {
    std::mt19937_64 rng(seed * 1000 + attempt);
    Tensors<double> p = random_parameters(s, rng);
    if (reference_attention(s, p).kink_margin > kKinkMargin) return p;
  }
  ADD_FAILURE() << "no draw away from the kinks for " << describe(s);
  return {};
}

// ---- Finite differences of attention_backward, and bias parameters -----------------------------------

// Every PE x DAPE mode (and two more DAPE activations) in one direction.
inline std::vector<AttentionSpec> gradcheck_specs(bool causal) {
  std::vector<AttentionSpec> specs;
  for (PeKind pe : {PeKind::none, PeKind::rope}) {
    specs.push_back(tiny_spec(pe, DapeMode::off, causal));
    specs.push_back(tiny_spec(pe, DapeMode::scores_only, causal));
  }
  for (PeKind pe : {PeKind::alibi, PeKind::kerple, PeKind::fire, PeKind::t5})
    for (DapeMode m : {DapeMode::off, DapeMode::concat_residual, DapeMode::concat, DapeMode::add_residual})
      specs.push_back(tiny_spec(pe, m, causal));
  for (Activation a : {Activation::relu, Activation::gelu})
    specs.push_back(tiny_spec(PeKind::kerple, DapeMode::concat_residual, causal, a));
  return specs;
}

// Checks every gradient of sum(out * R); returns the worst relative error over the tensors.
inline double gradcheck_attention(const AttentionSpec& s, uint64_t seed, std::string* worst_tensor) {
  Tensors<double> p = draw_parameters(s, seed);
  std::mt19937_64 rng(seed + 77);
  const Vec R = random_vec(rng, size_t(s.B) * s.T * s.NH * s.HS);
  AttentionRun<double> run(s);
  run.forward(p);
  const Tensors<double> analytic = run.backward(p, R);
  const Tensors<double> shifted = run.backward(p, R, 0.25, 0.25);
  for (const auto& [name, a] : analytic) {
    EXPECT_TRUE(all_finite(a)) << describe(s) << ": d" << name << " holds NaN or inf";
    // qkv's gradient is written (=), parameter gradients accumulate (+=).
    for (size_t e = 0; e < a.size(); ++e)
      EXPECT_NEAR(shifted.at(name)[e], name == "qkv" ? a[e] : a[e] + 0.25, 1e-14 * std::max(max_abs(a), 1.0))
          << describe(s) << " d" << name << "[" << e << "]";
  }
  return check_all_gradients([&] { return dot(run.forward(p), R); }, p, analytic, describe(s), worst_tensor);
}

// A bias of kind for NH heads and T rows with the tiny widths; deterministic positions.
inline BiasSpec bias_spec(PeKind kind, int NH, int T, bool causal, Activation fire_act, double L0) {
  BiasSpec b;
  b.kind = kind, b.NH = NH, b.T = T, b.HS = kHS, b.causal = causal;
  b.fire_width = kDF, b.fire_L0 = L0, b.fire_activation = fire_act;
  return b;
}

// Random parameters of b's PE whose FIRE pre-activations all keep kKinkMargin from 0.
inline Tensors<double> bias_parameters(const BiasSpec& b, uint64_t seed) {
  AttentionSpec s = tiny_spec(b.kind, DapeMode::off, b.causal);
  s.NH = b.NH, s.T = b.T;
  for (uint64_t attempt = 0; attempt < 100; ++attempt) {
    std::mt19937_64 rng(seed * 1000 + attempt);
    Tensors<double> p = random_parameters(s, rng);
    p.erase("qkv");
    double margin = INFINITY;
    reference_bias(b, p, &margin);
    if (margin > kKinkMargin) return p;
  }
  ADD_FAILURE() << "no FIRE draw away from the kinks";
  return {};
}

}  // namespace dape::kernels::attention_test
