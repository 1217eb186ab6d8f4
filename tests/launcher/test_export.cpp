// `dape export` through the real binary: the state_dict round trip (tools/dape_torch.py gives the loss dape
// eval gives, also on the CHE encoder's backbone), the module against the oracle for every positional
// encoding, and a damaged input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include "launcher/che.h"
#include "model_files.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

using model::PositionalEncoding;
using ExportTest = ScratchTest;

// The CHE encoder (launcher/che.cpp: post-LN, ReLU, scaled embedding, no attention biases, a head bias) in
// small, as a byte language model so that dape eval scores it: the vocabulary as classes, no dropout, and
// positions not randomized, since dape_torch cannot reproduce dape's draws.
model::ModelConfig che_backbone_config() {
  model::ModelConfig c = che::default_config(data::che::Task::even_pairs, PositionalEncoding::dape_kerple,
                                             che::budgets().front())
                             .model;
  const model::ModelConfig small = small_config(c.pe);
  c.n_layers = small.n_layers, c.d_model = small.d_model, c.n_heads = small.n_heads;
  c.vocab_size = small.vocab_size, c.dape.width = small.dape.width;
  c.output_size = 0;
  c.dropout = 0;
  c.randomized_positions = 0;
  return c;
}

TEST_F(ExportTest, ExportedModelGivesTheLossOfDapeEval) {
  if (!python_has("torch")) GTEST_SKIP() << kPython << " has no torch (python3-torch)";
  const std::pair<std::string, model::ModelConfig> cases[] = {
      {"dape-kerple", small_config(PositionalEncoding::dape_kerple)},
      {"t5", small_config(PositionalEncoding::t5)},
      {"che-backbone", che_backbone_config()}};
  for (const auto& [name, config] : cases) {
    SCOPED_TRACE(name);
    const fs::path weights = dir() / (name + ".h5");
    write_seeded_model(weights, config, 21);
    DapeRun run =
        dape("export --checkpoint " + quote(weights.string()) + " --out " + quote(name + "/model.pt"));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_TRUE(fs::exists(cwd() / name / "model.pt"));
    EXPECT_EQ(read_json(cwd() / name / "model.json")["model"]["pe"], model::to_string(config.pe));

    run = dape("eval --checkpoint " + quote(weights.string()) + " --data " + quote(kValText) +
               " --lengths 96 --batches 1 --last 48 --json e.json");
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const double ours = read_json(cwd() / "e.json")["results"][0]["loss"].get<double>();
    const CommandRun torch =
        run_command(kPython + " " + quote(kTestsDir + "/torch_eval.py") + " export " +
                    quote((cwd() / name / "model.pt").string()) + " " + quote(kValText) + " 96 48 1 " +
                    quote(weights.string()));  // also: the state_dict holds exactly the file's tensors
    ASSERT_EQ(torch.exit_code, 0) << torch.out;
    const double theirs = std::stod(torch.out);
    std::printf("%s: dape eval %.7f, exported model %.7f\n", name.c_str(), ours, theirs);
    EXPECT_NEAR(ours, theirs, 1e-4);
  }
}

TEST_F(ExportTest, DapeTorchMatchesTheOracleForEveryPositionalEncoding) {
  if (!python_has("torch")) GTEST_SKIP() << kPython << " has no torch (python3-torch)";
  const CommandRun check = run_command(kPython + " " + quote(kTestsDir + "/check_dape_torch.py"));
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_NE(check.out.find("0 failed"), std::string::npos) << check.out;
}

TEST_F(ExportTest, DamagedInputFails) {
  write_seeded_model(dir() / "m.h5", small_config(PositionalEncoding::alibi), 22);
  fs::resize_file(dir() / "m.h5", 4096);
  DapeRun run = dape("export --checkpoint " + quote((dir() / "m.h5").string()) + " --out model.pt");
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find((dir() / "m.h5").string()), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(cwd() / "model.pt"));
}

}  // namespace
}  // namespace dape::launcher::testing
