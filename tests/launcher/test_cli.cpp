// The `dape` binary's contract for bad input: exit code 2, one line on stderr naming the key, the value and
// what is expected, and nothing created on disk. Also --help, explain-config and the run directory checks.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "launcher/config.h"
#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

std::string data_section() {
  return "data:\n  train: " + kTrainText + "\n  val: " + kValText + "\n";
}

struct BadConfig {
  std::string name;
  std::vector<std::string> sets;      // --set overrides of configs/tiny.yaml
  std::string yaml;                   // if not empty: this config file instead of tiny.yaml
  std::vector<std::string> expected;  // substrings of the one error line
};

std::ostream& operator<<(std::ostream& os, const BadConfig& c) {
  return os << c.name;
}

const std::vector<BadConfig> kBadConfigs = {
    {"heads_do_not_divide_width", {"model.n_heads=5"}, "", {"model.n_heads = 5", "divisible", "64"}},
    {"zero_seq_len", {"train.seq_len=0"}, "", {"train.seq_len = 0", "positive integer"}},
    {"negative_lr", {"train.lr=-1"}, "", {"train.lr = -1", "positive"}},
    {"min_lr_above_lr", {"train.min_lr=0.01"}, "", {"train.min_lr = 0.01", "min_lr <= train.lr (0.001)"}},
    {"negative_warmup", {"train.warmup_steps=-1"}, "", {"train.warmup_steps = -1", ">= 0"}},
    {"unknown_pe", {"model.pe=rotary"}, "", {"model.pe", "rotary", "dape-kerple"}},
    {"unknown_activation", {"model.dape.activation=tanh"}, "", {"model.dape.activation", "tanh", "gelu"}},
    {"missing_train_file", {"data.train=missing.txt"}, "", {"data.train = ", "missing.txt", "not found"}},
    {"missing_val_file",
     {"data.val=/nonexistent/val.txt"},
     "",
     {"data.val = /nonexistent/val.txt", "not found"}},
    {"vocab_below_tokenizer",
     {"model.vocab_size=100"},
     "",
     {"model.vocab_size = 100", "data.tokenizer", "256"}},
    {"unknown_tokenizer", {"data.tokenizer=gpt3"}, "", {"data.tokenizer", "gpt3", "byte"}},
    {"unknown_key_set", {"train.lrr=0.1"}, "", {"train.lrr = 0.1", "unknown key", "did you mean train.lr?"}},
    {"key_in_wrong_section", {"train.n_layers=2"}, "", {"train.n_layers", "did you mean model.n_layers?"}},
    {"not_an_integer", {"model.d_model=64.5"}, "", {"model.d_model = 64.5", "expected an integer"}},
    {"not_a_number", {"train.lr=fast"}, "", {"train.lr = fast", "expected a number"}},
    {"not_a_bool", {"model.causal=maybe"}, "", {"model.causal = maybe", "expected true or false"}},
    {"negative_seed", {"train.seed=-3"}, "", {"train.seed = -3", ">= 0"}},
    {"negative_ckpt_every", {"train.ckpt_every=-1"}, "", {"train.ckpt_every = -1", ">= 0"}},
    {"negative_keep_last", {"train.keep_last=-2"}, "", {"train.keep_last = -2", ">= 0"}},
    {"beta_out_of_range", {"train.beta2=1"}, "", {"train.beta2 = 1", "beta2 < 1"}},
    {"set_without_equals", {"train.steps"}, "", {"--set train.steps", "KEY=VALUE"}},
    {"unknown_key_in_file",
     {},
     "model:\n  n_layer: 2\n" + data_section(),
     {"model.n_layer = 2", "unknown key", "did you mean model.n_layers?"}},
    {"list_for_integer_in_file",
     {},
     "train:\n  steps: [1, 2]\n" + data_section(),
     {"train.steps = (a list)", "expected an integer"}},
    {"scalar_for_section_in_file", {}, "model: 5\n" + data_section(), {"model = 5", "expected a map"}},
    {"missing_required_val", {}, "data:\n  train: " + kTrainText + "\n", {"data.val", "required"}},
    {"key_set_twice_in_file",
     {},
     "model:\n  d_model: 64\nmodel.d_model: 96\n" + data_section(),
     {"model.d_model = 96", "more than once"}},
    {"empty_value", {"train.lr="}, "", {"train.lr = '': expected a number"}},
    {"yaml_syntax_error", {}, "model:\n  n_layers: [2\n", {"not valid YAML", "line"}},
};

class BadConfigTest : public ScratchTest, public ::testing::WithParamInterface<BadConfig> {};

