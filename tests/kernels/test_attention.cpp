// Tests of the attention core (kernels/attention.h) and the positional ops (kernels/positional.h) on the
// CPU backend. Every expected value comes from code written here from DAPE-SPEC §3 and §4 (and the
// bidirectional rules of CHE.md §3.6), never from the ops under test:
//  - attention_backward against central finite differences in double for every PE x DAPE mode x
//    causal / bidirectional, and attention_forward against a naive reference that runs the DAPE MLP on
//    every (i, j) and masks afterwards (§4.4, §4.7.1-2);
//  - bias_forward against the formulas, bias_backward by finite differences; RoPE adjoint and norms;
//  - the §4.7 list: ALiBi slopes, T5 buckets, residual identities, the Kerple clamp, masked skip;
//  - float against double, and thread-count independence.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "kernels/attention.h"

namespace dape::kernels {
namespace {

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
double check_all_gradients(const std::function<double()>& loss, Tensors<double>& p,
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
Vec random_vec(std::mt19937_64& rng, size_t n, double lo = -1, double hi = 1) {
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

bool all_finite(const Vec& v) {
  return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

const char* name_of(PeKind k) {
  static const char* names[] = {"none", "rope", "alibi", "kerple", "fire", "t5"};
  return names[int(k)];
}
const char* name_of(DapeMode m) {
  static const char* names[] = {"off", "concat_residual", "concat", "add_residual", "scores_only"};
  return names[int(m)];
}
const char* name_of(Activation a) {
  static const char* names[] = {"leaky_relu", "relu", "gelu"};
  return names[int(a)];
}

std::string describe(const AttentionSpec& s) {
  std::string d = std::string(name_of(s.pe)) + "+" + name_of(s.dape);
  if (s.dape != DapeMode::off) d += std::string("/") + name_of(s.dape_activation);
  return d + (s.causal ? " causal" : " bidirectional");
}

AttentionSpec tiny_spec(PeKind pe, DapeMode dape, bool causal, Activation act = Activation::leaky_relu) {
  AttentionSpec s;
  s.B = kB, s.T = kT, s.NH = kNH, s.HS = kHS;
  s.causal = causal, s.pe = pe, s.dape = dape;
  s.dape_width = kD, s.dape_activation = act;
  s.fire_width = kDF, s.fire_L0 = kFireL0;
  return s;
}

bool has_bias(PeKind k) {
  return k == PeKind::alibi || k == PeKind::kerple || k == PeKind::fire || k == PeKind::t5;
}

// ---- Independent reference implementations of the spec's formulas -----------------------------------

// DAPE-SPEC §3.3, phrased as the original builds it: the geometric list of the largest power of two
// c <= H, then every other member (the 1st, 3rd, ...) of the 2c-head list.
Vec reference_alibi_slopes(int H) {
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
int reference_t5_bucket(int n, bool causal) {
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

double reference_activation(double y, Activation a) {
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

bool has_kink(Activation a) {
  return a != Activation::gelu;
}

// The bias spec the attention must use: FIRE's inner MLP is ReLU, LeakyReLU inside DAPE (§4.2).
BiasSpec reference_bias_spec(const AttentionSpec& s) {
  BiasSpec b;
  b.kind = s.pe, b.NH = s.NH, b.T = s.T, b.HS = s.HS, b.causal = s.causal;
  b.fire_width = s.fire_width, b.fire_L0 = s.fire_L0;
  b.fire_activation = s.dape == DapeMode::off ? Activation::relu : Activation::leaky_relu;
  return b;
}

// beta (NH,T,T) of DAPE-SPEC §3.3-3.6; bidirectional per CHE.md §3.6 (|i-j|, right set for j > i,
// ALiBi +0.5 m for j < i). Causal entries j > i are 0. Lowers *kink_margin to the smallest |y_F| of a
// FIRE ReLU / LeakyReLU unit.
Vec reference_bias(const BiasSpec& s, const Tensors<double>& p, double* kink_margin = nullptr) {
  const int NH = s.NH, T = s.T;
  Vec beta(size_t(NH) * T * T, 0);
  const Vec slopes = reference_alibi_slopes(NH);
  for (int i = 0; i < T; ++i)
    for (int j = 0; j < (s.causal ? i + 1 : T); ++j) {
      const int delta = std::abs(i - j);
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
          b[h] = std::sqrt(double(s.HS)) * p.at("t5_table")[reference_t5_bucket(i - j, s.causal) * NH + h];
      } else if (s.kind == PeKind::fire) {
        const double c = std::abs(p.at("fire_c")[0]), Lambda = std::abs(p.at("fire_lambda")[0] * s.fire_L0);
        const double largest = s.causal ? i : std::max(i, T - 1 - i);  // largest distance row i sees
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

// DAPE-SPEC §3.2 rotation of x (BH,T,HS), position t for row t; direction -1 rotates back.
void reference_rope(Vec& x, int BH, int T, int HS, int direction) {
  const int half = HS / 2;
  for (int bh = 0; bh < BH; ++bh)
    for (int t = 0; t < T; ++t)
      for (int m = 0; m < half; ++m) {
        const long double angle = t * std::pow(10000.0L, -2.0L * m / HS);
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
Reference reference_attention(const AttentionSpec& s, const Tensors<double>& p) {
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
  if (s.pe == PeKind::rope) reference_rope(q, B * NH, T, HS, 1), reference_rope(k, B * NH, T, HS, 1);
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
Tensors<double> random_parameters(const AttentionSpec& s, std::mt19937_64& rng) {
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
Tensors<double> draw_parameters(const AttentionSpec& s, uint64_t seed) {
  for (uint64_t attempt = 0; attempt < 100; ++attempt) {
    std::mt19937_64 rng(seed * 1000 + attempt);
    Tensors<double> p = random_parameters(s, rng);
    if (reference_attention(s, p).kink_margin > kKinkMargin) return p;
  }
  ADD_FAILURE() << "no draw away from the kinks for " << describe(s);
  return {};
}

// ---- 1. Finite differences of attention_backward -------------------------------------------------------

std::vector<AttentionSpec> gradcheck_specs(bool causal) {
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
double gradcheck_attention(const AttentionSpec& s, uint64_t seed, std::string* worst_tensor) {
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

class AttentionGradcheck : public ::testing::TestWithParam<bool> {};

TEST_P(AttentionGradcheck, EveryPeDapeModeAndActivation) {
  for (const AttentionSpec& s : gradcheck_specs(GetParam())) {
    std::string tensor;
    const double worst = gradcheck_attention(s, 3, &tensor);
    std::printf("gradcheck %-44s max rel error %.2e (%s)\n", describe(s).c_str(), worst, tensor.c_str());
  }
}

// attention_forward (out and probs) against the naive reference for the same cases.
TEST_P(AttentionGradcheck, ForwardMatchesNaiveReference) {
  for (const AttentionSpec& s : gradcheck_specs(GetParam())) {
    const Tensors<double> p = draw_parameters(s, 5);
    const Reference ref = reference_attention(s, p);
    AttentionRun<double> run(s);
    run.forward(p);
    const double err_out = max_abs_diff(run.out, ref.out) / max_abs(ref.out);
    const double err_probs = max_abs_diff(run.probs, ref.probs);
    EXPECT_LT(err_out, 1e-13) << describe(s);
    EXPECT_LT(err_probs, 1e-14) << describe(s);
  }
}

INSTANTIATE_TEST_SUITE_P(Attention, AttentionGradcheck, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "causal" : "bidirectional"; });

// ---- 2. bias_forward and bias_backward -----------------------------------------------------------------

BiasSpec bias_spec(PeKind kind, int NH, int T, bool causal, Activation fire_act, double L0) {
  BiasSpec b;
  b.kind = kind, b.NH = NH, b.T = T, b.HS = kHS, b.causal = causal;
  b.fire_width = kDF, b.fire_L0 = L0, b.fire_activation = fire_act;
  return b;
}

Tensors<double> bias_parameters(const BiasSpec& b, uint64_t seed) {
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

TEST(PositionalBias, ForwardMatchesSpecFormulas) {
  // T = 150 reaches every causal T5 bucket (n >= 113 -> 31) and both FIRE regimes (Lambda = 70.4).
  constexpr int NH = 6, T = 150;
  for (PeKind kind : {PeKind::alibi, PeKind::kerple, PeKind::fire, PeKind::t5})
    for (bool causal : {true, false})
      for (Activation act : {Activation::relu, Activation::leaky_relu}) {
        if (kind != PeKind::fire && act != Activation::relu) continue;
        const BiasSpec b = bias_spec(kind, NH, T, causal, act, 64);
        const Tensors<double> p = bias_parameters(b, 11);
        const Vec ref = reference_bias(b, p);
        std::vector<double> got = nans<double>(ref.size());
        bias_forward(got.data(), pe_view<const double*>(p), b);
        const Tensors<float> pf = convert<float>(p);
        std::vector<float> gotf = nans<float>(ref.size());
        bias_forward(gotf.data(), pe_view<const float*>(pf), b);
        const double scale = max_abs(ref), err = max_abs_diff(got, ref) / scale;
        const double errf = max_abs_diff(gotf, ref) / scale;
        std::printf("bias_forward %-6s %-13s %-10s rel err double %.2e float %.2e\n", name_of(kind),
                    causal ? "causal" : "bidirectional", name_of(act), err, errf);
        EXPECT_LT(err, 1e-13) << name_of(kind) << " causal " << causal;
        EXPECT_LT(errf, 2e-6) << name_of(kind) << " causal " << causal;
        for (int h = 0; h < NH && causal; ++h)
          for (int i = 0; i < T; ++i)
            for (int j = i + 1; j < T; ++j) ASSERT_EQ(got[(size_t(h) * T + i) * T + j], 0.0);
      }
}

TEST(PositionalBias, BackwardMatchesFiniteDifferences) {
  for (PeKind kind : {PeKind::kerple, PeKind::fire, PeKind::t5})
    for (bool causal : {true, false})
      for (Activation act : {Activation::relu, Activation::leaky_relu, Activation::gelu}) {
        if (kind != PeKind::fire && act != Activation::relu) continue;
        const BiasSpec b = bias_spec(kind, kNH, kT, causal, act, kFireL0);
        Tensors<double> p = bias_parameters(b, 13);
        std::mt19937_64 rng(17);
        const Vec G = random_vec(rng, size_t(kNH) * kT * kT);  // also above the diagonal: must be ignored
        Vec bias(G.size());
        auto loss = [&] {
          bias_forward(bias.data(), pe_view<const double*>(p), b);
          return dot(bias, G);
        };
        Tensors<double> grads, shifted;
        for (const auto& [name, t] : p) grads[name] = Vec(t.size(), 0.0), shifted[name] = Vec(t.size(), 0.5);
        bias_backward(pe_view<double*>(grads), G.data(), pe_view<const double*>(p), b);
        bias_backward(pe_view<double*>(shifted), G.data(), pe_view<const double*>(p), b);
        for (const auto& [name, g] : grads)
          for (size_t e = 0; e < g.size(); ++e)
            EXPECT_NEAR(shifted[name][e], g[e] + 0.5, 1e-13 * std::max(1.0, max_abs(g)))
                << name << ": bias_backward must accumulate";
        const std::string label =
            std::string(name_of(kind)) + (causal ? " causal " : " bidirectional ") + name_of(act);
        std::string tensor;
        const double worst = check_all_gradients(loss, p, grads, label, &tensor);
        std::printf("bias_backward %-30s max rel error %.2e (%s)\n", label.c_str(), worst, tensor.c_str());
      }
}

// At lambda = 1, Lambda = L0 = 3 ties row 3's largest distance (causal and, for T = 7, bidirectional):
// max(i, Lambda) has a kink there and the spec gives each side half the gradient (DAPE-SPEC §3.5), which
// is what a central difference across the kink measures: (D+ + D-) / 2 + O(h).
TEST(PositionalBias, FireThresholdTieSplitsTheGradient) {
  for (bool causal : {true, false}) {
    const BiasSpec b = bias_spec(PeKind::fire, kNH, kT, causal, Activation::relu, kFireL0);
    Tensors<double> p = bias_parameters(b, 71);
    p["fire_lambda"] = {1.0};
    std::mt19937_64 rng(73);
    const Vec G = random_vec(rng, size_t(kNH) * kT * kT);
    Vec bias(G.size());
    auto loss_at = [&](double lambda) {
      p["fire_lambda"] = {lambda};
      bias_forward(bias.data(), pe_view<const double*>(p), b);
      return dot(bias, G);
    };
    const double h = 1e-6;
    const double central = (loss_at(1 + h) - loss_at(1 - h)) / (2 * h);
    const double right = (loss_at(1 + 2 * h) - loss_at(1 + h)) / h,
                 left = (loss_at(1 - h) - loss_at(1 - 2 * h)) / h;
    p["fire_lambda"] = {1.0};
    Tensors<double> grads;
    for (const auto& [name, t] : p) grads[name] = Vec(t.size(), 0.0);
    bias_backward(pe_view<double*>(grads), G.data(), pe_view<const double*>(p), b);
    const double got = grads["fire_lambda"][0];
    std::printf("FIRE tie %-13s dlambda %+.8e, central FD %+.8e (one-sided %+.6e / %+.6e)\n",
                causal ? "causal" : "bidirectional", got, central, left, right);
    EXPECT_GT(std::abs(right - left), 1e-3 * std::abs(right))
        << "the tie must be a kink for this test to bite";
    EXPECT_NEAR(got, central, 1e-5 * std::max(std::abs(left), std::abs(right)));
  }
}

// ---- 3. RoPE -------------------------------------------------------------------------------------------

TEST(Rope, ForwardMatchesSpecAndBackwardIsItsTranspose) {
  constexpr int BH = 3, T = 50, HS = 8;
  std::mt19937_64 rng(19);
  const Vec x = random_vec(rng, size_t(BH) * T * HS), y = random_vec(rng, x.size());
  Vec rx = x, rty = y, ref = x;
  rope_forward(rx.data(), BH, T, HS);
  rope_backward(rty.data(), BH, T, HS);
  reference_rope(ref, BH, T, HS, 1);
  // The op forms the angle t * theta_m in double: its rounding grows with t (DAPE-SPEC §3.2).
  const double angle_tol = 4 * T * DBL_EPSILON;
  EXPECT_LT(max_abs_diff(rx, ref), angle_tol);
  // <R x, y> = <x, R^T y>, and R^T R = identity.
  EXPECT_NEAR(dot(rx, y), dot(x, rty), 1e-14 * x.size());
  Vec back = rx;
  rope_backward(back.data(), BH, T, HS);
  EXPECT_LT(max_abs_diff(back, x), 1e-15 * 8);
  std::vector<float> xf(x.begin(), x.end());
  rope_forward(xf.data(), BH, T, HS);
  EXPECT_LT(max_abs_diff(xf, ref), 4 * FLT_EPSILON);
}

TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  constexpr int T = 40, HS = 8;
  std::mt19937_64 rng(23);
  const Vec q0 = random_vec(rng, HS), k0 = random_vec(rng, HS);
  Vec q(size_t(T) * HS), k(q.size());
  for (int t = 0; t < T; ++t)
    std::copy(q0.begin(), q0.end(), q.begin() + t * HS), std::copy(k0.begin(), k0.end(), k.begin() + t * HS);
  rope_forward(q.data(), 1, T, HS);
  rope_forward(k.data(), 1, T, HS);
  auto score = [&](int t, int u) {
    double d = 0;
    for (int c = 0; c < HS; ++c) d += q[t * HS + c] * k[u * HS + c];
    return d;
  };
  for (int t = 0; t + 10 < T; ++t)
    for (int u = 0; u + 10 < T; ++u) EXPECT_NEAR(score(t, u), score(t + 10, u + 10), 1e-13);
}

TEST(Rope, NoMaximumLengthAndNormsPreserved) {
  constexpr int BH = 2, T = 5000, HS = 64, half = HS / 2;
  std::mt19937_64 rng(29);
  const Vec x = random_vec(rng, size_t(BH) * T * HS);
  Vec rx = x, ref = x;
  rope_forward(rx.data(), BH, T, HS);
  reference_rope(ref, BH, T, HS, 1);
  std::vector<float> rf(x.begin(), x.end());
  rope_forward(rf.data(), BH, T, HS);
  ASSERT_TRUE(all_finite(rx));
  ASSERT_TRUE(all_finite(Vec(rf.begin(), rf.end())));
  double worst_norm = 0, worst_norm_f = 0;
  for (size_t row = 0; row < size_t(BH) * T; ++row)
    for (int m = 0; m < half; ++m) {
      auto pair_norm = [&](auto& v) {
        return std::hypot(double(v[row * HS + m]), double(v[row * HS + m + half]));
      };
      const double n0 = pair_norm(x);
      worst_norm = std::max(worst_norm, std::abs(pair_norm(rx) - n0));
      worst_norm_f = std::max(worst_norm_f, std::abs(pair_norm(rf) - n0));
    }
  EXPECT_LT(worst_norm, 1e-15 * 8);
  EXPECT_LT(worst_norm_f, 4 * FLT_EPSILON);
  // Angles reach 4999 rad: double angles are off by up to ~t ulps; float must still form them in double.
  EXPECT_LT(max_abs_diff(rx, ref), 4 * T * DBL_EPSILON);
  EXPECT_LT(max_abs_diff(rf, ref), 4 * FLT_EPSILON);
}

// ---- 4. DAPE-SPEC §4.7 ---------------------------------------------------------------------------------

TEST(Alibi, SlopesFollowTheRule) {
  for (int H : {1, 2, 3, 4, 6, 8, 12, 16, 24}) {
    const std::vector<double> got = alibi_slopes(H), want = reference_alibi_slopes(H);
    ASSERT_EQ(got.size(), size_t(H));
    for (int h = 0; h < H; ++h)
      EXPECT_NEAR(got[h], want[h], 4 * DBL_EPSILON * want[h]) << "H " << H << " head " << h;
  }
}

TEST(Alibi, SlopesMatchTheSpecTable) {
  const std::map<int, Vec> table = {
      {4, {-2, -4, -6, -8}},
      {6, {-2, -4, -6, -8, -1, -3}},
      {8, {-1, -2, -3, -4, -5, -6, -7, -8}},
      {12, {-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5}},
      {16, {-0.5, -1, -1.5, -2, -2.5, -3, -3.5, -4, -4.5, -5, -5.5, -6, -6.5, -7, -7.5, -8}}};
  for (const auto& [H, log2s] : table) {
    const std::vector<double> got = alibi_slopes(H);
    ASSERT_EQ(got.size(), log2s.size());
    for (int h = 0; h < H; ++h) EXPECT_NEAR(std::log2(got[h]), log2s[h], 1e-14) << "H " << H << " head " << h;
  }
  EXPECT_NEAR(std::log2(alibi_slopes(1)[0]), -8, 1e-14);
  const std::vector<double> h24 = alibi_slopes(24);  // c = 16, then -0.25, -0.75, ..., -3.75
  for (int k = 1; k <= 8; ++k) EXPECT_NEAR(std::log2(h24[15 + k]), -(2 * k - 1) / 4.0, 1e-14);
}

TEST(T5Bucket, CausalSpecList) {
  const std::vector<std::pair<int, int>> first = {{16, 16}, {19, 17}, {21, 18}, {24, 19}, {27, 20}, {31, 21},
                                                  {35, 22}, {40, 23}, {46, 24}, {52, 25}, {59, 26}, {67, 27},
                                                  {77, 28}, {87, 29}, {99, 30}, {113, 31}};
  for (const auto& [n, b] : first) {
    EXPECT_EQ(t5_bucket(n, true), b) << "n " << n;
    EXPECT_EQ(t5_bucket(n - 1, true), b - 1) << "n " << n - 1;
  }
  for (int n = 0; n < 16; ++n) EXPECT_EQ(t5_bucket(n, true), n);
  for (int n = 113; n < 100000; n += (n < 2000 ? 1 : 997)) ASSERT_EQ(t5_bucket(n, true), 31) << "n " << n;
  for (int n : {-1, -5, -100}) EXPECT_EQ(t5_bucket(n, true), 0) << "n " << n;  // causal uses max(n, 0)
}

TEST(T5Bucket, BidirectionalSpecList) {
  const std::vector<std::pair<int, int>> first = {{8, 8},   {12, 9},  {16, 10}, {23, 11},
                                                  {32, 12}, {46, 13}, {64, 14}, {91, 15}};
  for (int side : {1, -1}) {  // n = i - j < 0: the key is after the query, +16
    const int offset = side < 0 ? 16 : 0;
    for (int n = 0; n < 8; ++n) EXPECT_EQ(t5_bucket(side * n, false), n == 0 ? 0 : offset + n) << side * n;
    for (const auto& [n, b] : first) {
      EXPECT_EQ(t5_bucket(side * n, false), offset + b) << "n " << side * n;
      EXPECT_EQ(t5_bucket(side * (n - 1), false), offset + b - 1) << "n " << side * (n - 1);
    }
    for (int n = 91; n < 5000; ++n) ASSERT_EQ(t5_bucket(side * n, false), offset + 15) << "n " << side * n;
  }
}

TEST(T5Bucket, MatchesExactIntegerRuleEverywhere) {
  for (int n = -3000; n <= 3000; ++n) {
    ASSERT_EQ(t5_bucket(n, true), reference_t5_bucket(n, true)) << "causal n " << n;
    ASSERT_EQ(t5_bucket(n, false), reference_t5_bucket(n, false)) << "bidirectional n " << n;
  }
}

// Outputs of attention_forward in double for spec s and parameters p.
Vec forward_out(const AttentionSpec& s, const Tensors<double>& p) {
  AttentionRun<double> run(s);
  return run.forward(p);
}

// Only the parameters of spec s (drops those of another PE or of DAPE).
Tensors<double> restrict_to(const AttentionSpec& s, const Tensors<double>& p) {
  std::mt19937_64 rng(0);
  Tensors<double> kept;
  for (const auto& [name, t] : random_parameters(s, rng)) kept[name] = p.at(name);
  return kept;
}

// Every DAPE form (for activation act) paired with the attention it reduces to when the MLP output is a
// constant: X itself for the residual forms, NoPE for concat (logits s + f).
std::vector<std::pair<AttentionSpec, AttentionSpec>> dape_and_baselines(Activation act) {
  std::vector<std::pair<AttentionSpec, AttentionSpec>> pairs;
  for (bool causal : {true, false})
    for (PeKind pe : {PeKind::none, PeKind::rope, PeKind::alibi, PeKind::kerple, PeKind::fire, PeKind::t5})
      for (DapeMode mode :
           {DapeMode::concat_residual, DapeMode::add_residual, DapeMode::concat, DapeMode::scores_only}) {
        if (has_bias(pe) == (mode == DapeMode::scores_only)) continue;
        const PeKind base = mode == DapeMode::concat ? PeKind::none : pe;
        pairs.emplace_back(tiny_spec(pe, mode, causal, act), tiny_spec(base, DapeMode::off, causal));
      }
  return pairs;
}

// DAPE-FIRE's inner MLP is LeakyReLU, FIRE's ReLU (§4.2): they agree only where its inputs are >= 0.
void make_fire_inputs_nonnegative(Tensors<double>& p) {
  for (const char* name :
       {"fire_fc1_weight", "fire_fc1_bias", "fire_fc1_weight_right", "fire_fc1_bias_right"})
    if (p.count(name))
      for (double& w : p[name]) w = std::abs(w);
}

TEST(DapeResidualIdentities, ZeroOutputLayerGivesTheBaselineExactly) {
  for (const auto& [s, base] : dape_and_baselines(Activation::leaky_relu)) {
    Tensors<double> p = draw_parameters(s, 31);
    std::fill(p["dape_fc2_weight"].begin(), p["dape_fc2_weight"].end(), 0.0);
    std::fill(p["dape_fc2_bias"].begin(), p["dape_fc2_bias"].end(), 0.0);
    make_fire_inputs_nonnegative(p);
    EXPECT_TRUE(forward_out(s, p) == forward_out(base, restrict_to(base, p))) << describe(s);
  }
}

// With W1 = 0 the MLP output is the constant W2 act(c1) + c2 per head, which cancels in the softmax.
TEST(DapeResidualIdentities, ZeroInputLayerCancelsInTheSoftmax) {
  double worst = 0;
  for (Activation act : {Activation::leaky_relu, Activation::relu, Activation::gelu})
    for (const auto& [s, base] : dape_and_baselines(act)) {
      Tensors<double> p = draw_parameters(s, 37);
      std::fill(p["dape_fc1_weight"].begin(), p["dape_fc1_weight"].end(), 0.0);
      make_fire_inputs_nonnegative(p);
      const Vec want = forward_out(base, restrict_to(base, p));
      const double err = max_abs_diff(forward_out(s, p), want) / max_abs(want);
      EXPECT_LT(err, 1e-13) << describe(s);
      worst = std::max(worst, err);
    }
  std::printf("W1 = 0: worst relative difference to the baseline %.2e\n", worst);
}

TEST(DapeKerpleClamp, ForwardUsesTheFloorAndGradientPassesStraightThrough) {
  for (DapeMode mode : {DapeMode::off, DapeMode::concat_residual})
    for (bool causal : {true, false}) {
      const AttentionSpec s = tiny_spec(PeKind::kerple, mode, causal);
      Tensors<double> raw = draw_parameters(s, 41);
      raw["kerple_p"][1] = -1, raw["kerple_a"][2] = -1;
      Tensors<double> floor = raw;
      floor["kerple_p"][1] = 0.01, floor["kerple_a"][2] = 0.01;
      ASSERT_GT(reference_attention(s, floor).kink_margin, kKinkMargin) << describe(s);
      std::mt19937_64 rng(43);
      const Vec R = random_vec(rng, size_t(kB) * kT * kNH * kHS);
      AttentionRun<double> run_raw(s), run_floor(s);
      EXPECT_TRUE(run_raw.forward(raw) == run_floor.forward(floor)) << describe(s);
      const Tensors<double> g_raw = run_raw.backward(raw, R), g_floor = run_floor.backward(floor, R);
      EXPECT_TRUE(g_raw == g_floor) << describe(s) << ": the gradient must be taken at the clamped value";
      // The gradient at the floor, from one-sided (second-order) differences above it, where the
      // forward is smooth.
      for (auto [name, e] : {std::pair<const char*, int>{"kerple_p", 1}, {"kerple_a", 2}}) {
        EXPECT_NE(g_raw.at(name)[e], 0.0) << describe(s) << " d" << name;
        auto loss_at = [&](double x) {
          Tensors<double> q = floor;
          q[name][e] = x;
          return dot(run_floor.forward(q), R);
        };
        const double h = 1e-5;
        const double fd = (-3 * loss_at(0.01) + 4 * loss_at(0.01 + h) - loss_at(0.01 + 2 * h)) / (2 * h);
        EXPECT_NEAR(g_raw.at(name)[e], fd, 1e-7 * std::max(1.0, std::abs(fd))) << describe(s) << " d" << name;
        std::printf("kerple clamp %-36s d%s at raw -1: %+.6e, one-sided FD at 0.01: %+.6e\n",
                    describe(s).c_str(), name, g_raw.at(name)[e], fd);
      }
    }
}

TEST(AttentionMaskedSkip, FutureKeysNeverReachEarlierQueries) {
  for (PeKind pe : {PeKind::none, PeKind::rope, PeKind::alibi, PeKind::kerple, PeKind::fire, PeKind::t5})
    for (DapeMode mode : {DapeMode::off, has_bias(pe) ? DapeMode::concat_residual : DapeMode::scores_only}) {
      const AttentionSpec s = tiny_spec(pe, mode, true);
      const Tensors<double> p = draw_parameters(s, 47);
      AttentionRun<double> run(s);
      const Vec out = run.forward(p);
      for (int b = 0; b < kB; ++b)
        for (int h = 0; h < kNH; ++h)
          for (int i = 0; i < kT; ++i)
            for (int j = i + 1; j < kT; ++j)
              ASSERT_EQ(run.probs[((size_t(b) * kNH + h) * kT + i) * kT + j], 0.0) << describe(s);
      constexpr int C = kNH * kHS;
      for (int j0 : {1, 4, kT - 1}) {
        Tensors<double> q = p;
        for (int b = 0; b < kB; ++b)
          for (int c = C; c < 3 * C; ++c)
            q["qkv"][(size_t(b) * kT + j0) * 3 * C + c] += 0.75;  // k and v of key j0
        const Vec changed = run.forward(q);
        for (int b = 0; b < kB; ++b)
          for (int i = 0; i < j0; ++i)
            for (int c = 0; c < C; ++c) {
              const size_t e = (size_t(b) * kT + i) * C + c;
              ASSERT_EQ(changed[e], out[e]) << describe(s) << " key " << j0 << " query " << i;
            }
        EXPECT_NE(changed[(size_t(0) * kT + j0) * C], out[(size_t(0) * kT + j0) * C]) << describe(s);
      }
    }
}

// ---- 5. Float against double, and thread count ---------------------------------------------------------

TEST(AttentionPrecision, FloatAgreesWithDouble) {
  // The longest float sums (DAPE weight gradients) run over B T^2 terms, each a product of chains of
  // ~HS + 2 NH D float operations; 1e-4 (~840 float ulps) covers the sqrt(n) growth with a wide margin.
  constexpr double tol = 1e-4;
  for (const AttentionSpec& s :
       {tiny_spec(PeKind::kerple, DapeMode::concat_residual, true),
        tiny_spec(PeKind::fire, DapeMode::concat_residual, false, Activation::gelu)}) {
    const Tensors<double> p = draw_parameters(s, 53);
    std::mt19937_64 rng(59);
    const Vec R = random_vec(rng, size_t(kB) * kT * kNH * kHS);
    AttentionRun<double> rd(s);
    AttentionRun<float> rf(s);
    const Tensors<float> pf = convert<float>(p);
    const double out_err = max_abs_diff(rf.forward(pf), rd.forward(p)) / max_abs(rd.out);
    const Tensors<double> gd = rd.backward(p, R);
    const Tensors<float> gf = rf.backward(pf, std::vector<float>(R.begin(), R.end()));
    double model_max = 0, worst = 0;
    for (const auto& [name, g] : gd) model_max = std::max(model_max, max_abs(g));
    for (const auto& [name, g] : gd) {
      const double rel = testing::relative_error(max_abs_diff(gf.at(name), g), max_abs(g), model_max);
      EXPECT_LT(rel, tol) << describe(s) << " d" << name;
      worst = std::max(worst, rel);
    }
    EXPECT_LT(out_err, tol) << describe(s);
    std::printf("float vs double %-36s out %.2e, worst gradient %.2e\n", describe(s).c_str(), out_err, worst);
  }
}

TEST(AttentionDeterminism, ThreadCountDoesNotChangeResults) {
  const int threads = omp_get_max_threads();
  for (const AttentionSpec& s : {tiny_spec(PeKind::kerple, DapeMode::concat_residual, false),
                                 tiny_spec(PeKind::fire, DapeMode::add_residual, true)}) {
    const Tensors<float> p = convert<float>(draw_parameters(s, 61));
    std::mt19937_64 rng(67);
    const Vec Rd = random_vec(rng, size_t(kB) * kT * kNH * kHS);
    const std::vector<float> R(Rd.begin(), Rd.end());
    std::vector<std::vector<float>> outs;
    std::vector<Tensors<float>> grads;
    for (int n : {1, 3}) {
      omp_set_num_threads(n);
      AttentionRun<float> run(s);
      outs.push_back(run.forward(p));
      grads.push_back(run.backward(p, R));
    }
    omp_set_num_threads(threads);
    EXPECT_TRUE(outs[0] == outs[1]) << describe(s);
    EXPECT_TRUE(grads[0] == grads[1]) << describe(s);
  }
}

}  // namespace
}  // namespace dape::kernels
