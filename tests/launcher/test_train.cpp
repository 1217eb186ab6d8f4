// Short real training runs of the `dape` binary: determinism, the seed, --set, the run directory's files, and
// train.kerple_project.
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "launcher/config.h"
#include "launcher/train.h"
#include "model/config.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

// 20 steps of the tiny model on windows of 16 tokens: well under a second.
const std::vector<std::string> kShort = {"train.steps=20", "train.seq_len=16", "train.log_every=5"};

std::vector<std::string> with(std::vector<std::string> sets, const std::vector<std::string>& more) {
  sets.insert(sets.end(), more.begin(), more.end());
  return sets;
}

std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> out;
  for (const MetricsRecord& r : read_metrics(metrics.string()))
    if (r.count("loss")) out.push_back(r.at("loss"));
  return out;
}

using TrainTest = ScratchTest;

TEST_F(TrainTest, SameSeedGivesIdenticalMetricsAndOtherSeedDiffers) {
  threads = 2;  // determinism must hold with parallel reductions too
  ASSERT_EQ(train(kTinyConfig, cwd() / "a", kShort).exit_code, 0);
  ASSERT_EQ(train(kTinyConfig, cwd() / "b", kShort).exit_code, 0);
  DapeRun c = train(kTinyConfig, cwd() / "c", with(kShort, {"train.seed=7"}));
  ASSERT_EQ(c.exit_code, 0) << c.err;

  std::vector<std::string> a = metrics_without_timing(cwd() / "a" / "metrics.jsonl");
  std::vector<std::string> b = metrics_without_timing(cwd() / "b" / "metrics.jsonl");
  ASSERT_EQ(a.size(), 6u);  // steps 1, 5, 10, 15, 20 and the validation record
  EXPECT_EQ(a, b);
  EXPECT_NE(a.back().find("\"val_loss\":"), std::string::npos) << a.back();
  for (size_t i = 0; i + 1 < a.size(); ++i)
    for (const char* field : {"\"step\":", "\"loss\":", "\"lr\":", "\"grad_norm\":", "\"tokens\":"})
      EXPECT_NE(a[i].find(field), std::string::npos) << field << " missing in " << a[i];

  std::vector<double> la = losses(cwd() / "a" / "metrics.jsonl"), lc = losses(cwd() / "c" / "metrics.jsonl");
  ASSERT_EQ(la.size(), lc.size());
  EXPECT_NE(la, lc);
  EXPECT_LT(la.back(), la.front()) << "the loss did not fall in 20 steps";
}

