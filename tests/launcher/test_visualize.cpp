// `dape visualize` through the real binary: the curves JSON against GPT::probe_attention, the PNG, one head,
// bad arguments, and the message when matplotlib is missing.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model_files.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

using model::PositionalEncoding;
using VisualizeTest = ScratchTest;

std::string visualize_args(const fs::path& model, const std::string& more) {
  return "visualize --checkpoint " + quote(model.string()) + " --data " + quote(kValText) + " " + more;
}

TEST_F(VisualizeTest, WritesTheCurvesOfProbeAttentionAndThePng) {
  auto gpt = write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::dape_kerple), 31);
  DapeRun run = dape(visualize_args(dir() / "m.h5", "--length 64 --query 40 --layer 1 --out fig/f1.png"));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const nlohmann::json j = read_json(cwd() / "fig" / "f1.json");
  EXPECT_EQ(j["pe"], "dape-kerple");
  EXPECT_EQ(j["query"], 40);
  EXPECT_EQ(j["layer"], 1);
  EXPECT_EQ(j["n_keys"], 41);
  EXPECT_EQ(j["heads"], nlohmann::json({0, 1, 2, 3}));

  const std::vector<int32_t> tokens = val_tokens();  // the first window of 64 is tokens 0..63
  const auto probe = gpt->probe_attention(tokens.data(), 64, 1, 40);
  for (const char* field : {"scores", "bias", "dape"}) {
    const std::vector<float>& want = field == std::string("scores") ? probe.scores
                                     : field == std::string("bias") ? probe.bias
                                                                    : probe.dape;
    ASSERT_EQ(j[field].size(), 4u) << field;
    for (int h = 0; h < 4; ++h)
      for (int k = 0; k < 41; ++k)
        EXPECT_NEAR(j[field][h][k].get<double>(), want[size_t(h) * 41 + k], 1e-6)
            << field << " h" << h << " k" << k;
  }
  if (python_has("matplotlib")) EXPECT_TRUE(is_png(cwd() / "fig" / "f1.png"));

  // One head only; the default query is the last position.
  run = dape(visualize_args(dir() / "m.h5", "--length 32 --head 2 --out h2.png"));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const nlohmann::json h = read_json(cwd() / "h2.json");
  EXPECT_EQ(h["heads"], nlohmann::json({2}));
  EXPECT_EQ(h["query"], 31);
  EXPECT_EQ(h["scores"].size(), 1u);
  EXPECT_EQ(h["scores"][0].size(), 32u);
}

TEST_F(VisualizeTest, BadArgumentsAndMissingMatplotlib) {
  write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::alibi), 32);
  for (const std::string& bad : {std::string("--length 64 --query 64"), std::string("--length 64 --layer 2"),
                                 std::string("--length 64 --head 4"), std::string("--length 1000000")}) {
    DapeRun run = dape(visualize_args(dir() / "m.h5", bad + " --out f.png"));
    EXPECT_EQ(run.exit_code, 2) << bad << ": " << run.err;
    EXPECT_NE(run.err.find("dape: error:"), std::string::npos) << run.err;
  }
  ScopedEnv no_matplotlib("PYTHONPATH", make_matplotlib_stub(dir() / "stub").string());
  DapeRun run = dape(visualize_args(dir() / "m.h5", "--length 16 --out f.png"));
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(fs::exists(cwd() / "f.json"));
  EXPECT_FALSE(fs::exists(cwd() / "f.png"));
  EXPECT_NE(run.err.find("skipped"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace dape::launcher::testing
