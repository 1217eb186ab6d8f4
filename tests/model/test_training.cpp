// Training behaviour of the model with its optimizer: the tiny model memorises a short sequence,
// runs are bit-reproducible, and the learning-rate schedule follows DAPE-SPEC §2.2.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "model/gpt.h"
#include "model/optimizer.h"

namespace dape {
namespace {

model::ModelConfig tiny_config(model::PositionalEncoding pe) {
  model::ModelConfig c;  // the defaults are the tiny config: 2 layers, d 64, 4 heads, vocab 256
  c.pe = pe;
  return c;
}

// Trains on one fixed sequence and returns the loss after every step.
std::vector<float> train_on_one_sequence(model::PositionalEncoding pe, int steps) {
  const std::string text = "DAPE adapts positions to data!!";  // 31 bytes: 30 next-byte targets
  std::vector<int32_t> inputs(text.begin(), text.end() - 1), targets(text.begin() + 1, text.end());
  const int T = static_cast<int>(inputs.size());
  model::GPT<float> gpt(tiny_config(pe));
  gpt.init_parameters(42);
  model::AdamWConfig config;
  config.weight_decay = 0.0;
  model::AdamW<float> adamw(gpt.parameter_table(), config);
  std::vector<float> losses;
  for (int step = 0; step < steps; ++step) {
    gpt.zero_grad();
    losses.push_back(gpt.forward(inputs.data(), targets.data(), 1, T));
    gpt.backward(1.0f);
    model::clip_grad_norm(gpt.grads(), gpt.num_parameters(), 1.0);
    adamw.step(gpt.params(), gpt.grads(), 3e-3);
  }
  return losses;
}

TEST(Training, TinyModelMemorisesAShortSequence) {
  for (auto pe : {model::PositionalEncoding::dape_kerple, model::PositionalEncoding::rope}) {
    const std::vector<float> losses = train_on_one_sequence(pe, 150);
    std::printf("overfit %-12s loss %.3f -> %.4f after %zu steps\n", model::to_string(pe).c_str(),
                losses.front(), losses.back(), losses.size());
    EXPECT_GT(losses.front(), 4.0f);  // about ln 256 at init
    EXPECT_LT(losses.back(), 0.05f) << model::to_string(pe);
  }
}

TEST(Training, SameSeedGivesBitIdenticalLosses) {
  const std::vector<float> a = train_on_one_sequence(model::PositionalEncoding::dape_fire, 5);
  const std::vector<float> b = train_on_one_sequence(model::PositionalEncoding::dape_fire, 5);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i;
}

TEST(Training, LearningRateScheduleWarmsUpThenDecaysToMin) {
  model::LrSchedule s{6e-4, 6e-5, 500, 50000};
  EXPECT_EQ(s.lr_at(0), 0.0);  // the first update has lr 0 (DAPE-SPEC §2.2)
  EXPECT_DOUBLE_EQ(s.lr_at(250), 3e-4);
  EXPECT_DOUBLE_EQ(s.lr_at(500), 6e-4);
  const double mid = 6e-5 + (6e-4 - 6e-5) * 0.5 * (1 + std::cos(M_PI * 0.5));
  EXPECT_NEAR(s.lr_at(500 + 24750), mid, 1e-15);
  EXPECT_DOUBLE_EQ(s.lr_at(50000), 6e-5);
  EXPECT_DOUBLE_EQ(s.lr_at(60000), 6e-5);
  model::LrSchedule no_warmup{1e-3, 1e-4, 0, 100};
  EXPECT_DOUBLE_EQ(no_warmup.lr_at(0), 1e-3);
}

TEST(Training, ClipGradNormScalesToMaxNorm) {
  std::vector<double> g = {3.0, 4.0};
  EXPECT_DOUBLE_EQ(model::clip_grad_norm(g.data(), g.size(), 1.0), 5.0);
  EXPECT_NEAR(std::hypot(g[0], g[1]), 1.0, 1e-6);
  std::vector<double> small = {0.3, 0.4};
  model::clip_grad_norm(small.data(), small.size(), 1.0);
  EXPECT_EQ(small[0], 0.3);
}

TEST(Parameters, CountsMatchTheSpecFor125M) {
  model::ModelConfig c;
  c.n_layers = 12, c.d_model = 768, c.n_heads = 12, c.vocab_size = 50304;
  c.pe = model::PositionalEncoding::nope;
  EXPECT_EQ(model::GPT<float>(c).num_parameters(), 162322944u);  // DAPE-SPEC §1.5
  c.pe = model::PositionalEncoding::dape_kerple;
  EXPECT_EQ(model::GPT<float>(c).num_parameters(), 162322944u + 288u + 14352u);
  c.pe = model::PositionalEncoding::fire;
  EXPECT_EQ(model::GPT<float>(c).num_parameters(), 162322944u + 5544u);
}

TEST(Parameters, WeightDecayFollowsTheSpecRule) {
  model::ModelConfig c = tiny_config(model::PositionalEncoding::t5);
  for (const model::ParameterSpec& p : model::build_parameter_table(c)) {
    const bool exempt = p.name.find(".ln") != std::string::npos || p.name.starts_with("ln_f.") ||
                        (p.name.ends_with(".bias") && p.name != "t5.bias");
    EXPECT_EQ(p.weight_decay, !exempt) << p.name;
  }
}

}  // namespace
}  // namespace dape
