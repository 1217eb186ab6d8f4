// The CUDA attention core (kernels/cuda/attention.h) against the double reference of reference.h, for every
// PE x DAPE mode x causal / bidirectional, with and without a distance ladder (bias PEs) or RoPE positions:
// the forward output and probabilities, dqkv and every PE and DAPE parameter gradient; the query-blocked
// inference forward equal to the training forward to bf16 rounding; two runs bitwise equal. The reference
// itself is checked first against finite differences of the independent forward of
// tests/kernels/attention_testing.h (CPU only, runs without a GPU).
//
// Tolerances, max |got - want| / scale, scale = max |want| of the tensor:
//   - out, dqkv (bf16, one rounding of an fp32 value): kTolBf16 = 1e-2 (cuda_test_support.h).
//   - probs (fp32 softmax of fp32 logits, which reach |l| ~ 500 with an ALiBi ladder): 1e-4; with RoPE
//     without DAPE kTolBf16, since the rotated q and k are rounded to bf16 as inputs of the score matmul.
//   - the inference forward's out against the training forward's: kTolBf16 (other matmul shapes).
//   - PE and DAPE parameter gradients (fp32 sums over up to B T^2 pairs of fp32 terms): 1e-3, with the scale
//     at least 1e-3 of the case's largest parameter gradient. Some gradients are small only by cancellation:
//     every softmax row's g sums to 0, so DAPE's fc2 bias gradient is exactly 0 and its fc1 bias gradient
//     comes only from keys where the activation bends (2e-5 of the largest with an ALiBi ladder); their fp32
//     error is set by the size of the terms, not of the sum.
// Shape: B = 2, T = 150 (more keys than the 128 threads of a row kernel and than two 64-key DAPE chunks, not
// a multiple of 32), NH = 3 (not a power of two), HS = 8, D = 6, DF = 5.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cuda_test_support.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/buffer.h"
#include "kernels/error.h"
#include "reference.h"

