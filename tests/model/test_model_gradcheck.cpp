// Whole-model finite-difference gradient checks in double precision for every positional encoding,
// every DAPE variant and activation, causal and bidirectional (DAPE-SPEC §2.1 shape: L=1, d=12, H=3,
// T=8, batch 2, D=5). The max relative error of every parameter tensor is printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "gradcheck.h"
#include "kernels/random.h"
#include "model/gpt.h"
#include "model_test_support.h"

namespace dape {
namespace {

constexpr int kB = 2, kT = 8;

double check_model(const model::ModelConfig& config, uint64_t seed) {
  model::GPT<double> gpt(config);
  gpt.init_parameters(seed);
  // Kerple's straight-through clamp has no derivative below 0.01; keep the raw values above it here
  // (the clamp has its own test).
  // Likewise FIRE's threshold max(i, |lambda L0|) has a kink where a row index ties the threshold
  // (lambda = 1 at init); move it off the integers (the golden vectors cover the tie).
  for (const model::ParameterSpec& p : gpt.parameter_table()) {
    if (p.name.find("pe.kerple.") != std::string::npos)
      for (size_t i = 0; i < p.numel; ++i) gpt.param(p.name)[i] = std::max(gpt.param(p.name)[i], 0.05);
    if (p.name.ends_with("pe.fire.lambda")) *gpt.param(p.name) = 1.1;
  }
  // FIRE's inner ReLU has a kink where w r + b = 0 for some r in [0, 1); giving each bias the sign of its
  // weight (and some distance from 0) keeps every unit on one side of it.
  for (const model::ParameterSpec& p : gpt.parameter_table()) {
    if (p.name.find("pe.fire.fc1") == std::string::npos || !p.name.ends_with(".bias")) continue;
    const double* w = gpt.param(p.name.substr(0, p.name.size() - 4) + "weight");
    double* b = gpt.param(p.name);
    for (size_t k = 0; k < p.numel; ++k) b[k] = std::copysign(0.1 + std::abs(b[k]), w[k]);
  }
  Rng rng(seed, "tokens");
  std::vector<int32_t> inputs(kB * kT), targets(kB * kT);
  for (int n = 0; n < kB * kT; ++n) {
    inputs[n] = int32_t(rng.below(config.vocab_size));
    targets[n] = int32_t(rng.below(config.vocab_size));
  }
  gpt.zero_grad();
  gpt.forward(inputs.data(), targets.data(), kB, kT);
  gpt.backward(1.0);
  const std::vector<double> analytic(gpt.grads(), gpt.grads() + gpt.num_parameters());
  auto loss = [&] { return gpt.forward(inputs.data(), targets.data(), kB, kT); };
  // A small step keeps the DAPE MLP's LeakyReLU inputs from crossing their kink inside the stencil.
  std::vector<testing::GradCheckResult> results;
  double model_max = 0;
  for (const model::ParameterSpec& p : gpt.parameter_table()) {
    // FIRE's scalars c and lambda have gradients ~1e-5 of the largest: they need a larger step to rise
    // above the loss's round-off, and the loss is smooth in them once the ReLU kinks are avoided.
    const double step = p.numel == 1 ? 1e-3 : 1e-5;
    results.push_back(
        testing::check_gradient(loss, gpt.param(p.name), p.numel, analytic.data() + p.offset, step));
    model_max = std::max(model_max, results.back().max_ref);
  }
  double worst = 0;
  for (size_t t = 0; t < results.size(); ++t) {
    const double rel = testing::relative_error(results[t].max_abs_err, results[t].max_ref, model_max);
    EXPECT_LT(rel, 1e-6) << testing::describe(config) << " " << gpt.parameter_table()[t].name << " abs "
                         << results[t].max_abs_err;
    worst = std::max(worst, rel);
  }
  return worst;
}

class ModelGradcheck : public ::testing::TestWithParam<bool> {};

TEST_P(ModelGradcheck, EveryPositionalEncodingAndVariant) {
  model::ModelConfig base = testing::gradcheck_config();
  base.causal = GetParam();
  for (const model::ModelConfig& config : testing::all_attention_configs(base)) {
    const double worst = check_model(config, 7);
    std::printf("gradcheck %-34s max rel error %.2e\n", testing::describe(config).c_str(), worst);
  }
}

TEST_P(ModelGradcheck, DapeActivations) {
  model::ModelConfig config = testing::gradcheck_config();
  config.causal = GetParam();
  config.pe = model::PositionalEncoding::dape_kerple;
  for (auto act : {kernels::Activation::relu, kernels::Activation::gelu}) {
    config.dape.activation = act;
    const double worst = check_model(config, 11);
    std::printf("gradcheck %-34s max rel error %.2e\n", testing::describe(config).c_str(), worst);
  }
}

INSTANTIATE_TEST_SUITE_P(CausalAndBidirectional, ModelGradcheck, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "causal" : "bidirectional"; });

}  // namespace
}  // namespace dape
