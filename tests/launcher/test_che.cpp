// `dape che`: sampling, a real learning signal from a short CPU training run, evaluation, the table, resume
// and bad input; plus the launcher's CHE pieces (lengths, batches, the table) directly.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "launcher/che.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

using CheTest = ScratchTest;

// A tiny encoder on even_pairs up to length 10: under a second per run, yet it has to learn the task (its
// answer is whether the first and the last bit differ).
const std::string kTinyEvenPairs =
    "--task even_pairs --pe kerple --budget smoke --set train.steps=600 "
    "--set model.n_layers=2 --set model.d_model=32 --set model.n_heads=4 --set che.max_length=10 "
    "--set che.eval_lengths=1-10,11-20:9 --set che.eval_samples=64";

std::vector<nlohmann::json> jsonl(const std::string& text) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST_F(CheTest, SamplePrintsDeterministicJsonlWithTheTaskLayout) {
  DapeRun a = dape("che sample --task binary_addition --length 8 --count 5 --seed 3");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  DapeRun b = dape("che sample --task binary_addition --length 8 --count 5 --seed 3");
  DapeRun c = dape("che sample --task binary_addition --length 8 --count 5 --seed 4");
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  const auto lines = jsonl(a.out);
  ASSERT_EQ(lines.size(), 5u);
  for (const auto& j : lines) {
    EXPECT_EQ(j["task"], "binary_addition");
    EXPECT_EQ(j["length"], 8);
    EXPECT_EQ(j["input"].size(), 8u);   // m = n
    EXPECT_EQ(j["target"].size(), 9u);  // k = m + 1
  }
}

TEST_F(CheTest, BadInputIsAClearErrorWithExitCode2) {
  struct Case {
    std::string args, message;
  };
  for (const Case& c : std::vector<Case>{
           {"che sample --task no_such_task --length 5", "unknown CHE task 'no_such_task'; expected one of"},
           {"che sample --task parity_check --length 0", "--length = 0"},
           {"che sample --task parity_check --length 5 --count -3", "--count = -3"},
           {"che train --task no_such_task --pe kerple", "unknown CHE task"},
           {"che train --task parity_check --pe kerplee", "--pe = 'kerplee'"},
           {"che train --task parity_check --pe kerple --budget huge", "--budget = huge"},
           {"che train --task parity_check --pe kerple --set che.max_length=0", "che.max_length"},
           {"che eval --run-dir nowhere", "--run-dir = nowhere"},
           {"che table nowhere", "nowhere: not found"},
       }) {
    DapeRun run = dape(c.args);
    EXPECT_EQ(run.exit_code, 2) << c.args << "\n" << run.err;
    EXPECT_NE(run.err.find(c.message), std::string::npos) << c.args << "\n" << run.err;
    EXPECT_EQ(run.err.find('\n'), run.err.size() - 1) << "one line: " << run.err;
  }
  EXPECT_TRUE(fs::is_empty(cwd())) << "nothing may be written for bad input";
}

// The acceptance test of a real learning signal: the mean over two seeds of the in-distribution accuracy
// after 600 steps is at least 90% (chance is 50%), then eval, table and resume work on those runs.
TEST_F(CheTest, TinyModelLearnsEvenPairsAndEvalAndTableReportIt) {
  double id_sum = 0;
  for (int seed : {1, 2}) {
    const fs::path run_dir = cwd() / "runs" / ("s" + std::to_string(seed));
    DapeRun train = dape("che train " + kTinyEvenPairs + " --seed " + std::to_string(seed) + " --run-dir " +
                         quote(run_dir));
    ASSERT_EQ(train.exit_code, 0) << train.err << train.out;
    EXPECT_NE(train.out.find("in-distribution accuracy"), std::string::npos) << train.out;
    DapeRun eval = dape("che eval --no-plot --run-dir " + quote(run_dir));
    ASSERT_EQ(eval.exit_code, 0) << eval.err;
    const auto e = che::evaluation_from_json(read_text(run_dir / "che_eval.json"), "che_eval.json");
    EXPECT_EQ(e.lengths, (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20}));
    EXPECT_EQ(e.id_lengths, 10);
    EXPECT_EQ(e.ood_lengths, 2);
    EXPECT_EQ(e.samples, 64);
    id_sum += e.id_mean;
  }
  EXPECT_GE(id_sum / 2, 0.9) << "mean in-distribution accuracy of two seeds";

  DapeRun table = dape("che table " + quote(cwd() / "runs"));
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("| even_pairs | regular | 50 |"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("n=2)"), std::string::npos) << table.out;

  // Evaluation is deterministic for its seed.
  const fs::path s1 = cwd() / "runs" / "s1";
  const std::string first = read_text(s1 / "che_eval.json");
  ASSERT_EQ(dape("che eval --no-plot --run-dir " + quote(s1)).exit_code, 0);
  EXPECT_EQ(read_text(s1 / "che_eval.json"), first);
}

