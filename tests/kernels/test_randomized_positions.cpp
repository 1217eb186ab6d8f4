// Tests of randomized positions (Ruoss et al. 2023; CHE.md §3.6, docs/positional-encodings.md) in the
// positional and attention kernels: the distance ladder s_d that replaces |i - j| in every bias PE, the
// sampled absolute positions of RoPE, and the two samplers. Expected values come from the references in
// attention_testing.h (which read the ladder and the positions independently of the ops) or are written out
// by hand:
//  - an identity ladder and positions 0..T-1 reproduce the deterministic path bit for bit;
//  - one hand-computed ladder per bias kind, and the formulas at T = 150 with a CHE-sized ladder;
//  - attention_backward against finite differences in double with a random ladder / random positions for
//    every PE x DAPE mode x causal / bidirectional, and the forward against the naive reference;
//  - attention_forward_inference and attention_query_components against attention_forward;
//  - RoPE at sampled positions; the samplers' range, order, determinism, errors and uniformity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "attention_testing.h"
#include "kernels/attention.h"
#include "kernels/error.h"
#include "kernels/random.h"

namespace dape::kernels {
namespace {

using namespace attention_test;

// The maximum randomized position of the CHE protocol (L = 2048).
constexpr int kMaxPosition = 2048;
// The ladder of the tiny shape is drawn from a short range, so that within kT = 7 rows its distances both
// fall below and exceed FIRE's threshold Lambda = 3.3 and reach T5's bidirectional log buckets (from 8).
constexpr int kTinyLadderRange = 24;

// 0, 1, ..., T-1: the identity ladder, and the deterministic positions.
std::vector<int32_t> identity_positions(int T) {
  std::vector<int32_t> v(T);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// s with randomized positions where its PE reads them: the ladder for a bias PE, positions for RoPE. The
// vectors must outlive the returned spec.
AttentionSpec randomized(AttentionSpec s, const std::vector<int32_t>& ladder,
                         const std::vector<int32_t>& positions) {
  if (has_bias(s.pe)) s.distance_ladder = ladder.data();
  if (s.pe == PeKind::rope) s.rope_positions = positions.data();
  return s;
}

// The cases with a positional encoding that randomization changes, in one direction.
std::vector<AttentionSpec> randomizable_specs(bool causal) {
  std::vector<AttentionSpec> specs;
  for (const AttentionSpec& s : gradcheck_specs(causal))
    if (s.pe != PeKind::none) specs.push_back(s);
  return specs;
}

// ---- 1. The identity ladder is the deterministic path --------------------------------------------------

// attention_forward and attention_backward under specs a and b agree bit for bit, in precision F.
template <typename F>
void expect_identical_runs(const AttentionSpec& a, const AttentionSpec& b, const Tensors<double>& p,
                           const Vec& R) {
  const Tensors<F> pf = convert<F>(p);
  const std::vector<F> Rf(R.begin(), R.end());
  AttentionRun<F> ra(a), rb(b);
  EXPECT_TRUE(ra.forward(pf) == rb.forward(pf)) << describe(b);
  EXPECT_TRUE(ra.probs == rb.probs && ra.bias == rb.bias && ra.q == rb.q && ra.k == rb.k) << describe(b);
  EXPECT_TRUE(ra.backward(pf, Rf) == rb.backward(pf, Rf)) << describe(b);
}

TEST(RandomizedPositions, IdentityLadderAndPositionsEqualTheDeterministicPath) {
  const std::vector<int32_t> id = identity_positions(kT);
  for (bool causal : {true, false})
    for (const AttentionSpec& s : randomizable_specs(causal)) {
      const Tensors<double> p = draw_parameters(s, 83);
      std::mt19937_64 rng(89);
      const Vec R = random_vec(rng, size_t(kB) * kT * kNH * kHS);
      expect_identical_runs<double>(s, randomized(s, id, id), p, R);
      expect_identical_runs<float>(s, randomized(s, id, id), p, R);
    }
  // The bias alone at a length with every T5 bucket and both FIRE regimes.
  constexpr int NH = 6, T = 150;
  const std::vector<int32_t> id_long = identity_positions(T);
  for (PeKind kind : {PeKind::alibi, PeKind::kerple, PeKind::fire, PeKind::t5})
    for (bool causal : {true, false}) {
      BiasSpec b = bias_spec(kind, NH, T, causal, Activation::relu, 64);
      const Tensors<double> p = bias_parameters(b, 97);
      std::vector<double> plain(size_t(NH) * T * T), laddered(plain.size());
      bias_forward(plain.data(), pe_view<const double*>(p), b);
      b.distance_ladder = id_long.data();
      bias_forward(laddered.data(), pe_view<const double*>(p), b);
      EXPECT_TRUE(plain == laddered) << name_of(kind) << " causal " << causal;
    }
}

// ---- 2. Bias values with a ladder ----------------------------------------------------------------------

// One ladder, s = (0, 3, 10, 50), T = 4, two heads: every value below is written from the formulas with s_d
// in place of the distance d = |i - j|.
class HandLadder : public ::testing::Test {
 protected:
  static constexpr int NH = 2, T = 4;
  // Kerple and FIRE go through log1p in the op and log(1 + x) here: a few ulps apart.
  static constexpr double kTol = 1e-14;
  const std::vector<int32_t> ladder{0, 3, 10, 50};

  // beta_h(i, j) of kind with the ladder, from bias_forward.
  std::vector<double> bias(PeKind kind, bool causal, const Tensors<double>& p, int fire_width = kDF,
                           double L0 = kFireL0) const {
    BiasSpec b = bias_spec(kind, NH, T, causal, Activation::relu, L0);
    b.fire_width = fire_width;
    b.distance_ladder = ladder.data();
    std::vector<double> out(size_t(NH) * T * T);
    bias_forward(out.data(), pe_view<const double*>(p), b);
    return out;
  }
  // Element (h, i, j) of a (NH,T,T) bias.
  static double at(const std::vector<double>& bias, int h, int i, int j) {
    return bias[(size_t(h) * T + i) * T + j];
  }
};

TEST_F(HandLadder, Alibi) {
  const double m0 = 1.0 / 16, m1 = 1.0 / 256;  // slopes for two heads: 2^-4, 2^-8
  const std::vector<double> c = bias(PeKind::alibi, true, {}), b = bias(PeKind::alibi, false, {});
  EXPECT_DOUBLE_EQ(at(c, 0, 3, 0), -50 * m0);
  EXPECT_DOUBLE_EQ(at(c, 0, 2, 1), -3 * m0);
  EXPECT_DOUBLE_EQ(at(c, 1, 3, 1), -10 * m1);
  EXPECT_DOUBLE_EQ(at(b, 0, 3, 0), -50 * m0 + 0.5 * m0);  // left keys: +0.5 m
  EXPECT_DOUBLE_EQ(at(b, 0, 0, 3), -50 * m0);
  EXPECT_DOUBLE_EQ(at(b, 1, 2, 1), -3 * m1 + 0.5 * m1);
  EXPECT_DOUBLE_EQ(at(b, 1, 1, 2), -3 * m1);
  EXPECT_EQ(at(b, 0, 2, 2), 0.0);
}

TEST_F(HandLadder, Kerple) {
  const Tensors<double> p = {{"kerple_p", {0.5, 1.5}},
                             {"kerple_a", {0.2, 0.7}},
                             {"kerple_p_right", {0.3, 2.0}},
                             {"kerple_a_right", {0.05, 1.1}}};
  const std::vector<double> c = bias(PeKind::kerple, true, p), b = bias(PeKind::kerple, false, p);
  EXPECT_NEAR(at(c, 0, 3, 0), -0.5 * std::log(1 + 0.2 * 50), kTol);
  EXPECT_NEAR(at(c, 1, 2, 0), -1.5 * std::log(1 + 0.7 * 10), kTol);
  EXPECT_NEAR(at(c, 0, 1, 0), -0.5 * std::log(1 + 0.2 * 3), kTol);
  EXPECT_NEAR(at(b, 1, 3, 2), -1.5 * std::log(1 + 0.7 * 3), kTol);
  EXPECT_NEAR(at(b, 1, 0, 3), -2.0 * std::log(1 + 1.1 * 50), kTol);  // right keys: right parameters
  EXPECT_NEAR(at(b, 0, 1, 3), -0.3 * std::log(1 + 0.05 * 10), kTol);
}

// FIRE with one hidden unit, c = 1 and Lambda = |lambda L0| = 4. Row i is normalised by
// psi(max(s_m, Lambda)), m the farthest key's distance: i causally, max(i, T-1-i) bidirectionally.
TEST_F(HandLadder, Fire) {
  const Tensors<double> p = {{"fire_c", {1}},
                             {"fire_lambda", {1}},
                             {"fire_fc1_weight", {1}},
                             {"fire_fc1_bias", {0.5}},
                             {"fire_fc2_weight", {2, -1}},
                             {"fire_fc2_bias", {0.1, 0.2}},
                             {"fire_fc1_weight_right", {0.5}},
                             {"fire_fc1_bias_right", {1}},
                             {"fire_fc2_weight_right", {3, 1}},
                             {"fire_fc2_bias_right", {0, -0.5}}};
  const std::vector<double> c = bias(PeKind::fire, true, p, 1, 4), b = bias(PeKind::fire, false, p, 1, 4);
  auto psi = [](double x) { return std::log(1 + x); };
  // Causal row 3: s_3 = 50 > Lambda. Key 1 at distance 2: s_2 = 10.
  double y = psi(10) / (psi(50) + 1e-6) + 0.5;
  EXPECT_NEAR(at(c, 0, 3, 1), 0.1 + 2 * y, kTol);
  EXPECT_NEAR(at(c, 1, 3, 1), 0.2 - y, kTol);
  // Causal row 1: s_1 = 3 < Lambda = 4, so the threshold normalises.
  y = psi(3) / (psi(4) + 1e-6) + 0.5;
  EXPECT_NEAR(at(c, 0, 1, 0), 0.1 + 2 * y, kTol);
  // Bidirectional row 1: the farthest key is at distance 2 (key 3), s_2 = 10; key 3 is right.
  y = 0.5 * psi(10) / (psi(10) + 1e-6) + 1;
  EXPECT_NEAR(at(b, 0, 1, 3), 3 * y, kTol);
  EXPECT_NEAR(at(b, 1, 1, 3), -0.5 + y, kTol);
  // Bidirectional row 0: farthest distance 3, s_3 = 50; key 1 is right at s_1 = 3.
  y = 0.5 * psi(3) / (psi(50) + 1e-6) + 1;
  EXPECT_NEAR(at(b, 0, 0, 1), 3 * y, kTol);
  // Bidirectional row 2, left key 0: farthest distance max(2, 1) = 2, s_2 = 10.
  y = psi(10) / (psi(10) + 1e-6) + 0.5;
  EXPECT_NEAR(at(b, 1, 2, 0), 0.2 - y, kTol);
}

// T5 buckets the signed ladder distance; table[bucket][h] = bucket + 100 h, scaled by sqrt(HS) = 2.
// Causal: 3 -> 3, 10 -> 10, 50 -> 24. Bidirectional: 3 -> 3, 10 -> 8, 50 -> 13, right keys + 16.
TEST_F(HandLadder, T5) {
  Tensors<double> p = {{"t5_table", Vec(size_t(kT5Buckets) * NH)}};
  for (int k = 0; k < kT5Buckets; ++k)
    for (int h = 0; h < NH; ++h) p["t5_table"][k * NH + h] = k + 100 * h;
  const std::vector<double> c = bias(PeKind::t5, true, p), b = bias(PeKind::t5, false, p);
  EXPECT_EQ(at(c, 0, 3, 0), 2 * 24);
  EXPECT_EQ(at(c, 1, 3, 0), 2 * 124);
  EXPECT_EQ(at(c, 0, 2, 1), 2 * 3);
  EXPECT_EQ(at(c, 0, 2, 0), 2 * 10);
  EXPECT_EQ(at(b, 0, 3, 0), 2 * 13);
  EXPECT_EQ(at(b, 0, 0, 3), 2 * 29);
  EXPECT_EQ(at(b, 1, 1, 2), 2 * 119);
  EXPECT_EQ(at(b, 0, 2, 0), 2 * 8);
  EXPECT_EQ(at(b, 0, 0, 2), 2 * 24);
}

// bias_forward with a CHE-sized ladder against the reference formulas; bias_forward_rows in blocks gives
// the same rows (the ladder is the full sequence's).
TEST(RandomizedPositions, LadderBiasMatchesSpecFormulas) {
  constexpr int NH = 6, T = 150, block = 37;
  Rng rng(101);
  const std::vector<int32_t> ladder = sample_distance_ladder(T, kMaxPosition, rng);
  for (PeKind kind : {PeKind::alibi, PeKind::kerple, PeKind::fire, PeKind::t5})
    for (bool causal : {true, false}) {
      BiasSpec b = bias_spec(kind, NH, T, causal, Activation::relu, 64);
      b.distance_ladder = ladder.data();
      const Tensors<double> p = bias_parameters(b, 103);
      const Vec ref = reference_bias(b, p);
      std::vector<double> got = nans<double>(ref.size());
      bias_forward(got.data(), pe_view<const double*>(p), b);
      const double err = max_abs_diff(got, ref) / max_abs(ref);
      EXPECT_LT(err, 1e-13) << name_of(kind) << " causal " << causal;
      std::printf("ladder bias_forward %-6s %-13s rel err %.2e\n", name_of(kind),
                  causal ? "causal" : "bidirectional", err);
      for (int i0 = 0; i0 < T; i0 += block) {
        const int i1 = std::min(T, i0 + block);
        std::vector<double> rows(size_t(NH) * (i1 - i0) * T);
        bias_forward_rows(rows.data(), pe_view<const double*>(p), b, i0, i1);
        for (int h = 0; h < NH; ++h)
          for (int i = i0; i < i1; ++i)
            for (int j = 0; j < T; ++j)
              ASSERT_EQ(rows[(size_t(h) * (i1 - i0) + i - i0) * T + j], got[(size_t(h) * T + i) * T + j])
                  << name_of(kind) << " rows " << i0 << ".." << i1;
      }
    }
}

// ---- 3. Finite differences and the forward, with a random ladder and random positions ------------------

// A random ladder of the tiny shape and random RoPE positions below L = 2048, drawn from seed.
struct RandomPositions {
  std::vector<int32_t> ladder, positions;
  explicit RandomPositions(uint64_t seed) {
    Rng rng(seed);
    ladder = sample_distance_ladder(kT, kTinyLadderRange, rng);
    positions = sample_positions(kT, kMaxPosition, rng);
  }
};

// Comma-separated values, for the log.
std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

class RandomizedGradcheck : public ::testing::TestWithParam<bool> {};

TEST_P(RandomizedGradcheck, EveryPeAndDapeMode) {
  const RandomPositions r(107);
  std::printf("ladder %s, RoPE positions %s\n", join(r.ladder).c_str(), join(r.positions).c_str());
  for (const AttentionSpec& base : randomizable_specs(GetParam())) {
    const AttentionSpec s = randomized(base, r.ladder, r.positions);
    std::string tensor;
    const double worst = gradcheck_attention(s, 3, &tensor);
    std::printf("gradcheck %-58s max rel error %.2e (%s)\n", describe(s).c_str(), worst, tensor.c_str());
  }
}

TEST_P(RandomizedGradcheck, ForwardMatchesNaiveReference) {
  const RandomPositions r(109);
  for (const AttentionSpec& base : randomizable_specs(GetParam())) {
    const AttentionSpec s = randomized(base, r.ladder, r.positions);
    const Tensors<double> p = draw_parameters(s, 5);
    const Reference ref = reference_attention(s, p);
    AttentionRun<double> run(s);
    run.forward(p);
    EXPECT_LT(max_abs_diff(run.out, ref.out) / max_abs(ref.out), 1e-13) << describe(s);
    EXPECT_LT(max_abs_diff(run.probs, ref.probs), 1e-14) << describe(s);
    // Randomization must change something, or the checks above would not bite.
    EXPECT_FALSE(AttentionRun<double>(base).forward(p) == run.out) << describe(s);
  }
}

INSTANTIATE_TEST_SUITE_P(Randomized, RandomizedGradcheck, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "causal" : "bidirectional"; });

// Blocked inference and the Figure-1 components read the ladder of the full sequence, as the forward does.
TEST(RandomizedPositions, InferenceAndQueryComponentsMatchTheForward) {
  const RandomPositions r(113);
  for (bool causal : {true, false})
    for (const AttentionSpec& base : randomizable_specs(causal)) {
      const AttentionSpec s = randomized(base, r.ladder, r.positions);
      const Tensors<double> p = draw_parameters(s, 7);
      AttentionRun<double> run(s);
      const Vec& out = run.forward(p);
      for (int block : {1, 3, 64}) {
        Vec got = nans<double>(out.size());
        attention_forward_inference(got.data(), p.at("qkv").data(), pe_view<const double*>(p),
                                    dape_view<const double*>(p), s, block);
        EXPECT_LT(max_abs_diff(got, out) / max_abs(out), 1e-14) << describe(s) << " block " << block;
      }
      const int b = 1;
      for (int i : {0, 4, kT - 1}) {
        const int keys = causal ? i + 1 : kT;
        Vec scores(size_t(kNH) * keys), bias(scores.size()), f(scores.size());
        attention_query_components(scores.data(), bias.data(), f.data(), p.at("qkv").data(),
                                   pe_view<const double*>(p), dape_view<const double*>(p), s, b, i);
        for (int h = 0; h < kNH; ++h)
          for (int j = 0; j < keys; ++j) {
            const size_t e = size_t(h) * keys + j;
            ASSERT_NEAR(scores[e], run.scores[((size_t(b) * kNH + h) * kT + i) * kT + j], 1e-15)
                << describe(s);
            ASSERT_EQ(bias[e], has_bias(s.pe) ? run.bias[(size_t(h) * kT + i) * kT + j] : 0.0) << describe(s);
          }
      }
    }
}

// ---- 4. RoPE at sampled positions ----------------------------------------------------------------------

TEST(RandomizedPositions, RopeRotatesRowsByTheirPositions) {
  constexpr int BH = 3, T = 50, HS = 8;
  Rng prng(127);
  const std::vector<int32_t> positions = sample_positions(T, kMaxPosition, prng);
  std::mt19937_64 rng(131);
  const Vec x = random_vec(rng, size_t(BH) * T * HS);
  Vec rx = x, ref = x;
  rope_forward(rx.data(), positions.data(), BH, T, HS);
  reference_rope(ref, positions.data(), BH, T, HS, 1);
  // The angle p theta_m is formed in double: its rounding grows with the position.
  EXPECT_LT(max_abs_diff(rx, ref), 4 * kMaxPosition * DBL_EPSILON);
  Vec back = rx;
  rope_backward(back.data(), positions.data(), BH, T, HS);
  EXPECT_LT(max_abs_diff(back, x), 1e-15 * 8);
  // Scores depend on the difference of positions only: shifting every position leaves them unchanged.
  std::vector<int32_t> shifted = positions;
  for (int32_t& pos : shifted) pos += 37;
  Vec q = x, k = random_vec(rng, x.size()), q2 = q, k2 = k;
  rope_forward(q.data(), positions.data(), BH, T, HS), rope_forward(k.data(), positions.data(), BH, T, HS);
  rope_forward(q2.data(), shifted.data(), BH, T, HS), rope_forward(k2.data(), shifted.data(), BH, T, HS);
  for (int t = 0; t < T; ++t)
    for (int u = 0; u < T; ++u) {
      double d = 0, d2 = 0;
      for (int c = 0; c < HS; ++c) d += q[t * HS + c] * k[u * HS + c], d2 += q2[t * HS + c] * k2[u * HS + c];
      ASSERT_NEAR(d, d2, 1e-12) << "rows " << t << ", " << u;
    }
}

// ---- 5. The samplers -----------------------------------------------------------------------------------

TEST(RandomizedPositionsSampler, SortedDistinctInRange) {
  for (auto [T, L] : std::vector<std::pair<int, int>>{
           {1, 1}, {1, 2048}, {7, 7}, {7, 24}, {500, 2048}, {2048, 2048}, {16384, 32768}, {3, 100000}}) {
    Rng rng(137);
    const std::vector<int32_t> ladder = sample_distance_ladder(T, L, rng);
    const std::vector<int32_t> positions = sample_positions(T, L, rng);
    ASSERT_EQ(ladder.size(), size_t(T));
    ASSERT_EQ(positions.size(), size_t(T));
    EXPECT_EQ(ladder[0], 0);
    EXPECT_GE(positions[0], 0);
    EXPECT_LT(ladder.back(), L);
    EXPECT_LT(positions.back(), L);
    EXPECT_TRUE(std::adjacent_find(ladder.begin(), ladder.end(), std::greater_equal<>()) == ladder.end())
        << "T " << T << " L " << L;
    EXPECT_TRUE(std::adjacent_find(positions.begin(), positions.end(), std::greater_equal<>()) ==
                positions.end())
        << "T " << T << " L " << L;
    if (T == L) EXPECT_TRUE(ladder == identity_positions(T) && positions == identity_positions(T));
  }
}

TEST(RandomizedPositionsSampler, DeterministicForASeed) {
  Rng a(139), b(139), c(140);
  const std::vector<int32_t> la = sample_distance_ladder(100, kMaxPosition, a);
  EXPECT_EQ(la, sample_distance_ladder(100, kMaxPosition, b));
  EXPECT_NE(la, sample_distance_ladder(100, kMaxPosition, c));
  EXPECT_EQ(sample_positions(100, kMaxPosition, a), sample_positions(100, kMaxPosition, b));
}

TEST(RandomizedPositionsSampler, RejectsMorePositionsThanTheRange) {
  Rng rng(149);
  for (int T : {2049, 0}) {
    EXPECT_THROW(sample_positions(T, kMaxPosition, rng), dape::Error);
    try {
      sample_distance_ladder(T, kMaxPosition, rng);
      ADD_FAILURE() << "T = " << T << " must throw";
    } catch (const dape::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("T = " + std::to_string(T)), std::string::npos) << message;
      EXPECT_NE(message.find("L = 2048"), std::string::npos) << message;
    }
  }
}

// Each value of the range is drawn with probability k / n (k of n values); a value the sampler can never
// reach, or one it favours (Floyd's last candidates), shows up here.
TEST(RandomizedPositionsSampler, EveryValueEquallyLikely) {
  constexpr int T = 5, L = 16, draws = 20000;
  Rng rng(151);
  std::vector<int> ladder_count(L, 0), position_count(L, 0);
  for (int d = 0; d < draws; ++d) {
    for (int32_t s : sample_distance_ladder(T, L, rng)) ++ladder_count[s];
    for (int32_t p : sample_positions(T, L, rng)) ++position_count[p];
  }
  EXPECT_EQ(ladder_count[0], draws);
  auto check = [&](const std::vector<int>& count, int first, int k, int n, const char* what) {
    const double prob = double(k) / n, mean = draws * prob, sd = std::sqrt(draws * prob * (1 - prob));
    for (int v = first; v < L; ++v) EXPECT_NEAR(count[v], mean, 5 * sd) << what << " value " << v;
  };
  check(ladder_count, 1, T - 1, L - 1, "ladder");
  check(position_count, 0, T, L, "positions");
}

// The r-th smallest of k values drawn from {1..n} has mean r (n+1) / (k+1) (uniform order statistics); the
// variance below is the continuous one, close for n >> k.
TEST(RandomizedPositionsSampler, LadderRungsHaveUniformOrderStatisticMeans) {
  constexpr int T = 64, draws = 2000, k = T - 1, n = kMaxPosition - 1;
  Rng rng(157);
  std::vector<double> sum(T, 0);
  for (int d = 0; d < draws; ++d) {
    const std::vector<int32_t> s = sample_distance_ladder(T, kMaxPosition, rng);
    for (int r = 1; r < T; ++r) sum[r] += s[r];
  }
  for (int r : {1, 16, 32, 63}) {
    const double mean = r * (n + 1.0) / (k + 1);
    const double var = r * (k - r + 1.0) * (n + 1.0) * (n + 1.0) / ((k + 1.0) * (k + 1.0) * (k + 2.0));
    const double got = sum[r] / draws;
    EXPECT_NEAR(got, mean, 5 * std::sqrt(var / draws)) << "rung " << r;
    std::printf("ladder rung %2d: mean %8.2f, expected %8.2f (sd of the mean %.2f)\n", r, got, mean,
                std::sqrt(var / draws));
  }
}

}  // namespace
}  // namespace dape::kernels
