// Tests of the dense ops of kernels/dense.h on the CPU backend. One case per op; every case runs
// through the same checks: forward against a naive long-double loop, gradients against central finite
// differences in double, float against double, the documented += / = convention of each backward
// output, and determinism.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "kernels/dense.h"

namespace dape::kernels {
namespace {

using Vec = std::vector<double>;
using Tensors = std::map<std::string, Vec>;

// Uniform in [lo, hi), rounded to float so that a float run and a double run read identical inputs.
Vec random_vec(std::mt19937_64& rng, size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double& x : v) x = static_cast<float>(dist(rng));
  return v;
}

std::vector<int32_t> random_ids(std::mt19937_64& rng, size_t n, int bound) {
  std::uniform_int_distribution<int32_t> dist(0, bound - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

template <typename F>
std::vector<F> to(const Vec& v) {
  return std::vector<F>(v.begin(), v.end());
}

template <typename F>
Vec from(const std::vector<F>& v) {
  return Vec(v.begin(), v.end());
}

// Buffers an op must write completely start as NaN, so an element it skips shows up in every check.
template <typename F>
std::vector<F> unwritten(size_t n) {
  return std::vector<F>(n, std::numeric_limits<F>::quiet_NaN());
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double max_abs(const Vec& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Max |a - b| over the elements; infinite when either holds a NaN.
double max_abs_diff(const Vec& a, const Vec& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(a[i] - b[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    m = std::max(m, d);
  }
  return m;
}

struct Sizes {
  int N, C, OC, V;
};
constexpr Sizes kSmall{6, 5, 7, 11};
// Wider than one column tile of the row sums, with a ragged last tile.
constexpr Sizes kLarge{300, 200, 150, 97};

enum class Accum { overwrite, add };

struct GradSpec {
  std::string name;   // the backward output, e.g. "dweight"
  std::string input;  // the input it is the gradient of, e.g. "weight"
  Accum accum;
};

// One run of an op: the scalar loss and every output (forward values and gradients) as double.
struct OpRun {
  double loss = 0;
  Tensors out;
};

// An op under test. The loss is sum(out * R) for a fixed random R of the output's shape (crossentropy:
// dloss * sum(losses), the scalar its backward differentiates), so every output element matters.
// run(calls) executes the forward, then, if calls > 0, the backward `calls` times on the same buffers,
// with += outputs starting at zero.
class OpCase {
 public:
  virtual ~OpCase() = default;
  virtual OpRun run_double(int calls) const = 0;
  virtual OpRun run_float(int calls) const = 0;
  // Forward outputs from textbook formulas in long double.
  virtual Tensors naive() const = 0;

  Tensors inputs;               // differentiable inputs; finite differences perturb them in place
  std::vector<GradSpec> grads;  // empty for an op without a backward
  std::set<std::string> blas;   // outputs summed by BLAS, whose order may follow the thread count
  int reduction_length = 1;     // the longest sum behind any output, for rounding bounds
};

template <typename Derived>
class OpCaseOf : public OpCase {
 public:
  OpRun run_double(int calls) const override { return self().template run<double>(calls); }
  OpRun run_float(int calls) const override { return self().template run<float>(calls); }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

class EncoderCase : public OpCaseOf<EncoderCase> {
 public:
  EncoderCase(Sizes s, std::mt19937_64& rng) : N(s.N), C(s.C) {
    const int V = s.V;
    tokens = random_ids(rng, N, V);
    tokens[N - 1] = tokens[0];  // a repeated token: its dwte row must receive both rows of dout
    inputs["wte"] = random_vec(rng, size_t(V) * C);
    R = random_vec(rng, size_t(N) * C);
    grads = {{"dwte", "wte", Accum::add}};
    reduction_length = N;
  }

  template <typename F>
  OpRun run(int calls) const {
    const auto wte = to<F>(inputs.at("wte"));
    auto out = unwritten<F>(size_t(N) * C);
    encoder_forward(out.data(), tokens.data(), wte.data(), N, C);
    OpRun r{dot(from(out), R), {{"out", from(out)}}};
    if (calls == 0) return r;
    const auto dout = to<F>(R);
    std::vector<F> dwte(wte.size());
    for (int k = 0; k < calls; ++k) encoder_backward(dwte.data(), dout.data(), tokens.data(), N, C);
    r.out["dwte"] = from(dwte);
    return r;
  }

  Tensors naive() const override {
    Vec out(size_t(N) * C);
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c) out[n * C + c] = inputs.at("wte")[tokens[n] * C + c];
    return {{"out", out}};
  }

 private:
  int N, C;
  std::vector<int32_t> tokens;
  Vec R;
};

class LayernormCase : public OpCaseOf<LayernormCase> {
 public:
  LayernormCase(Sizes s, std::mt19937_64& rng) : N(s.N), C(s.C) {
    inputs["inp"] = random_vec(rng, size_t(N) * C, -2, 2);
    inputs["weight"] = random_vec(rng, C, 0.5, 1.5);
    inputs["bias"] = random_vec(rng, C);
    R = random_vec(rng, size_t(N) * C);
    grads = {{"dinp", "inp", Accum::add}, {"dweight", "weight", Accum::add}, {"dbias", "bias", Accum::add}};
    reduction_length = std::max(N, C);
  }

  template <typename F>
  OpRun run(int calls) const {
    const auto inp = to<F>(inputs.at("inp")), weight = to<F>(inputs.at("weight")),
               bias = to<F>(inputs.at("bias"));
    auto out = unwritten<F>(inp.size()), mean = unwritten<F>(N), rstd = unwritten<F>(N);
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(), N, C);
    OpRun r{dot(from(out), R), {{"out", from(out)}, {"mean", from(mean)}, {"rstd", from(rstd)}}};
    if (calls == 0) return r;
    const auto dout = to<F>(R);
    std::vector<F> dinp(inp.size()), dweight(C), dbias(C);
    for (int k = 0; k < calls; ++k)
      layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(),
                         mean.data(), rstd.data(), N, C);
    r.out["dinp"] = from(dinp);
    r.out["dweight"] = from(dweight);
    r.out["dbias"] = from(dbias);
    return r;
  }

  Tensors naive() const override {
    const Vec &x = inputs.at("inp"), &w = inputs.at("weight"), &b = inputs.at("bias");
    Vec out(x.size()), mean(N), rstd(N);
    for (int n = 0; n < N; ++n) {
      long double m = 0, var = 0;
      for (int c = 0; c < C; ++c) m += x[n * C + c];
      m /= C;
      for (int c = 0; c < C; ++c) var += (x[n * C + c] - m) * (x[n * C + c] - m);
      var /= C;
      const long double s = 1 / std::sqrt(var + 1e-5L);
      for (int c = 0; c < C; ++c) out[n * C + c] = static_cast<double>((x[n * C + c] - m) * s * w[c] + b[c]);
      mean[n] = static_cast<double>(m);
      rstd[n] = static_cast<double>(s);
    }
    return {{"out", out}, {"mean", mean}, {"rstd", rstd}};
  }

 private:
  int N, C;
  Vec R;
};

class MatmulCase : public OpCaseOf<MatmulCase> {
 public:
  MatmulCase(Sizes s, std::mt19937_64& rng, bool with_bias) : N(s.N), C(s.C), OC(s.OC), with_bias(with_bias) {
    inputs["inp"] = random_vec(rng, size_t(N) * C);
    inputs["weight"] = random_vec(rng, size_t(OC) * C);
    if (with_bias) inputs["bias"] = random_vec(rng, OC);
    R = random_vec(rng, size_t(N) * OC);
    grads = {{"dinp", "inp", Accum::overwrite}, {"dweight", "weight", Accum::add}};
    if (with_bias) grads.push_back({"dbias", "bias", Accum::add});
    blas = {"out", "dinp", "dweight"};
    reduction_length = std::max({N, C, OC});
  }

  template <typename F>
  OpRun run(int calls) const {
    const auto inp = to<F>(inputs.at("inp")), weight = to<F>(inputs.at("weight"));
    const auto bias = with_bias ? to<F>(inputs.at("bias")) : std::vector<F>();
    const F* bias_ptr = with_bias ? bias.data() : nullptr;
    auto out = unwritten<F>(size_t(N) * OC);
    matmul_forward(out.data(), inp.data(), weight.data(), bias_ptr, N, C, OC);
    OpRun r{dot(from(out), R), {{"out", from(out)}}};
    if (calls == 0) return r;
    const auto dout = to<F>(R);
    auto dinp = unwritten<F>(inp.size());
    std::vector<F> dweight(weight.size()), dbias(OC);
    for (int k = 0; k < calls; ++k)
      matmul_backward(dinp.data(), dweight.data(), with_bias ? dbias.data() : nullptr, dout.data(),
                      inp.data(), weight.data(), N, C, OC);
    r.out["dinp"] = from(dinp);
    r.out["dweight"] = from(dweight);
    if (with_bias) r.out["dbias"] = from(dbias);
    return r;
  }

  Tensors naive() const override {
    const Vec &x = inputs.at("inp"), &w = inputs.at("weight");
    Vec out(size_t(N) * OC);
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < OC; ++o) {
        long double s = with_bias ? inputs.at("bias")[o] : 0.0;
        for (int c = 0; c < C; ++c) s += static_cast<long double>(x[n * C + c]) * w[o * C + c];
        out[n * OC + o] = static_cast<double>(s);
      }
    return {{"out", out}};
  }

 private:
  int N, C, OC;
  bool with_bias;
  Vec R;
};

class ActivationCase : public OpCaseOf<ActivationCase> {
 public:
  ActivationCase(Sizes s, std::mt19937_64& rng, Activation act) : n(size_t(s.N) * s.C), act(act) {
    inputs["inp"] = random_vec(rng, n, -4, 4);
    // Finite differences cannot see through ReLU's kink: keep inputs at least 0.05 away from it.
    for (double& x : inputs["inp"])
      if (std::abs(x) < 0.05) x = x < 0 ? x - 0.05 : x + 0.05;
    R = random_vec(rng, n);
    grads = {{"dinp", "inp", Accum::overwrite}};
  }

  template <typename F>
  OpRun run(int calls) const {
    const auto inp = to<F>(inputs.at("inp"));
    auto out = unwritten<F>(n);
    activation_forward(out.data(), inp.data(), n, act);
    OpRun r{dot(from(out), R), {{"out", from(out)}}};
    if (calls == 0) return r;
    const auto dout = to<F>(R);
    auto dinp = unwritten<F>(n);
    for (int k = 0; k < calls; ++k) activation_backward(dinp.data(), inp.data(), dout.data(), n, act);
    r.out["dinp"] = from(dinp);
    return r;
  }

  Tensors naive() const override {
    Vec out(n);
    for (size_t i = 0; i < n; ++i) {
      const long double x = inputs.at("inp")[i];
      out[i] = act == Activation::relu ? static_cast<double>(std::max(x, 0.0L))
                                       : static_cast<double>(0.5L * x * (1 + std::erf(x / std::sqrt(2.0L))));
    }
    return {{"out", out}};
  }

 private:
  size_t n;
  Activation act;
  Vec R;
};

class ResidualCase : public OpCaseOf<ResidualCase> {
 public:
  ResidualCase(Sizes s, std::mt19937_64& rng) : n(size_t(s.N) * s.C) {
    inputs["a"] = random_vec(rng, n);
    inputs["b"] = random_vec(rng, n);
    R = random_vec(rng, n);
  }

  template <typename F>
  OpRun run(int) const {
    const auto a = to<F>(inputs.at("a")), b = to<F>(inputs.at("b"));
    auto out = unwritten<F>(n);
    residual_forward(out.data(), a.data(), b.data(), n);
    return {dot(from(out), R), {{"out", from(out)}}};
  }

  Tensors naive() const override {
    Vec out(n);
    for (size_t i = 0; i < n; ++i) out[i] = inputs.at("a")[i] + inputs.at("b")[i];
    return {{"out", out}};
  }

 private:
  size_t n;
  Vec R;
};

class CrossentropyCase : public OpCaseOf<CrossentropyCase> {
 public:
  CrossentropyCase(Sizes s, std::mt19937_64& rng) : N(s.N), V(s.V) {
    inputs["logits"] = random_vec(rng, size_t(N) * V, -3, 3);
    targets = random_ids(rng, N, V);
    for (int n = 3; n < N; n += 4) targets[n] = -1;  // ignored positions: loss 0, no gradient
    grads = {{"dlogits", "logits", Accum::overwrite}};
    reduction_length = V;
  }

  template <typename F>
  OpRun run(int calls) const {
    const auto logits = to<F>(inputs.at("logits"));
    auto losses = unwritten<F>(N);
    crossentropy_forward(losses.data(), logits.data(), targets.data(), N, V);
    OpRun r{0, {{"losses", from(losses)}}};
    for (double l : r.out["losses"]) r.loss += kDloss * l;
    if (calls == 0) return r;
    auto dlogits = unwritten<F>(logits.size());
    for (int k = 0; k < calls; ++k)
      crossentropy_backward(dlogits.data(), logits.data(), targets.data(), static_cast<F>(kDloss), N, V);
    r.out["dlogits"] = from(dlogits);
    return r;
  }

  Tensors naive() const override {
    Vec losses(N);
    for (int n = 0; n < N; ++n) {
      if (targets[n] < 0) continue;
      long double z = 0;
      for (int v = 0; v < V; ++v) z += std::exp(static_cast<long double>(inputs.at("logits")[n * V + v]));
      losses[n] = static_cast<double>(std::log(z) - inputs.at("logits")[n * V + targets[n]]);
    }
    return {{"losses", losses}};
  }

 private:
  static constexpr double kDloss = 0.75;  // exact in float
  int N, V;
  std::vector<int32_t> targets;
};

std::unique_ptr<OpCase> make_case(const std::string& op, Sizes s, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  if (op == "encoder") return std::make_unique<EncoderCase>(s, rng);
  if (op == "layernorm") return std::make_unique<LayernormCase>(s, rng);
  if (op == "matmul") return std::make_unique<MatmulCase>(s, rng, true);
  if (op == "matmul_nobias") return std::make_unique<MatmulCase>(s, rng, false);
  if (op == "gelu") return std::make_unique<ActivationCase>(s, rng, Activation::gelu);
  if (op == "relu") return std::make_unique<ActivationCase>(s, rng, Activation::relu);
  if (op == "residual") return std::make_unique<ResidualCase>(s, rng);
  if (op == "crossentropy") return std::make_unique<CrossentropyCase>(s, rng);
  ADD_FAILURE() << "no test case for op " << op;
  return nullptr;
}

class DenseOp : public ::testing::TestWithParam<std::string> {};

// Rounding bound for `length` accumulated terms in precision eps, relative to the tensor's scale; the
// factor 4 covers the few extra roundings around each sum (scaling, output conversion).
double rounding_bound(double eps, int length, double scale) {
  return 4 * eps * (length + 1) * scale;
}

TEST_P(DenseOp, ForwardMatchesNaiveLoop) {
  const auto c = make_case(GetParam(), kSmall);
  const Tensors want = c->naive();
  const OpRun got_d = c->run_double(0), got_f = c->run_float(0);
  for (const auto& [name, ref] : want) {
    const double scale = max_abs(ref);
    const double err_d = max_abs_diff(got_d.out.at(name), ref), err_f = max_abs_diff(got_f.out.at(name), ref);
    std::printf("[forward] %-13s %-7s max abs err: double %.2e, float %.2e (scale %.2e)\n",
                GetParam().c_str(), name.c_str(), err_d, err_f, scale);
    EXPECT_LE(err_d, rounding_bound(DBL_EPSILON, c->reduction_length, scale)) << name << " (double)";
    EXPECT_LE(err_f, rounding_bound(FLT_EPSILON, c->reduction_length, scale)) << name << " (float)";
  }
}

TEST_P(DenseOp, GradientMatchesFiniteDifferences) {
  const auto c = make_case(GetParam(), kSmall);
  if (c->grads.empty()) GTEST_SKIP() << GetParam() << " has no backward op";
  const OpRun analytic = c->run_double(1);
  for (const GradSpec& g : c->grads) {
    Vec& x = c->inputs.at(g.input);
    const Vec& grad = analytic.out.at(g.name);
    const auto res =
        dape::testing::check_gradient([&] { return c->run_double(0).loss; }, x.data(), x.size(), grad.data());
    std::printf("[grad] %-13s %-8s max rel err %.3e, max abs err %.3e\n", GetParam().c_str(), g.name.c_str(),
                res.max_rel_err, res.max_abs_err);
    EXPECT_GT(max_abs(grad), 1e-2) << g.name << " is (nearly) zero: the check would prove nothing";
    EXPECT_LT(res.max_rel_err, 1e-6) << g.name;
  }
}

TEST_P(DenseOp, FloatAgreesWithDouble) {
  const auto c = make_case(GetParam(), kSmall);
  const OpRun d = c->run_double(1), f = c->run_float(1);
  for (const auto& [name, ref] : d.out) {
    const double scale = max_abs(ref), err = max_abs_diff(f.out.at(name), ref);
    std::printf("[float] %-13s %-8s max abs err %.2e, rel to scale %.2e\n", GetParam().c_str(), name.c_str(),
                err, err / scale);
    EXPECT_LE(err, rounding_bound(FLT_EPSILON, c->reduction_length, scale)) << name;
  }
}

// A second backward on the same buffers must double a += output and leave a = output unchanged.
TEST_P(DenseOp, BackwardAccumulatesOrOverwritesAsDocumented) {
  const auto c = make_case(GetParam(), kSmall);
  if (c->grads.empty()) GTEST_SKIP() << GetParam() << " has no backward op";
  const OpRun once = c->run_double(1), twice = c->run_double(2);
  for (const GradSpec& g : c->grads) {
    Vec want = once.out.at(g.name);
    if (g.accum == Accum::add) {
      for (double& x : want) x *= 2;
    }
    EXPECT_LE(max_abs_diff(twice.out.at(g.name), want), 4 * DBL_EPSILON * max_abs(want))
        << g.name << (g.accum == Accum::add ? " should accumulate (+=)" : " should overwrite (=)");
  }
}

bool bitwise_equal(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

TEST_P(DenseOp, RepeatedRunsAreBitwiseEqual) {
  const auto c = make_case(GetParam(), kLarge);
  const OpRun first = c->run_float(1), second = c->run_float(1);
  for (const auto& [name, v] : first.out) EXPECT_TRUE(bitwise_equal(v, second.out.at(name))) << name;
}

// Our own loops must not depend on the thread count; BLAS outputs are exempt.
TEST_P(DenseOp, NonBlasOutputsIgnoreThreadCount) {
  const auto c = make_case(GetParam(), kLarge);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const OpRun one = c->run_float(1);
  omp_set_num_threads(4);
  const OpRun four = c->run_float(1);
  omp_set_num_threads(saved);
  for (const auto& [name, v] : one.out) {
    if (c->blas.contains(name)) continue;
    EXPECT_TRUE(bitwise_equal(v, four.out.at(name))) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseOp,
                         ::testing::Values("encoder", "layernorm", "matmul", "matmul_nobias", "gelu", "relu",
                                           "residual", "crossentropy"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

template <typename F>
void expect_crossentropy_in_place_equals_out_of_place() {
  std::mt19937_64 rng(7);
  const int N = kLarge.N, V = kLarge.V;
  const auto logits = to<F>(random_vec(rng, size_t(N) * V, -5, 5));
  const auto targets = random_ids(rng, N, V);
  auto separate = unwritten<F>(logits.size());
  crossentropy_backward(separate.data(), logits.data(), targets.data(), F(0.5), N, V);
  auto in_place = logits;
  crossentropy_backward(in_place.data(), in_place.data(), targets.data(), F(0.5), N, V);
  EXPECT_TRUE(bitwise_equal(from(separate), from(in_place)));
}

TEST(DenseCrossentropy, InPlaceBackwardEqualsOutOfPlace) {
  expect_crossentropy_in_place_equals_out_of_place<float>();
  expect_crossentropy_in_place_equals_out_of_place<double>();
}

// Logits far beyond exp's range (float overflows above 88, double above 709) must still give the
// long-double reference, which does not overflow until about 11356.
template <typename F>
void expect_crossentropy_stable_for_large_logits() {
  std::mt19937_64 rng(11);
  const int N = kSmall.N, V = kSmall.V;
  const Vec logits = random_vec(rng, size_t(N) * V, -2000, 2000);
  const auto targets = random_ids(rng, N, V);
  const auto logits_f = to<F>(logits);
  std::vector<F> losses(N), dlogits(logits.size());
  crossentropy_forward(losses.data(), logits_f.data(), targets.data(), N, V);
  crossentropy_backward(dlogits.data(), logits_f.data(), targets.data(), F(1), N, V);
  for (int n = 0; n < N; ++n) {
    long double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(static_cast<long double>(logits[n * V + v]));
    const long double loss = std::log(z) - logits[n * V + targets[n]];
    EXPECT_NEAR(losses[n], static_cast<double>(loss), 4 * std::numeric_limits<F>::epsilon() * 2000) << n;
    for (int v = 0; v < V; ++v) {
      const long double want = std::exp(static_cast<long double>(logits[n * V + v])) / z - (v == targets[n]);
      EXPECT_NEAR(dlogits[n * V + v], static_cast<double>(want), 4 * std::numeric_limits<F>::epsilon())
          << n << "," << v;
    }
  }
}

TEST(DenseCrossentropy, StableForLogitsBeyondExpRange) {
  expect_crossentropy_stable_for_large_logits<float>();
  expect_crossentropy_stable_for_large_logits<double>();
}

// Inverted dropout: about p of the entries are zeroed, the rest scaled by 1 / (1 - p); the same seed gives
// the same mask; the backward multiplies by that mask.
TEST(DenseDropout, DropsAFractionPAndScalesTheRest) {
  const size_t n = 100000;
  const double p = 0.1;
  std::vector<double> x(n, 2.0), mask(n);
  dropout_forward(x.data(), mask.data(), p, n, 42);
  size_t dropped = 0;
  for (size_t i = 0; i < n; ++i) {
    if (mask[i] == 0) {
      ++dropped;
      EXPECT_EQ(x[i], 0.0);
    } else {
      EXPECT_DOUBLE_EQ(mask[i], 1 / (1 - p));
      EXPECT_DOUBLE_EQ(x[i], 2 / (1 - p));
    }
  }
  // 5 standard deviations of a binomial(n, p) count.
  EXPECT_NEAR(double(dropped), p * n, 5 * std::sqrt(n * p * (1 - p)));
  std::vector<double> again(n, 2.0), mask_again(n);
  dropout_forward(again.data(), mask_again.data(), p, n, 42);
  EXPECT_EQ(mask, mask_again);
  std::vector<double> dx(n, 3.0);
  dropout_backward(dx.data(), mask.data(), n);
  for (size_t i = 0; i < n; ++i) EXPECT_DOUBLE_EQ(dx[i], 3.0 * mask[i]);
}

TEST(DenseResidual, OutputMayAliasFirstInput) {
  std::mt19937_64 rng(3);
  const Vec a = random_vec(rng, 100), b = random_vec(rng, 100);
  Vec out(a.size());
  residual_forward(out.data(), a.data(), b.data(), a.size());
  Vec aliased = a;
  residual_forward(aliased.data(), aliased.data(), b.data(), a.size());
  EXPECT_TRUE(bitwise_equal(out, aliased));
}

}  // namespace
}  // namespace dape::kernels
