// Tests of the attention core (kernels/attention.h) and the positional ops (kernels/positional.h) on the
// CPU backend. Every expected value comes from test code written from DAPE-SPEC §3 and §4 (and the
// bidirectional rules of CHE.md §3.6), never from the ops under test:
//  - attention_backward against central finite differences in double for every PE x DAPE mode x
//    causal / bidirectional, and attention_forward against a naive reference that runs the DAPE MLP on
//    every (i, j) and masks afterwards (§4.4, §4.7.1-2);
//  - bias_forward against the formulas, bias_backward by finite differences; RoPE adjoint and norms;
//  - the §4.7 list: ALiBi slopes, T5 buckets, residual identities, the Kerple clamp, masked skip;
//  - float against double, and thread-count independence.
// The harness and the reference implementations live in attention_testing.h.
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

#include "attention_testing.h"
#include "gradcheck.h"
#include "kernels/attention.h"

namespace dape::kernels {
namespace {

using namespace attention_test;

// ---- 1. Finite differences of attention_backward -------------------------------------------------------

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
  rope_forward(rx.data(), nullptr, BH, T, HS);
  rope_backward(rty.data(), nullptr, BH, T, HS);
  reference_rope(ref, nullptr, BH, T, HS, 1);
  // The op forms the angle t * theta_m in double: its rounding grows with t (DAPE-SPEC §3.2).
  const double angle_tol = 4 * T * DBL_EPSILON;
  EXPECT_LT(max_abs_diff(rx, ref), angle_tol);
  // <R x, y> = <x, R^T y>, and R^T R = identity.
  EXPECT_NEAR(dot(rx, y), dot(x, rty), 1e-14 * x.size());
  Vec back = rx;
  rope_backward(back.data(), nullptr, BH, T, HS);
  EXPECT_LT(max_abs_diff(back, x), 1e-15 * 8);
  std::vector<float> xf(x.begin(), x.end());
  rope_forward(xf.data(), nullptr, BH, T, HS);
  EXPECT_LT(max_abs_diff(xf, ref), 4 * FLT_EPSILON);
}

TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  constexpr int T = 40, HS = 8;
  std::mt19937_64 rng(23);
  const Vec q0 = random_vec(rng, HS), k0 = random_vec(rng, HS);
  Vec q(size_t(T) * HS), k(q.size());
  for (int t = 0; t < T; ++t)
    std::copy(q0.begin(), q0.end(), q.begin() + t * HS), std::copy(k0.begin(), k0.end(), k.begin() + t * HS);
  rope_forward(q.data(), nullptr, 1, T, HS);
  rope_forward(k.data(), nullptr, 1, T, HS);
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
  rope_forward(rx.data(), nullptr, BH, T, HS);
  reference_rope(ref, nullptr, BH, T, HS, 1);
  std::vector<float> rf(x.begin(), x.end());
  rope_forward(rf.data(), nullptr, BH, T, HS);
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