TEST_P(BadConfigTest, ExitsTwoWithOneLineAndCreatesNothing) {
  const BadConfig& c = GetParam();
  std::string config = kTinyConfig;
  if (!c.yaml.empty()) {
    config = (dir() / "config.yaml").string();
    write_text(config, c.yaml);
  }
  // Once with the default run directory (runs/... under the cwd), once with an explicit one.
  for (bool explicit_dir : {false, true}) {
    std::string args = "train " + quote(config);
    if (explicit_dir) args += " --run-dir " + quote((cwd() / "run").string());
    for (const std::string& s : c.sets) args += " --set " + quote(s);
    DapeRun run = dape(args);
    EXPECT_EQ(run.exit_code, 2) << run.err;
    ASSERT_EQ(run.err.rfind("dape: error: ", 0), 0u) << run.err;
    EXPECT_EQ(run.err.find('\n'), run.err.size() - 1) << "more than one line:\n" << run.err;
    for (const std::string& e : c.expected)
      EXPECT_NE(run.err.find(e), std::string::npos) << e << " not in " << run.err;
    EXPECT_TRUE(fs::is_empty(cwd())) << "dape created files for a bad config";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, BadConfigTest, ::testing::ValuesIn(kBadConfigs),
                         [](const auto& info) { return info.param.name; });

using CliTest = ScratchTest;

TEST_F(CliTest, MissingConfigFileExitsTwo) {
  DapeRun run = dape("train no-such-config.yaml");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("dape: error: config = no-such-config.yaml: file not found"), std::string::npos)
      << run.err;
  EXPECT_TRUE(fs::is_empty(cwd()));
}

TEST_F(CliTest, BadUsageExitsTwo) {
  for (const char* args : {"", "train", "fly configs/tiny.yaml", "train a.yaml --no-such-flag"}) {
    DapeRun run = dape(args);
    EXPECT_EQ(run.exit_code, 2) << args;
    EXPECT_EQ(run.err.rfind("dape: error: ", 0), 0u) << args << ": " << run.err;
  }
  EXPECT_TRUE(fs::is_empty(cwd()));
}

TEST_F(CliTest, TrainHelpListsEveryKey) {
  DapeRun run = dape("train --help");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  for (const ConfigKey& key : config_schema())
    EXPECT_NE(run.out.find("  " + key.name + " "), std::string::npos) << key.name << " missing from --help";
  EXPECT_NE(run.out.find("--set"), std::string::npos);
  EXPECT_NE(run.out.find("--run-dir"), std::string::npos);
}

TEST_F(CliTest, ConfigurationDocMatchesExplainConfig) {
  DapeRun run = dape("explain-config");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, schema_markdown());
  EXPECT_EQ(read_text(DAPE_SOURCE_DIR "/docs/configuration.md"), run.out)
      << "docs/configuration.md is stale: regenerate it with `build/dape explain-config > "
         "docs/configuration.md`";
}

TEST_F(CliTest, RunDirHoldingARunIsRefused) {
  for (const char* output : {"metrics.jsonl", "model.h5"}) {
    fs::path run_dir = cwd() / output;
    fs::create_directories(run_dir);
    write_text(run_dir / output, "earlier run\n");
    DapeRun run = train(kTinyConfig, run_dir, {"train.steps=1"});
    EXPECT_EQ(run.exit_code, 2) << run.err;
    EXPECT_NE(run.err.find("--run-dir = " + run_dir.string() + ": already holds " + output),
              std::string::npos)
        << run.err;
    EXPECT_NE(run.err.find("pick another --run-dir or delete it"), std::string::npos) << run.err;
    EXPECT_EQ(std::distance(fs::directory_iterator(run_dir), fs::directory_iterator()), 1)
        << "run dir was touched";
  }
}

TEST_F(CliTest, NonFiniteLossStopsWithExitOneNamingTheStep) {
  fs::path run_dir = cwd() / "run";
  DapeRun run =
      train(kTinyConfig, run_dir,
            {"train.steps=20", "train.seq_len=16", "train.lr=1e30", "train.clip=0", "train.warmup_steps=0"});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_EQ(run.err.rfind("dape: error: step ", 0), 0u) << run.err;
  EXPECT_NE(run.err.find("not finite"), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find('\n'), run.err.size() - 1) << run.err;
  EXPECT_FALSE(fs::exists(run_dir / "model.h5"));
  EXPECT_TRUE(fs::exists(run_dir / "config.yaml"));
}

}  // namespace
}  // namespace dape::launcher::testing