TEST_F(TrainTest, MetricsHoldTimingFieldsAndTheSchedule) {
  DapeRun run = train(kTinyConfig, cwd() / "run", with(kShort, {"train.log_every=1"}));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<MetricsRecord> records = read_metrics((cwd() / "run").string());
  ASSERT_EQ(records.size(), 21u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(records[i].at("step"), i + 1);
    EXPECT_GT(records[i].at("tokens_per_s"), 0);
    EXPECT_GE(records[i].at("elapsed_s"), 0);
    EXPECT_EQ(records[i].at("tokens"), (i + 1) * 8 * 16);
  }
  // The n-th update uses lr(n - 1): 0 first, then linear warmup over 10 steps to 1e-3.
  EXPECT_EQ(records[0].at("lr"), 0.0);
  EXPECT_DOUBLE_EQ(records[5].at("lr"), 5e-4);
  EXPECT_DOUBLE_EQ(records[10].at("lr"), 1e-3);
  EXPECT_GT(records[20].at("val_loss"), 0);
  EXPECT_EQ(records[20].at("val_windows"), 64);
  // stdout: the log lines and the loss plot.
  EXPECT_NE(run.out.find("step 20/20 | loss "), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("parameters, activation arena"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("loss (*) by step"), std::string::npos) << run.out;
}

TEST_F(TrainTest, RunDirHoldsResolvedConfigAndWeightsWithConfigAttribute) {
  std::vector<std::string> sets = with(kShort, {"model.pe=alibi", "model.n_layers=1", "train.grad_accum=2"});
  ASSERT_EQ(train(kTinyConfig, cwd() / "run", sets).exit_code, 0);

  // config.yaml is the resolved config: the overrides are in it and it loads to the same config.
  RunConfig expected = load_config(kTinyConfig, sets);
  RunConfig resolved = load_config((cwd() / "run" / "config.yaml").string(), {});
  EXPECT_EQ(to_yaml(resolved), to_yaml(expected));
  EXPECT_EQ(resolved.model.pe, model::PositionalEncoding::alibi);
  EXPECT_EQ(resolved.train.grad_accum, 2);

  checkpoint::H5Reader weights((cwd() / "run" / "model.h5").string());
  EXPECT_EQ(weights.attribute_string("/", "config"), model::to_json(expected.model));
  EXPECT_TRUE(weights.has("embed.weight"));
  EXPECT_FALSE(weights.has("layers.1.attn.qkv.weight")) << "model.n_layers=1 was not applied";
  EXPECT_FALSE(fs::exists(cwd() / "run" / "config.yaml.tmp"));
}

TEST_F(TrainTest, SetOverridesTheFileAndLaterSetWins) {
  DapeRun run = train(kTinyConfig, cwd() / "run",
                      {"train.steps=3", "train.log_every=1", "train.steps=2", "train.seq_len=8"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<MetricsRecord> records = read_metrics((cwd() / "run").string());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[1].at("step"), 2);
  EXPECT_EQ(records[1].at("tokens"), 2 * 8 * 8);
}

TEST_F(TrainTest, DefaultRunDirIsNamedAfterTheConfig) {
  DapeRun run = dape("train " + quote(kTinyConfig) + " --set train.steps=1 --set train.seq_len=8");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<fs::path> runs;
  for (const auto& entry : fs::directory_iterator(cwd() / "runs")) runs.push_back(entry.path());
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_TRUE(std::regex_match(runs[0].filename().string(), std::regex(R"(tiny-\d{8}-\d{6})")))
      << runs[0].filename();
  EXPECT_TRUE(fs::exists(runs[0] / "model.h5"));
}

// With a large learning rate some Kerple p or a is pushed below the forward clamp; train.kerple_project keeps
// the stored values at >= 0.01, the default (straight-through) lets them drift.
std::vector<float> kerple_values(const fs::path& weights_file) {
  checkpoint::H5Reader weights(weights_file.string());
  std::vector<float> values;
  int tensors = 0;
  for (const std::string& name : weights.datasets("/")) {
    if (!is_kerple_parameter(name)) continue;
    ++tensors;
    std::vector<float> v = weights.read_float(name);
    values.insert(values.end(), v.begin(), v.end());
  }
  EXPECT_EQ(tensors, 4) << "expected p and a of 2 layers";
  return values;
}

TEST_F(TrainTest, KerpleProjectionKeepsStoredValuesAboveTheClamp) {
  std::vector<std::string> sets =
      with(kShort, {"model.pe=kerple", "train.lr=0.05", "train.min_lr=0.05", "train.warmup_steps=0"});
  ASSERT_EQ(train(kTinyConfig, cwd() / "free", with(sets, {"train.kerple_project=false"})).exit_code, 0);
  ASSERT_EQ(train(kTinyConfig, cwd() / "projected", with(sets, {"train.kerple_project=true"})).exit_code, 0);

  std::vector<float> free = kerple_values(cwd() / "free" / "model.h5");
  std::vector<float> projected = kerple_values(cwd() / "projected" / "model.h5");
  ASSERT_EQ(free.size(), 16u);
  EXPECT_LT(*std::min_element(free.begin(), free.end()), float(kernels::kKerpleMin))
      << "no value drifted below the clamp";
  EXPECT_GE(*std::min_element(projected.begin(), projected.end()), float(kernels::kKerpleMin));
}

}  // namespace
}  // namespace dape::launcher::testing
