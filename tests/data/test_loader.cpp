// The streaming loader: shards read as one stream with the same windows and order as TokenWindows,
// data-parallel ranks, prefetching, save/restore of the loader state, evaluation windows, bounded memory,
// and bad shards and configurations.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "error_message.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/shards.h"
#include "kernels/error.h"

namespace dape::data {
namespace {

using testing::error_message;

namespace fs = std::filesystem;

void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("dape_loader_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  const fs::path& dir() const { return dir_; }

  // Prepares `docs` with the byte tokenizer (all in train unless val_fraction > 0), small shards so that
  // windows cross shard boundaries; returns the dataset directory and the expected train stream.
  std::string prepare_docs(const std::vector<std::string>& docs, std::vector<int32_t>* stream,
                           uint64_t shard_tokens = 97, double val_fraction = 0) {
    std::string jsonl;
    for (const std::string& d : docs) jsonl += "{\"text\": \"" + d + "\"}\n";
    write_bytes(dir_ / "docs.jsonl", jsonl);
    PrepareOptions o;
    o.inputs = {(dir_ / "docs.jsonl").string()};
    o.out_dir = (dir_ / "ds").string();
    o.tokenizer = "byte";
    o.val_fraction = val_fraction;
    o.shard_tokens = shard_tokens;
    o.threads = 1;
    prepare(o);
    if (stream) {
      for (const std::string& d : docs) {
        for (char c : d) stream->push_back(static_cast<unsigned char>(c));
        stream->push_back(0);
      }
    }
    return o.out_dir;
  }

 private:
  fs::path dir_;
};

std::vector<std::string> numbered_docs(int n) {
  std::vector<std::string> docs;
  for (int i = 0; i < n; ++i)
    docs.push_back("doc " + std::to_string(i) + std::string(static_cast<size_t>(i % 13), 'x'));
  return docs;
}

TEST_F(LoaderTest, ShardStreamHasTheWindowsAndOrderOfTokenWindows) {
  std::vector<int32_t> stream;
  const std::string ds = prepare_docs(numbered_docs(60), &stream);
  const int T = 16;
  const ShardWindows shards(ds, Split::train, T);
  const TokenWindows memory(stream, T, "memory");
  ASSERT_GT(shards.manifest().train.shards.size(), 3u);
  EXPECT_EQ(shards.num_tokens(), stream.size());
  EXPECT_EQ(shards.num_windows(), memory.num_windows());
  EXPECT_EQ(shards.vocab_size(), 256);
  EXPECT_EQ(shards.tokenizer(), "byte");
  EXPECT_EQ(shards.eod_id(), 0);
  EXPECT_EQ(shards.num_docs(), 60u);
  std::vector<int32_t> a(4 * T), b(4 * T), ta(4 * T), tb(4 * T);
  for (int64_t cursor = 0; cursor < 3 * memory.num_windows(); cursor += 4) {
    EXPECT_EQ(shards.train_batch(a.data(), ta.data(), 4, 77, cursor), cursor + 4);
    memory.train_batch(b.data(), tb.data(), 4, 77, cursor);
    ASSERT_EQ(a, b) << "cursor " << cursor;
    ASSERT_EQ(ta, tb) << "cursor " << cursor;
  }
  // Every token once, read across the shard boundaries.
  std::vector<int32_t> all(stream.size());
  shards.read_tokens(0, static_cast<int64_t>(all.size()), all.data());
  EXPECT_EQ(all, stream);
  EXPECT_THROW(shards.read_tokens(stream.size() - 2, 3, all.data()), Error);
}

TEST_F(LoaderTest, RanksTakeDisjointWindowsThatCoverTheEpoch) {
  std::vector<int32_t> stream(64 * 5 + 1);
  std::iota(stream.begin(), stream.end(), 0);  // a token's value is its position
  const TokenWindows windows(stream, 5, "counting");
  const int B = 3, world = 4;  // 12 windows per step; 64 windows: steps straddle the epoch end
  std::multiset<int64_t> seen;
  int64_t cursor = 0;
  while (cursor + B * world <= 5 * 12) {
    std::set<int64_t> step;
    for (int rank = 0; rank < world; ++rank) {
      std::vector<int32_t> in(B * 5), tg(B * 5);
      EXPECT_EQ(windows.train_batch(in.data(), tg.data(), B, 9, cursor, rank, world), cursor + B * world);
      for (int b = 0; b < B; ++b) {
        step.insert(in[b * 5] / 5);
        seen.insert(in[b * 5] / 5);
      }
    }
    EXPECT_EQ(step.size(), static_cast<size_t>(B * world)) << "ranks overlap at cursor " << cursor;
    cursor += B * world;
  }
  // Positions [0, 60) of epoch 0 over all ranks are 60 distinct windows of the 64.
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 60u);
  // The union of the ranks' rows at one cursor is the single-rank batch of B*world.
  std::vector<int32_t> single(B * world * 5), st(single.size());
  windows.train_batch(single.data(), st.data(), B * world, 9, 0);
  std::vector<int32_t> interleaved(single.size());
  for (int rank = 0; rank < world; ++rank) {
    std::vector<int32_t> in(B * 5), tg(B * 5);
    windows.train_batch(in.data(), tg.data(), B, 9, 0, rank, world);
    for (int b = 0; b < B; ++b)
      std::copy(in.begin() + b * 5, in.begin() + (b + 1) * 5, interleaved.begin() + (b * world + rank) * 5);
  }
  EXPECT_EQ(interleaved, single);
  std::vector<int32_t> in(5), tg(5);
  EXPECT_THROW(windows.train_batch(in.data(), tg.data(), 1, 9, 0, 4, 4), Error);
}

TEST_F(LoaderTest, PrefetchingLoaderResumesExactly) {
  std::vector<int32_t> stream;
  const std::string ds = prepare_docs(numbered_docs(40), &stream);
  const int T = 8, B = 3, world = 2, rank = 1;
  const ShardWindows shards(ds, Split::train, T);
  std::vector<std::vector<int32_t>> straight;
  LoaderState saved;
  {
    BatchLoader loader(shards, B, LoaderState{5, 0, 0, 0}, rank, world, 3);
    for (int step = 0; step < 40; ++step) {
      if (step == 23) saved = loader.state();
      std::vector<int32_t> in(B * T), tg(B * T);
      loader.next(in.data(), tg.data());
      straight.push_back(in);
      straight.push_back(tg);
    }
  }
  // The same batches as train_batch at the same cursors.
  std::vector<int32_t> in(B * T), tg(B * T);
  shards.train_batch(in.data(), tg.data(), B, 5, 7 * B * world, rank, world);
  EXPECT_EQ(in, straight[14]);
  // Restored from its text form in a fresh loader: identical next batches.
  EXPECT_EQ(saved.num_windows, shards.num_windows());
  EXPECT_EQ(saved.epoch * saved.num_windows + saved.position, 23 * B * world);
  const LoaderState restored = LoaderState::parse(saved.to_string());
  EXPECT_EQ(restored, saved);
  BatchLoader resumed(shards, B, restored, rank, world);
  for (int step = 23; step < 40; ++step) {
    resumed.next(in.data(), tg.data());
    EXPECT_EQ(in, straight[2 * step]) << "step " << step;
    EXPECT_EQ(tg, straight[2 * step + 1]) << "step " << step;
  }
  EXPECT_EQ(resumed.state().epoch * resumed.state().num_windows + resumed.state().position, 40 * B * world);
}

TEST_F(LoaderTest, LoaderStateChecks) {
  std::vector<int32_t> stream(101);
  std::iota(stream.begin(), stream.end(), 0);
  const TokenWindows windows(stream, 10, "counting");
  EXPECT_NE(error_message([&] {
              BatchLoader(windows, 2, LoaderState{1, 0, 0, 11});
            }).find("saved for 11 windows"),
            std::string::npos);
  EXPECT_THROW(BatchLoader(windows, 2, LoaderState{1, 0, 10, 10}), Error);
  EXPECT_THROW(LoaderState::parse("seed=1 epoch=x position=0 num_windows=3"), Error);
  EXPECT_THROW(LoaderState::parse("seed=1 epoch=0"), Error);
  EXPECT_EQ(LoaderState::parse("seed=7 epoch=2 position=3 num_windows=10").to_string(),
            "seed=7 epoch=2 position=3 num_windows=10");
}

TEST_F(LoaderTest, EvaluationWindowsOfAnyLength) {
  std::vector<int32_t> stream;
  const std::string ds = prepare_docs(numbered_docs(30), &stream);
  const ShardWindows shards(ds, Split::train, 8);
  for (int L : {8, 33, 100}) {
    ASSERT_EQ(shards.num_eval_windows(L), static_cast<int64_t>((stream.size() - 1) / L));
    std::vector<int32_t> in(L), tg(L);
    for (int64_t w = 0; w < shards.num_eval_windows(L); ++w) {
      shards.eval_window(in.data(), tg.data(), w, L);
      EXPECT_TRUE(std::equal(in.begin(), in.end(), stream.begin() + w * L)) << "L " << L << " w " << w;
      EXPECT_TRUE(std::equal(tg.begin(), tg.end(), stream.begin() + w * L + 1)) << "L " << L << " w " << w;
    }
  }
  EXPECT_EQ(shards.num_eval_windows(static_cast<int>(stream.size())), 0);
  std::vector<int32_t> in(8), tg(8);
  EXPECT_THROW(shards.eval_window(in.data(), tg.data(), shards.num_windows(), 8), Error);
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

TEST_F(LoaderTest, MemoryStaysBoundedWhileStreamingALargeCorpus) {
  // 48 M tokens (96 MB of uint16 shards), written shard by shard without prepare's text.
  const int shards = 6;
  const uint64_t per_shard = 8u << 20;
  DatasetManifest m;
  m.tokenizer = "byte";
  m.vocab_size = 256;
  m.eod_id = 0;
  m.token_dtype = "uint16";
  m.split_rule = "test";
  for (int s = 0; s < shards; ++s) {
    std::vector<int32_t> tokens(per_shard);
    for (uint64_t i = 0; i < per_shard; ++i) tokens[i] = static_cast<int32_t>((i * 31 + s) % 255 + 1);
    tokens.back() = 0;
    const std::string file = "train/shard_00000" + std::to_string(s) + ".h5";
    fs::create_directories(dir() / "train");
    write_shard((dir() / file).string(), {"byte", 256, 0, "train", "test"}, s, tokens, {0, per_shard});
    m.train.shards.push_back({file, 1, per_shard, fs::file_size(dir() / file), ""});
    m.train.docs += 1;
    m.train.tokens += per_shard;
  }
  write_bytes(dir() / kManifestName, manifest_json(m));

  const long before = rss_kib();
  const int T = 1024, B = 8;
  const ShardWindows windows(dir().string(), Split::train, T);
  BatchLoader loader(windows, B, LoaderState{1, 0, 0, 0});
  std::vector<int32_t> in(B * T), tg(B * T);
  const int64_t batches = windows.num_windows() / B;  // one epoch
  long peak = before;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t b = 0; b < batches; ++b) {
    loader.next(in.data(), tg.data());
    if (b % 256 == 0) peak = std::max(peak, rss_kib());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  peak = std::max(peak, rss_kib());
  const double corpus_mib = static_cast<double>(shards * per_shard * 2) / 1048576.0;
  std::printf(
      "[ bench    ] loader: %lld batches of %dx%d from %.0f MiB of shards in %.2f s = %.1f M tokens/s; "
      "RSS growth %.1f MiB\n",
      static_cast<long long>(batches), B, T, corpus_mib, seconds, batches * B * T / seconds / 1e6,
      (peak - before) / 1024.0);
  EXPECT_LT(peak - before, 16 * 1024) << "the loader must not hold the corpus (" << corpus_mib << " MiB)";
}

// ---- bad shards and configurations ----

TEST_F(LoaderTest, TruncatedOrCorruptShardNamesTheFile) {
  const std::string ds = prepare_docs(numbered_docs(20), nullptr, 1000);
  const fs::path shard = fs::path(ds) / "train/shard_000000.h5";
  const uintmax_t size = fs::file_size(shard);
  fs::resize_file(shard, size - 100);
  std::string message = error_message([&] { ShardWindows(ds, Split::train, 4); });
  EXPECT_NE(message.find("shard_000000.h5"), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_NE(message.find("dape prepare"), std::string::npos) << message;
  // Read directly (no manifest): HDF5 itself notices the missing end.
  message = error_message([&] { ShardReader r(shard.string()); });
  EXPECT_NE(message.find("not a readable HDF5 file"), std::string::npos) << message;
  // Same size, damaged superblock.
  fs::resize_file(shard, size);
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.write("garbage!", 8);
  }
  message = error_message([&] { ShardWindows(ds, Split::train, 4); });
  EXPECT_NE(message.find("shard_000000.h5' is not a readable HDF5 file"), std::string::npos) << message;
  fs::remove(shard);
  message = error_message([&] { ShardWindows(ds, Split::train, 4); });
  EXPECT_NE(message.find("is missing"), std::string::npos) << message;
  fs::remove(fs::path(ds) / kManifestName);
  message = error_message([&] { ShardWindows(ds, Split::train, 4); });
  EXPECT_NE(message.find("dataset.json"), std::string::npos) << message;
}

TEST_F(LoaderTest, MixedTokenizersAreRefused) {
  const std::string ds = prepare_docs(numbered_docs(40), nullptr, 97);
  DatasetManifest m = read_manifest(ds);
  ASSERT_GE(m.train.shards.size(), 2u);
  // Replace shard 1 by one of GPT-2 ids, and list its size so that only the tokenizer differs.
  ShardEntry& e = m.train.shards[1];
  std::vector<int32_t> tokens(e.tokens, 50256);
  write_shard((fs::path(ds) / e.file).string(), {"gpt2", 50257, 50256, "train", "x"}, 1, tokens,
              {0, e.tokens});
  e.docs = 1;
  e.bytes = fs::file_size(fs::path(ds) / e.file);
  write_bytes(fs::path(ds) / kManifestName, manifest_json(m));
  const std::string message = error_message([&] { ShardWindows(ds, Split::train, 4); });
  EXPECT_NE(message.find("shard_000001.h5"), std::string::npos) << message;
  EXPECT_NE(message.find("different tokenizers are mixed"), std::string::npos) << message;
  EXPECT_NE(message.find("gpt2"), std::string::npos) << message;
}

TEST_F(LoaderTest, OpenWindowSourceChecksVocabTokenizerAndLength) {
  std::vector<int32_t> stream;
  const std::string ds = prepare_docs(numbered_docs(20), &stream, 1000, 0.3);
  const ByteTokenizer byte;
  auto source = open_window_source(ds, Split::train, 4, byte, 256);
  EXPECT_NE(dynamic_cast<const ShardWindows*>(source.get()), nullptr);
  EXPECT_EQ(source->source(), ds + " (train)");
  // A split folder names its split itself.
  auto val = open_window_source(ds + "/val", Split::train, 4, byte, 256);
  EXPECT_EQ(val->source(), ds + " (val)");
  EXPECT_TRUE(is_prepared_dataset(ds));
  EXPECT_TRUE(is_prepared_dataset(ds + "/train/"));
  EXPECT_FALSE(is_prepared_dataset((dir() / "docs.jsonl").string()));

  try {
    open_window_source(ds, Split::train, 4, byte, 200);
    FAIL() << "no error for a model vocabulary below the data's";
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("model.vocab_size = 200"), std::string::npos) << message;
    EXPECT_NE(message.find("256"), std::string::npos) << message;
  }
  struct OtherTokenizer final : Tokenizer {
    std::string name() const override { return "other"; }
    int vocab_size() const override { return 256; }
    std::vector<int32_t> encode(const std::string&) const override { return {}; }
    std::string decode(const std::vector<int32_t>&) const override { return ""; }
  };
  EXPECT_THROW(open_window_source(ds, Split::train, 4, OtherTokenizer(), 256), ConfigError);

  const std::string message = error_message([&] { open_window_source(ds, Split::val, 100000, byte, 256); });
  EXPECT_NE(message.find(ds + " (val)"), std::string::npos) << message;
  EXPECT_NE(message.find("fewer than one window of T+1 = 100001"), std::string::npos) << message;

  // A text file still works as before.
  write_bytes(dir() / "plain.txt", "plain text file");
  auto text = open_window_source((dir() / "plain.txt").string(), Split::train, 4, byte, 256);
  EXPECT_EQ(text->num_tokens(), 15u);
  EXPECT_EQ(text->tokenizer(), "byte");
}

TEST_F(LoaderTest, EmptySplitIsAnError) {
  const std::string ds = prepare_docs(numbered_docs(5), nullptr, 1000, 0);
  const std::string message = error_message([&] { ShardWindows(ds, Split::val, 4); });
  EXPECT_NE(message.find("holds no val documents"), std::string::npos) << message;
}

}  // namespace
}  // namespace dape::data
