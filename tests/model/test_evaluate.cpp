// Evaluation without a backward (GPT::evaluate, attention in query blocks) gives the same per-position losses
// as the training forward, for every positional encoding, causal and bidirectional, and on the CHE encoder's
// backbone with randomized positions, where its predictions are the argmax of the forward's logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "kernels/random.h"
#include "model/gpt.h"
#include "model_test_support.h"

namespace dape {
namespace {

TEST(Evaluate, MatchesTheTrainingForwardForEveryPositionalEncoding) {
  for (bool causal : {true, false}) {
    model::ModelConfig base = testing::gradcheck_config();
    base.causal = causal;
    for (const model::ModelConfig& config : testing::all_attention_configs(base)) {
      model::GPT<double> gpt(config);
      gpt.init_parameters(3);
      const int B = 2, T = 37;
      Rng rng(3, "tokens");
      std::vector<int32_t> inputs(B * T), targets(B * T);
      for (auto& t : inputs) t = int32_t(rng.below(config.vocab_size));
      for (auto& t : targets) t = int32_t(rng.below(config.vocab_size));
      const double loss = gpt.forward(inputs.data(), targets.data(), B, T);
      const std::vector<double> expected(gpt.position_losses(), gpt.position_losses() + B * T);
      std::vector<double> losses(B * T);
      EXPECT_NEAR(gpt.evaluate(inputs.data(), targets.data(), B, T, losses.data()), loss, 1e-12)
          << testing::describe(config);
      for (int n = 0; n < B * T; ++n) ASSERT_NEAR(losses[n], expected[n], 1e-12) << testing::describe(config);
    }
  }
}

// The CHE encoder (post-LN, ReLU, scaled embedding, no attention biases, a head with a bias over 3 classes)
// with randomized positions and ignored targets, dropout 0: with the same noise seed, evaluate() draws the
// positions forward() drew, so the losses agree; its predictions are the argmax of forward()'s logits.
TEST(Evaluate, MatchesTheTrainingForwardOnTheCheEncoder) {
  model::ModelConfig base = testing::che_backbone(testing::gradcheck_config(), 3);
  base.vocab_size = 5;
  base.randomized_positions = 100;
  for (const model::ModelConfig& config : testing::all_attention_configs(base)) {
    model::GPT<double> gpt(config);
    gpt.init_parameters(4);
    const int B = 2, T = 37, N = B * T, O = config.outputs();
    Rng rng(4, "tokens");
    std::vector<int32_t> inputs(N), targets(N), predictions(N);
    for (auto& t : inputs) t = int32_t(rng.below(config.vocab_size));
    for (int n = 0; n < N; ++n) targets[n] = testing::ignored_target(n) ? -1 : int32_t(rng.below(O));
    gpt.set_noise_seed(8);
    const double loss = gpt.forward(inputs.data(), targets.data(), B, T);
    const std::vector<double> expected(gpt.position_losses(), gpt.position_losses() + N);
    const std::vector<double> logits(gpt.logits(), gpt.logits() + size_t(N) * O);
    std::vector<double> losses(N);
    gpt.set_noise_seed(8);
    EXPECT_NEAR(gpt.evaluate(inputs.data(), targets.data(), B, T, losses.data(), predictions.data()), loss,
                1e-12)
        << testing::describe(config);
    for (int n = 0; n < N; ++n) {
      ASSERT_NEAR(losses[n], expected[n], 1e-12) << testing::describe(config) << " position " << n;
      if (targets[n] < 0) ASSERT_EQ(losses[n], 0.0);
      const double* row = logits.data() + size_t(n) * O;
      ASSERT_EQ(predictions[n], std::max_element(row, row + O) - row) << testing::describe(config);
    }
  }
}

// The blocked attention equals the materialised one for block sizes that do and do not divide T, and the
// per-query components (the paper's Figure 1) reproduce the materialised forward.
TEST(Evaluate, AttentionInQueryBlocksEqualsTheMaterialisedAttention) {
  for (bool causal : {true, false}) {
    model::ModelConfig base = testing::gradcheck_config();
    base.causal = causal;
    for (const model::ModelConfig& config : testing::all_attention_configs(base)) {
      model::GPT<double> gpt(config);
      gpt.init_parameters(9);
      kernels::AttentionSpec spec;
      spec.B = 2, spec.T = 11, spec.NH = config.n_heads, spec.HS = config.head_size();
      spec.causal = causal, spec.pe = config.base_pe(), spec.dape = config.dape_mode();
      spec.dape_width = config.dape.width, spec.fire_width = config.fire.width, spec.fire_L0 = config.fire.L0;
      auto p = [&](const std::string& name) -> const double* {
        for (const auto& t : gpt.parameter_table())
          if (t.name == name) return gpt.param(name);
        return nullptr;
      };
      kernels::PositionalTensors<const double*> pe;
      pe.kerple_p = p("layers.0.pe.kerple.p"), pe.kerple_a = p("layers.0.pe.kerple.a");
      pe.kerple_p_right = p("layers.0.pe.kerple.p_right"),
      pe.kerple_a_right = p("layers.0.pe.kerple.a_right");
      pe.fire_c = p("layers.0.pe.fire.c"), pe.fire_lambda = p("layers.0.pe.fire.lambda");
      pe.fire_fc1_weight = p("layers.0.pe.fire.fc1.weight"),
      pe.fire_fc1_bias = p("layers.0.pe.fire.fc1.bias");
      pe.fire_fc2_weight = p("layers.0.pe.fire.fc2.weight"),
      pe.fire_fc2_bias = p("layers.0.pe.fire.fc2.bias");
      pe.fire_fc1_weight_right = p("layers.0.pe.fire.fc1_right.weight");
      pe.fire_fc1_bias_right = p("layers.0.pe.fire.fc1_right.bias");
      pe.fire_fc2_weight_right = p("layers.0.pe.fire.fc2_right.weight");
      pe.fire_fc2_bias_right = p("layers.0.pe.fire.fc2_right.bias");
      pe.t5_table = p("t5.bias");
      kernels::DapeTensors<const double*> dape{p("layers.0.dape.fc1.weight"), p("layers.0.dape.fc1.bias"),
                                               p("layers.0.dape.fc2.weight"), p("layers.0.dape.fc2.bias")};
      const size_t BT = size_t(spec.B) * spec.T, C = size_t(spec.NH) * spec.HS;
      const size_t BNTT = BT * spec.NH * spec.T;
      std::vector<double> qkv(BT * 3 * C), q(BT * C), k(BT * C), v(BT * C), scores(BNTT), probs(BNTT),
          bias(size_t(spec.NH) * spec.T * spec.T), expected(BT * C), out(BT * C);
      Rng rng(1, "qkv");
      for (auto& x : qkv) x = rng.normal();
      kernels::attention_forward(expected.data(),
                                 {q.data(), k.data(), v.data(), scores.data(), probs.data(), bias.data()},
                                 qkv.data(), pe, dape, spec);
      // The Figure-1 components of one query reproduce the forward's saved scores, bias and probabilities.
      const int b = 1, i = 6, n = causal ? i + 1 : spec.T, NH = spec.NH, T = spec.T;
      std::vector<double> cs(size_t(NH) * n), cb(cs.size()), cf(cs.size());
      kernels::attention_query_components(cs.data(), cb.data(), cf.data(), qkv.data(), pe, dape, spec, b, i);
      for (int h = 0; h < NH; ++h) {
        const size_t row = ((size_t(b) * NH + h) * T + i) * T;
        std::vector<double> logits(n);
        for (int j = 0; j < n; ++j) {
          const size_t e = size_t(h) * n + j;
          ASSERT_NEAR(cs[e], scores[row + j], 1e-14) << testing::describe(config);
          if (spec.pe != kernels::PeKind::none && spec.pe != kernels::PeKind::rope)
            ASSERT_NEAR(cb[e], bias[(size_t(h) * T + i) * T + j], 1e-14) << testing::describe(config);
          else
            ASSERT_EQ(cb[e], 0.0);
          if (spec.dape == kernels::DapeMode::off) ASSERT_EQ(cf[e], 0.0);
          const bool bias_added = spec.dape != kernels::DapeMode::concat;
          logits[j] = cs[e] + (bias_added ? cb[e] : 0.0) + cf[e];
        }
        const double maxv = *std::max_element(logits.begin(), logits.end());
        double sum = 0;
        for (double& l : logits) sum += (l = std::exp(l - maxv));
        for (int j = 0; j < n; ++j)
          ASSERT_NEAR(logits[j] / sum, probs[row + j], 1e-13) << testing::describe(config) << " head " << h;
      }
      for (int block : {1, 3, 11, 64}) {
        kernels::attention_forward_inference(out.data(), qkv.data(), pe, dape, spec, block);
        for (size_t i = 0; i < out.size(); ++i)
          ASSERT_NEAR(out[i], expected[i], 1e-13) << testing::describe(config) << " block " << block;
      }
    }
  }
}

}  // namespace
}  // namespace dape