// Batches are a function of (seed, step): a run stopped after a checkpoint and resumed ends with the same
// weights as an uninterrupted one.
TEST_F(CheTest, ResumedRunEqualsUninterruptedRun) {
  const std::string args =
      "che train --task reverse_string --pe dape-kerple --budget smoke --set train.steps=12 "
      "--set model.n_layers=1 --set model.d_model=16 --set model.n_heads=2 "
      "--set model.dape.width=8 --set che.max_length=6 --set train.log_every=1";
  ASSERT_EQ(dape(args + " --run-dir whole").exit_code, 0);
  ASSERT_EQ(dape(args + " --set train.ckpt_every=5 --set train.steps=7 --run-dir part").exit_code, 0);
  DapeRun resumed = dape(args + " --set train.ckpt_every=5 --run-dir part");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  auto losses = [&](const std::string& dir) {
    std::vector<double> out;
    for (const MetricsRecord& r : read_metrics((cwd() / dir).string()))
      if (r.count("loss")) out.push_back(r.at("loss"));
    return out;
  };
  EXPECT_EQ(losses("whole"), losses("part"));
}

TEST(CheLaunch, ParseLengthsAcceptsItemsRangesAndSteps) {
  EXPECT_EQ(che::parse_lengths("1-5", "x"), (std::vector<int>{1, 2, 3, 4, 5}));
  EXPECT_EQ(che::parse_lengths("41-100:20,3,1-2", "x"), (std::vector<int>{1, 2, 3, 41, 61, 81}));
  for (const char* bad : {"", "0", "5-3", "a-b", "1-5:0", "7:2", "1,,2"})
    EXPECT_THROW(che::parse_lengths(bad, "--lengths"), dape::ConfigError) << bad;
}

TEST(CheLaunch, BatchPutsBlanksAfterTheInputAndTargetsOnlyThere) {
  MicroBatch batch;
  che::fill_batch(data::che::Task::duplicate_string, 4, 9, 1, 0, 3, batch);
  ASSERT_EQ(batch.B, 3);
  ASSERT_EQ(batch.T, 4 + 8);
  for (int b = 0; b < 3; ++b) {
    const data::che::Instance x = data::che::sample(data::che::Task::duplicate_string, 4, 9, 1, b);
    for (int t = 0; t < 4; ++t) {
      EXPECT_EQ(batch.inputs[b * 12 + t], x.input[t]);
      EXPECT_EQ(batch.targets[b * 12 + t], -1);
    }
    for (int j = 0; j < 8; ++j) {
      EXPECT_EQ(batch.inputs[b * 12 + 4 + j], 2);  // the blank of a 2-symbol task
      EXPECT_EQ(batch.targets[b * 12 + 4 + j], x.target[j]);
    }
  }
}

TEST(CheLaunch, TableTakesTheBestSeedAndBoldsTheRowBest) {
  auto run = [](const char* pe, int seed, double ood) {
    che::Evaluation e;
    e.task = "parity_check", e.pe = pe, e.budget = "small", e.seed = seed, e.chance = 0.5;
    e.ood_mean = ood, e.id_mean = 1.0;
    return e;
  };
  const std::string table =
      che::table_markdown({run("kerple", 1, 0.50), run("kerple", 2, 0.54), run("dape-kerple", 1, 0.52)});
  EXPECT_NE(
      table.find("| parity_check † | regular | 50 | **54.0** (52.0 ± 2.8, n=2) | 52.0 (52.0 ± 0.0, n=1) |"),
      std::string::npos)
      << table;
}

}  // namespace
}  // namespace dape::launcher::testing