namespace dape::cuda_test {
namespace {

namespace kc = kernels::cuda;
namespace at = kernels::attention_test;
using kernels::Activation;
using kernels::AttentionSpec;
using kernels::DapeMode;
using kernels::PeKind;

constexpr int kB = 2, kT = 150, kNH = 3, kHS = 8, kD = 6, kDF = 5;
constexpr int kMaxPosition = 2048;  // L of the randomized positions (CHE.md §3.6)
constexpr int kQueryBlock = 32;     // the inference forward's block: 150 = 4 * 32 + 22
constexpr double kTolProbs = 1e-4, kTolParam = 1e-3, kParamFloor = 1e-3;
constexpr float kGradInit = 0.5f;  // parameter gradients start here: the backward must accumulate

struct CaseDef {
  PeKind pe;
  DapeMode dape;
  bool causal;
  bool randomized = false;  // a distance ladder for bias PEs, sampled positions for RoPE
  Activation act = Activation::leaky_relu;
  bool kerple_clamped = false;  // some raw Kerple p, a below the clamp
};

std::string describe(const CaseDef& c) {
  std::string d = std::string(at::name_of(c.pe)) + "+" + at::name_of(c.dape);
  if (c.dape != DapeMode::off && c.act != Activation::leaky_relu) d += std::string("/") + at::name_of(c.act);
  if (c.randomized) d += c.pe == PeKind::rope ? " positions" : " ladder";
  if (c.kerple_clamped) d += " clamped";
  return d + (c.causal ? " causal" : " bidir");
}

std::vector<CaseDef> all_cases() {
  std::vector<CaseDef> cases;
  for (bool causal : {true, false}) {
    for (PeKind pe : {PeKind::none, PeKind::rope})
      for (DapeMode m : {DapeMode::off, DapeMode::scores_only}) {
        cases.push_back({pe, m, causal});
        if (pe == PeKind::rope) cases.push_back({pe, m, causal, true});
      }
    for (PeKind pe : {PeKind::alibi, PeKind::kerple, PeKind::fire, PeKind::t5})
      for (DapeMode m : {DapeMode::off, DapeMode::concat_residual, DapeMode::concat, DapeMode::add_residual})
        for (bool ladder : {false, true}) cases.push_back({pe, m, causal, ladder});
    for (DapeMode m : {DapeMode::off, DapeMode::concat_residual})
      cases.push_back({PeKind::kerple, m, causal, false, Activation::leaky_relu, true});
  }
  for (Activation a : {Activation::relu, Activation::gelu}) {
    cases.push_back({PeKind::kerple, DapeMode::concat_residual, true, false, a});
    cases.push_back({PeKind::fire, DapeMode::add_residual, false, true, a});
  }
  return cases;
}

// k sorted distinct values from {lo .. lo + n - 1}.
std::vector<int32_t> sorted_distinct(Rng& rng, int k, int lo, int n) {
  std::vector<bool> taken(n, false);
  for (int drawn = 0; drawn < k;) {
    const int x = int(rng.below(n));
    if (!taken[x]) taken[x] = true, ++drawn;
  }
  std::vector<int32_t> v;
  for (int x = 0; x < n; ++x)
    if (taken[x]) v.push_back(lo + x);
  return v;
}
std::vector<int32_t> random_ladder(Rng& rng, int T) {
  std::vector<int32_t> s = sorted_distinct(rng, T - 1, 1, kMaxPosition - 1);
  s.insert(s.begin(), 0);
  return s;
}

AttentionSpec make_spec(const CaseDef& c, int B, int T, int NH, int HS, int D, int DF) {
  AttentionSpec s;
  s.B = B, s.T = T, s.NH = NH, s.HS = HS;
  s.causal = c.causal, s.pe = c.pe, s.dape = c.dape;
  s.dape_width = D, s.dape_activation = c.act;
  s.fire_width = DF, s.fire_L0 = at::kFireL0;
  return s;
}

// Parameters of random_parameters with qkv rounded to bf16 (what the GPU reads); Kerple raw values pushed
// below the clamp for the clamped cases (DAPE-SPEC §4.7 item 5: p = -1).
at::Tensors<double> make_parameters(const CaseDef& c, const AttentionSpec& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  at::Tensors<double> p = at::random_parameters(s, rng);
  for (double& x : p["qkv"]) x = round_bf16(x);
  if (c.kerple_clamped) {
    p["kerple_p"][0] = -1.0;
    p["kerple_a"][1] = 0.004;
    if (!s.causal) p["kerple_a_right"][2] = -0.5;
  }
  return p;
}

std::vector<float> nans(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

struct GpuResult {
  std::vector<bf16> out, out_inference, dqkv;
  std::vector<float> probs;
  std::map<std::string, std::vector<float>> grads;  // minus kGradInit
};

// One forward, inference forward and backward on the GPU. s holds host ladder / position pointers (or
// nullptr); they are uploaded here.
GpuResult run_gpu(const AttentionSpec& host_spec, const at::Tensors<double>& p, const Vec& dout) {
  AttentionSpec s = host_spec;
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS;
  DeviceBuffer<int32_t> ladder, positions;
  if (s.distance_ladder) {
    ladder = DeviceBuffer<int32_t>(std::vector<int32_t>(s.distance_ladder, s.distance_ladder + T));
    s.distance_ladder = ladder.data();
  }
  if (s.rope_positions) {
    positions = DeviceBuffer<int32_t>(std::vector<int32_t>(s.rope_positions, s.rope_positions + T));
    s.rope_positions = positions.data();
  }
  std::map<std::string, DeviceBuffer<float>> params, grads;
  for (const auto& [name, v] : p) {
    if (name == "qkv") continue;
    params.emplace(name, DeviceBuffer<float>(to_f32(v)));
    grads.emplace(name, DeviceBuffer<float>(std::vector<float>(v.size(), kGradInit)));
  }
  const auto pe = at::pe_view<const float*>(params);
  const auto dape = at::dape_view<const float*>(params);
  const auto dpe = at::pe_view<float*>(grads);
  const auto ddape = at::dape_view<float*>(grads);

  const size_t bths = size_t(B) * NH * T * HS, btt = size_t(B) * NH * T * T, htt = size_t(NH) * T * T;
  DeviceBuffer<bf16> qkv(to_bf16(p.at("qkv"))), d_dout(to_bf16(dout));
  DeviceBuffer<bf16> out(size_t(B) * T * C), out_inf(size_t(B) * T * C);
  DeviceBuffer<bf16> dqkv(std::vector<bf16>(qkv.size(), bf16{0x7fc0}));  // NaN: must be overwritten
  const std::vector<bf16> nan_bf16s(std::max(bths, btt), bf16{0x7fc0});
  auto bf16_nans = [&](size_t n) { return std::vector<bf16>(nan_bf16s.begin(), nan_bf16s.begin() + n); };
  DeviceBuffer<bf16> q(bf16_nans(bths)), k(bf16_nans(bths)), v(bf16_nans(bths)), heads(bf16_nans(bths));
  DeviceBuffer<bf16> probs_bf16(bf16_nans(btt)), dscores_bf16(bf16_nans(btt));
  DeviceBuffer<float> scores(nans(btt)), probs(nans(btt)), bias(nans(htt));
  DeviceBuffer<float> dq(nans(bths)), dk(nans(bths)), dv(nans(bths)), dscores(nans(btt)), dbias(nans(htt));
  DeviceBuffer<float> partials(nans(std::max<size_t>(1, kc::attention_partials_floats(s))));
  DeviceBuffer<float> workspace(
      nans(kc::attention_inference_workspace_bytes(s, kQueryBlock) / sizeof(float)));

  DeviceBuffer<float> q_f32(nans(bths)), k_f32(nans(bths));
  const kc::AttentionSaved saved{q.data(), k.data(),      q_f32.data(), k_f32.data(),
                                 v.data(), scores.data(), probs.data(), bias.data()};
  const kc::AttentionScratch scratch{heads.data(),   probs_bf16.data(), dscores_bf16.data(),
                                     dq.data(),      dk.data(),         dv.data(),
                                     dscores.data(), dbias.data(),      partials.data()};
  const kc::Blas blas;
  kc::attention_forward(out.data(), saved, scratch, qkv.data(), pe, dape, s, blas, nullptr);
  kc::attention_forward_inference(out_inf.data(), workspace.data(), qkv.data(), pe, dape, s, kQueryBlock,
                                  blas, nullptr);
  kc::attention_backward(dqkv.data(), dpe, ddape, scratch, d_dout.data(), saved, pe, dape, s, blas, nullptr);
  kc::device_synchronize();

  GpuResult r;
  r.out = out.download(), r.out_inference = out_inf.download(), r.dqkv = dqkv.download();
  r.probs = probs.download();
  for (auto& [name, g] : grads) {
    r.grads[name] = g.download();
    for (float& x : r.grads[name]) x -= kGradInit;
  }
  return r;
}

// max |got - want| / max(max |want|, floor); NaN gives infinity.
double relative(const Vec& got, const Vec& want, double floor) {
  double err = 0, scale = floor;
  for (size_t e = 0; e < got.size(); ++e) {
    const double d = std::abs(got[e] - want[e]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    err = std::max(err, d), scale = std::max(scale, std::abs(want[e]));
  }
  return scale > 0 ? err / scale : err;
}

bool bitwise_equal(const void* a, const void* b, size_t bytes) {
  return std::memcmp(a, b, bytes) == 0;
}

// The worst error of each kind over all cases, for the summary line.
struct Worst {
  double value = 0;
  std::string where;
  void update(double v, const std::string& w) {
    if (v >= value) value = v, where = w;
  }
};

struct Shape {
  int B, T, NH, HS, D, DF;
};

// One case on the GPU against the reference: errors, inference == training, two runs equal. Prints one line
// and returns whether everything passed.
bool check_case(const CaseDef& c, const Shape& d, uint64_t seed, Worst* w_out, Worst* w_probs, Worst* w_dqkv,
                Worst* w_param) {
  const std::string name = describe(c);
  SCOPED_TRACE(name);
  AttentionSpec s = make_spec(c, d.B, d.T, d.NH, d.HS, d.D, d.DF);
  Rng rng(1000 + seed);
  std::vector<int32_t> randomized;
  if (c.randomized) {
    randomized = c.pe == PeKind::rope ? sorted_distinct(rng, d.T, 0, kMaxPosition) : random_ladder(rng, d.T);
    (c.pe == PeKind::rope ? s.rope_positions : s.distance_ladder) = randomized.data();
  }
  const at::Tensors<double> p = make_parameters(c, s, 77 + seed);
  const Vec dout = random_bf16_values(rng, size_t(d.B) * d.T * d.NH * d.HS);

  const AttentionReference ref = attention_reference(s, p, dout);
  const GpuResult gpu = run_gpu(s, p, dout);
  const GpuResult again = run_gpu(s, p, dout);

  const double e_out = relative(to_vec(gpu.out), ref.out, 0);
  const double e_probs = relative(to_vec(gpu.probs), ref.probs, 0);
  const double tol_probs = kc::attention_scores_from_fp32(s) || c.pe != PeKind::rope ? kTolProbs : kTolBf16;
  const double e_inference = relative(to_vec(gpu.out_inference), to_vec(gpu.out), 0);
  const double e_dqkv = relative(to_vec(gpu.dqkv), ref.grads.at("qkv"), 0);
  double model_max = 0;
  for (const auto& [t, g] : ref.grads)
    if (t != "qkv")
      for (double x : g) model_max = std::max(model_max, std::abs(x));
  double e_param = 0;
  std::string worst_param = "-";
  for (const auto& [t, g] : ref.grads) {
    if (t == "qkv") continue;
    EXPECT_TRUE(gpu.grads.count(t)) << t;
    if (!gpu.grads.count(t)) return false;
    const double e = relative(to_vec(gpu.grads.at(t)), g, kParamFloor * model_max);
    EXPECT_LE(e, kTolParam) << "d" << t;
    if (e >= e_param) e_param = e, worst_param = "d" + t;
  }
  EXPECT_LE(e_out, kTolBf16) << "out";
  EXPECT_LE(e_probs, tol_probs) << "probs";
  EXPECT_LE(e_dqkv, kTolBf16) << "dqkv";

  const bool inference_equal = e_inference <= kTolBf16;
  bool deterministic = bitwise_equal(gpu.out.data(), again.out.data(), gpu.out.size() * sizeof(bf16)) &&
                       bitwise_equal(gpu.dqkv.data(), again.dqkv.data(), gpu.dqkv.size() * sizeof(bf16)) &&
                       bitwise_equal(gpu.probs.data(), again.probs.data(), gpu.probs.size() * sizeof(float));
  for (const auto& [t, g] : gpu.grads)
    deterministic =
        deterministic && bitwise_equal(g.data(), again.grads.at(t).data(), g.size() * sizeof(float));
  EXPECT_TRUE(inference_equal) << "the query-blocked inference forward differs from the training forward";
  EXPECT_TRUE(deterministic) << "two runs differ";

  const bool ok = e_out <= kTolBf16 && e_probs <= tol_probs && e_dqkv <= kTolBf16 && e_param <= kTolParam &&
                  inference_equal && deterministic;
  std::printf("  %-40s out %.1e probs %.1e dqkv %.1e params %.1e (%s)%s%s %s\n", name.c_str(), e_out, e_probs,
              e_dqkv, e_param, worst_param.c_str(), inference_equal ? "" : " INFERENCE-DIFFERS",
              deterministic ? "" : " NONDETERMINISTIC", ok ? "ok" : "FAIL");
  w_out->update(e_out, name), w_probs->update(e_probs, name), w_dqkv->update(e_dqkv, name);
  w_param->update(e_param, name + " " + worst_param);
  return ok;
}

void print_summary(int n, int failures, const Worst& out, const Worst& probs, const Worst& dqkv,
                   const Worst& param) {
  std::printf(
      "  %d cases, %d failed. Worst: out %.2e (%s), probs %.2e (%s), dqkv %.2e (%s), params %.2e (%s)\n", n,
      failures, out.value, out.where.c_str(), probs.value, probs.where.c_str(), dqkv.value,
      dqkv.where.c_str(), param.value, param.where.c_str());
}

class CudaAttention : public CudaTest {};

TEST_F(CudaAttention, EveryPeAndDapeModeMatchesTheReference) {
  Worst w_out, w_probs, w_dqkv, w_param;
  int failures = 0, n = 0;
  for (const CaseDef& c : all_cases()) {
    failures += !check_case(c, {kB, kT, kNH, kHS, kD, kDF}, n, &w_out, &w_probs, &w_dqkv, &w_param);
    ++n;
  }
  print_summary(n, failures, w_out, w_probs, w_dqkv, w_param);
}

// The widths of the paper's models (NH = 12, HS = 64, D = DF = 32) on a few cases.
TEST_F(CudaAttention, ModelWidthsMatchTheReference) {
  Worst w_out, w_probs, w_dqkv, w_param;
  int failures = 0, n = 0;
  const std::vector<CaseDef> cases = {{PeKind::kerple, DapeMode::concat_residual, true},
                                      {PeKind::fire, DapeMode::concat_residual, false, true},
                                      {PeKind::t5, DapeMode::add_residual, true, true},
                                      {PeKind::rope, DapeMode::scores_only, true}};
  for (const CaseDef& c : cases) {
    failures += !check_case(c, {1, 200, 12, 64, 32, 32}, 500 + n, &w_out, &w_probs, &w_dqkv, &w_param);
    ++n;
  }
  print_summary(n, failures, w_out, w_probs, w_dqkv, w_param);
}

// An identity ladder (s_d = d) and positions 0..T-1 reproduce the deterministic forms bit for bit.
TEST_F(CudaAttention, IdentityLadderAndPositionsReproduceTheDeterministicForms) {
  std::vector<int32_t> identity(kT);
  for (int t = 0; t < kT; ++t) identity[t] = t;
  Rng rng(5);
  const Vec dout = random_bf16_values(rng, size_t(kB) * kT * kNH * kHS);
  for (bool causal : {true, false})
    for (PeKind pe : {PeKind::rope, PeKind::alibi, PeKind::kerple, PeKind::fire, PeKind::t5}) {
      const CaseDef c{pe, pe == PeKind::rope ? DapeMode::scores_only : DapeMode::concat_residual, causal};
      SCOPED_TRACE(describe(c));
      AttentionSpec s = make_spec(c, kB, kT, kNH, kHS, kD, kDF);
      const at::Tensors<double> p = make_parameters(c, s, 9);
      const GpuResult plain = run_gpu(s, p, dout);
      (pe == PeKind::rope ? s.rope_positions : s.distance_ladder) = identity.data();
      const GpuResult with = run_gpu(s, p, dout);
      EXPECT_TRUE(bitwise_equal(plain.out.data(), with.out.data(), plain.out.size() * sizeof(bf16)));
      EXPECT_TRUE(bitwise_equal(plain.dqkv.data(), with.dqkv.data(), plain.dqkv.size() * sizeof(bf16)));
      for (const auto& [t, g] : plain.grads)
        EXPECT_TRUE(bitwise_equal(g.data(), with.grads.at(t).data(), g.size() * sizeof(float))) << t;
    }
}

// Bad specs are refused on the host by the check every op runs first: runs without a GPU.
TEST(CudaAttentionChecks, RefusesWhatTheKernelsCannotRun) {
  AttentionSpec s =
      make_spec({PeKind::alibi, DapeMode::concat_residual, true}, 1, 4, kc::kMaxDapeHeads + 1, 8, 4, 4);
  const kernels::PositionalTensors<const float*> pe;
  const float w = 0;
  const kernels::DapeTensors<const float*> dape{&w, &w, &w, &w};
  auto forward = [&] { kc::check_attention_spec("attention_forward", s, pe, dape); };
  EXPECT_THROW(forward(), Error);
  s = make_spec({PeKind::rope, DapeMode::off, true}, 1, 4, 2, 7, 4, 4);  // odd HS
  EXPECT_THROW(forward(), Error);
  s = make_spec({PeKind::none, DapeMode::concat, true}, 1, 4, 2, 8, 4, 4);  // concat without a bias
  EXPECT_THROW(forward(), Error);
  s = make_spec({PeKind::kerple, DapeMode::off, false}, 1, 4, 2, 8, 4, 4);  // no Kerple parameters
  EXPECT_THROW(forward(), Error);
}

// The reference backward against fourth-order finite differences of attention_test::reference_attention (an
// independent forward) on the tiny-odd shape, parameters away from the activation kinks: every PE x DAPE
// mode, both directions, with ladders and positions. CPU only.
TEST(CudaAttentionReference, BackwardMatchesFiniteDifferencesOfTheIndependentForward) {
  Rng rng(3);
  const std::vector<int32_t> ladder = random_ladder(rng, at::kT);
  const std::vector<int32_t> positions = sorted_distinct(rng, at::kT, 0, kMaxPosition);
  double worst = 0;
  std::string worst_case;
  uint64_t seed = 1;
  for (bool causal : {true, false})
    for (bool randomized : {false, true})
      for (AttentionSpec s : at::gradcheck_specs(causal)) {
        if (randomized) {
          if (s.pe == PeKind::rope)
            s.rope_positions = positions.data();
          else if (at::has_bias(s.pe))
            s.distance_ladder = ladder.data();
          else
            continue;
        }
        SCOPED_TRACE(at::describe(s));
        at::Tensors<double> p = at::draw_parameters(s, seed++);
        std::mt19937_64 r(seed);
        const Vec R = at::random_vec(r, size_t(s.B) * s.T * s.NH * s.HS);
        const AttentionReference ref = attention_reference(s, p, R);
        ASSERT_EQ(ref.grads.size(), p.size());
        EXPECT_LT(at::max_abs_diff(at::reference_attention(s, p).out, ref.out), 1e-14);
        std::string tensor;
        const double e =
            at::check_all_gradients([&] { return at::dot(at::reference_attention(s, p).out, R); }, p,
                                    ref.grads, at::describe(s), &tensor);
        if (e >= worst) worst = e, worst_case = at::describe(s) + " d" + tensor;
      }
  std::printf("  reference backward vs finite differences: worst relative error %.2e (%s)\n", worst,
              worst_case.c_str());
}

}  // namespace
}  // namespace dape::cuda_test
