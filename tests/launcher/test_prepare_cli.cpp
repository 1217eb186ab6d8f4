// `dape prepare` and `dape corpus` as a user runs them, and `dape train` on prepared shards: exit codes,
// one-line errors naming the file, nothing half-written, byte-identical shards across processes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "run_dape.h"

namespace dape::launcher::testing {
namespace {

const std::vector<std::string> kShort = {"train.steps=4", "train.seq_len=16", "train.log_every=2"};

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class PrepareCliTest : public ScratchTest {
 protected:
  // `dape prepare --tokenizer byte --out OUT` with the given inputs and extra arguments.
  DapeRun prepare(const std::vector<fs::path>& inputs, const fs::path& out,
                  const std::string& extra = "") const {
    std::string args = "prepare --tokenizer byte --out " + quote(out.string());
    for (const fs::path& in : inputs) args += " --input " + quote(in.string());
    return dape(args + " " + extra);
  }
};

TEST_F(PrepareCliTest, PreparesAndTrainsOnShards) {
  DapeRun run = prepare({kTrainText, kValText}, dir() / "ds", "--val-fraction 0.5");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("prepared"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("tokens/s"), std::string::npos) << run.out;
  EXPECT_TRUE(fs::exists(dir() / "ds/dataset.json"));
  EXPECT_TRUE(fs::exists(dir() / "ds/train/shard_000000.h5"));
  EXPECT_TRUE(fs::exists(dir() / "ds/val/shard_000000.h5"));

  // data.train and data.val both name the directory: its train and val splits.
  DapeRun train_run = train(kTinyConfig, cwd() / "run",
                            {kShort[0], kShort[1], kShort[2], "data.train=" + (dir() / "ds").string(),
                             "data.val=" + (dir() / "ds").string()});
  ASSERT_EQ(train_run.exit_code, 0) << train_run.err;
  EXPECT_TRUE(fs::exists(cwd() / "run/model.h5"));
  // A split folder, and a text file for the other side, work too.
  train_run = train(kTinyConfig, cwd() / "run2",
                    {kShort[0], kShort[1], kShort[2], "data.train=" + (dir() / "ds/val").string()});
  ASSERT_EQ(train_run.exit_code, 0) << train_run.err;
}

TEST_F(PrepareCliTest, ShardsAreByteIdenticalAcrossRuns) {
  std::string jsonl;
  for (int i = 0; i < 200; ++i)
    jsonl += "{\"text\": \"document " + std::to_string(i) + ": " +
             std::string(static_cast<size_t>(i % 90), 'z') + "\"}\n";
  write_text(dir() / "docs.jsonl", jsonl);
  const std::vector<fs::path> inputs = {kValText, dir() / "docs.jsonl"};
  ASSERT_EQ(prepare(inputs, dir() / "a", "--val-fraction 0.3 --shard-tokens 5000 --threads 1").exit_code, 0);
  ASSERT_EQ(prepare(inputs, dir() / "b", "--val-fraction 0.3 --shard-tokens 5000 --threads 2").exit_code, 0);
  int compared = 0;
  for (const char* split : {"train", "val"}) {
    for (const auto& e : fs::directory_iterator(dir() / "a" / split)) {
      EXPECT_EQ(read_bytes(e.path()), read_bytes(dir() / "b" / split / e.path().filename())) << e.path();
      ++compared;
    }
  }
  EXPECT_GT(compared, 3);
}

TEST_F(PrepareCliTest, BadInputExitsNonZeroNamingTheFileAndWritesNothing) {
  DapeRun run = prepare({dir() / "missing.txt"}, dir() / "out1");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(
      run.err.find("dape: error: prepare: input '" + (dir() / "missing.txt").string() + "': no such file"),
      std::string::npos)
      << run.err;
  EXPECT_FALSE(fs::exists(dir() / "out1"));

  std::string lines;
  for (int i = 0; i < 30; ++i) lines += "{\"text\": \"document " + std::to_string(i) + "\"}\n";
  write_text(dir() / "bad.jsonl", lines + "{\"title\": \"no text\"}\n");
  run = prepare({dir() / "bad.jsonl"}, dir() / "out2", "--shard-tokens 50");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("bad.jsonl' line 31: no \"text\" field"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(dir() / "out2"));

  write_text(dir() / "empty.txt", "");
  run = prepare({dir() / "empty.txt"}, dir() / "out3");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("no documents"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(dir() / "out3"));

  run = prepare({kValText}, dir() / "out4", "--val-fraction 1.5");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("--val-fraction"), std::string::npos) << run.err;
  run = dape("prepare --tokenizer gpt3 --input " + quote(kValText) + " --out " +
             quote((dir() / "out5").string()));
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_FALSE(fs::exists(dir() / "out4"));
  EXPECT_FALSE(fs::exists(dir() / "out5"));

  run = dape("corpus novels-like --out " + quote((dir() / "out6").string()));
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("novels-like"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(dir() / "out6"));
}

TEST_F(PrepareCliTest, TrainRefusesBadShardsAndMismatches) {
  write_text(dir() / "short.txt", "a short text of forty-some bytes in all.");
  ASSERT_EQ(prepare({dir() / "short.txt"}, dir() / "ds", "--val-fraction 0").exit_code, 0);
  const std::string ds = (dir() / "ds").string();

  // seq_len longer than the data.
  DapeRun run = train(kTinyConfig, cwd() / "r1", {"train.steps=2", "train.seq_len=64", "data.train=" + ds});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find(ds + " (train)' holds 41 tokens, fewer than one window of T+1 = 65"),
            std::string::npos)
      << run.err;
  EXPECT_FALSE(fs::exists(cwd() / "r1"));

  // Another tokenizer in the config than in the shards.
  run = train(kTinyConfig, cwd() / "r2",
              {"train.steps=2", "train.seq_len=8", "data.train=" + ds, "data.tokenizer=gpt2",
               "model.vocab_size=50304"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("prepared with tokenizer 'byte'"), std::string::npos) << run.err;

  // The val split is empty.
  run = train(kTinyConfig, cwd() / "r3",
              {"train.steps=2", "train.seq_len=8", "data.train=" + ds, "data.val=" + ds});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("holds no val documents"), std::string::npos) << run.err;

  // A truncated shard.
  const fs::path shard = dir() / "ds/train/shard_000000.h5";
  fs::resize_file(shard, fs::file_size(shard) - 10);
  run = train(kTinyConfig, cwd() / "r4", {"train.steps=2", "train.seq_len=8", "data.train=" + ds});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("shard_000000.h5' is"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("truncated"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(cwd() / "r4"));
}

}  // namespace
}  // namespace dape::launcher::testing
