// Byte tokenizer, tokenizer factory, text files and the training/evaluation window order.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "error_message.h"
#include "data/data.h"
#include "kernels/error.h"

namespace dape::data {
namespace {

using testing::error_message;

// 0, 1, ..., n-1 as tokens, so a token's value is its position in the stream.
std::vector<int32_t> counting_stream(int n) {
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  std::iota(tokens.begin(), tokens.end(), 0);
  return tokens;
}

// The window each row of a batch came from, recovered from the counting stream (first input = w*T).
std::vector<int64_t> batch_windows(const TokenWindows& windows, int B, uint64_t seed, int64_t cursor) {
  const int T = windows.seq_len();
  std::vector<int32_t> inputs(static_cast<size_t>(B) * T), targets(inputs.size());
  EXPECT_EQ(windows.train_batch(inputs.data(), targets.data(), B, seed, cursor), cursor + B);
  std::vector<int64_t> rows;
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      EXPECT_EQ(inputs[b * T + t], inputs[b * T] + t);
      EXPECT_EQ(targets[b * T + t], inputs[b * T] + t + 1);
    }
    EXPECT_EQ(inputs[b * T] % T, 0);
    rows.push_back(inputs[b * T] / T);
  }
  return rows;
}

TEST(ByteTokenizer, RoundTripsAllByteValues) {
  ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.name(), "byte");
  EXPECT_EQ(tokenizer.vocab_size(), 256);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<int32_t> ids = tokenizer.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(tokenizer.decode(ids), all);
}

TEST(ByteTokenizer, RoundTripsInvalidUtf8AndMultibyteText) {
  ByteTokenizer tokenizer;
  // A bad lead byte, a truncated sequence, a NUL and a lone continuation byte.
  const char invalid[] = "\xff\xfe\xc3(\xe2\x82\x00\x80 tail";
  const std::string text(invalid, sizeof(invalid) - 1);
  ASSERT_EQ(text.size(), 13u);
  EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), text);
  const std::string utf8 = "G\xc3\xb6ran \xe2\x80\xa6";  // "Göran …": 2 and 3 bytes per character
  const std::vector<int32_t> ids = tokenizer.encode(utf8);
  EXPECT_EQ(ids.size(), utf8.size());
  EXPECT_EQ(ids[1], 0xc3);
  EXPECT_EQ(tokenizer.decode(ids), utf8);
  EXPECT_TRUE(tokenizer.encode("").empty());
}

TEST(ByteTokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  ByteTokenizer tokenizer;
  EXPECT_THROW(tokenizer.decode({65, 256}), Error);
  EXPECT_THROW(tokenizer.decode({-1}), Error);
}

TEST(MakeTokenizer, ByteAndUnknownName) {
  EXPECT_EQ(make_tokenizer("byte")->name(), "byte");
  try {
    make_tokenizer("gpt3");
    FAIL() << "no error for an unknown tokenizer";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "data.tokenizer: unknown tokenizer 'gpt3'; expected one of: byte, gpt2");
  }
}

TEST(TokenizeFile, ReadsBytesExactly) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("dape_test_data_" + std::to_string(::getpid()) + ".txt");
  const char bytes[] = "line one\r\nG\xc3\xb6ran\0end\n";
  const std::string text(bytes, sizeof(bytes) - 1);
  {
    std::ofstream out(path, std::ios::binary);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  }
  ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.decode(tokenize_file(path.string(), tokenizer)), text);
  std::filesystem::remove(path);
}

TEST(TokenizeFile, MissingFileNamesThePath) {
  ByteTokenizer tokenizer;
  const std::string path = "/nonexistent/dape/corpus.txt";
  const std::string message = error_message([&] { tokenize_file(path, tokenizer); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("no such file"), std::string::npos) << message;
  EXPECT_NE(message.find("check"), std::string::npos) << message;
}

TEST(TokenizeFile, BundledCorpusIsPresent) {
  ByteTokenizer tokenizer;
  const std::string dir = std::string(DAPE_SOURCE_DIR) + "/data/corpus/";
  const auto train = tokenize_file(dir + "cfi-en.train.txt", tokenizer);
  const auto val = tokenize_file(dir + "cfi-en.val.txt", tokenizer);
  EXPECT_EQ(train.size(), 505266u);
  EXPECT_EQ(val.size(), 26459u);
}

TEST(TokenWindows, WindowContentsAndSharedBoundary) {
  // 23 tokens, T = 5: windows [0,5], [5,10], [10,15], [15,20]; tokens 21, 22 are left over.
  const TokenWindows windows(counting_stream(23), 5, "counting");
  EXPECT_EQ(windows.seq_len(), 5);
  EXPECT_EQ(windows.num_windows(), 4);
  EXPECT_EQ(windows.num_tokens(), 23u);
  std::vector<int32_t> inputs(5), targets(5);
  for (int64_t w = 0; w < 4; ++w) {
    windows.eval_window(inputs.data(), targets.data(), w);
    for (int t = 0; t < 5; ++t) {
      EXPECT_EQ(inputs[t], w * 5 + t);
      EXPECT_EQ(targets[t], w * 5 + t + 1);
    }
  }
  // The last target of window w is the first input of window w+1.
  windows.eval_window(inputs.data(), targets.data(), 1);
  EXPECT_EQ(targets[4], 10);
  windows.eval_window(inputs.data(), targets.data(), 2);
  EXPECT_EQ(inputs[0], 10);
  EXPECT_THROW(windows.eval_window(inputs.data(), targets.data(), 4), Error);
  EXPECT_THROW(windows.eval_window(inputs.data(), targets.data(), -1), Error);
}

TEST(TokenWindows, ExactlyOneWindowWhenStreamIsTPlusOne) {
  const TokenWindows windows(counting_stream(9), 8, "tiny");
  EXPECT_EQ(windows.num_windows(), 1);
  EXPECT_EQ(batch_windows(windows, 3, 7, 0), (std::vector<int64_t>{0, 0, 0}));
}

TEST(TokenWindows, EveryWindowOncePerEpoch) {
  const int T = 4;
  const TokenWindows windows(counting_stream(37 * T + 1), T, "counting");
  ASSERT_EQ(windows.num_windows(), 37);
  // Batches of 5 do not divide 37, so batches straddle epoch boundaries.
  std::vector<int64_t> order;
  for (int64_t cursor = 0; cursor < 3 * 37 + 4; cursor += 5) {
    for (int64_t w : batch_windows(windows, 5, 1234, cursor)) order.push_back(w);
  }
  for (int epoch = 0; epoch < 3; ++epoch) {
    const std::set<int64_t> seen(order.begin() + epoch * 37, order.begin() + (epoch + 1) * 37);
    EXPECT_EQ(seen.size(), 37u) << "epoch " << epoch;
    EXPECT_EQ(*seen.begin(), 0);
    EXPECT_EQ(*seen.rbegin(), 36);
  }
}

TEST(TokenWindows, SameSeedSameOrderAcrossObjects) {
  const TokenWindows a(counting_stream(101 * 3 + 1), 3, "a");
  const TokenWindows b(counting_stream(101 * 3 + 1), 3, "b");
  EXPECT_EQ(batch_windows(a, 101, 42, 0), batch_windows(b, 101, 42, 0));
  EXPECT_NE(batch_windows(a, 101, 42, 0), batch_windows(a, 101, 43, 0));
}

TEST(TokenWindows, DifferentEpochsDifferentOrders) {
  const TokenWindows windows(counting_stream(64 * 2 + 1), 2, "counting");
  const std::vector<int64_t> epoch0 = batch_windows(windows, 64, 5, 0);
  const std::vector<int64_t> epoch1 = batch_windows(windows, 64, 5, 64);
  const std::vector<int64_t> epoch2 = batch_windows(windows, 64, 5, 128);
  EXPECT_NE(epoch0, epoch1);
  EXPECT_NE(epoch1, epoch2);
  std::vector<int64_t> identity(64);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(epoch0, identity);  // shuffled at all (probability of identity: 1/64!)
}

TEST(TokenWindows, KnownOrderIsStable) {
  // Pins the generator specified in data/token_windows.cpp (values from an independent Python
  // transcription of that specification); a change here changes every run's data.
  const TokenWindows windows(counting_stream(10 * 2 + 1), 2, "counting");
  EXPECT_EQ(batch_windows(windows, 10, 0, 0), (std::vector<int64_t>{0, 1, 7, 2, 5, 4, 9, 3, 8, 6}));
  EXPECT_EQ(batch_windows(windows, 10, 0, 10), (std::vector<int64_t>{1, 9, 6, 5, 7, 4, 3, 2, 8, 0}));
}

TEST(TokenWindows, CursorResumeGivesIdenticalBatches) {
  const int T = 3, B = 4;
  const TokenWindows windows(counting_stream(29 * T + 2), T, "counting");
  std::vector<std::vector<int32_t>> straight;
  int64_t cursor = 0;
  for (int step = 0; step < 20; ++step) {
    std::vector<int32_t> inputs(B * T), targets(B * T);
    cursor = windows.train_batch(inputs.data(), targets.data(), B, 99, cursor);
    straight.push_back(inputs);
    straight.push_back(targets);
  }
  // A fresh object (as after a restart) resumed at step 13's cursor, after another stream was used.
  const TokenWindows other(counting_stream(50), 7, "other");
  batch_windows(other, 3, 99, 0);
  const TokenWindows resumed(counting_stream(29 * T + 2), T, "counting");
  cursor = 13 * B;
  for (int step = 13; step < 20; ++step) {
    std::vector<int32_t> inputs(B * T), targets(B * T);
    cursor = resumed.train_batch(inputs.data(), targets.data(), B, 99, cursor);
    EXPECT_EQ(inputs, straight[2 * step]) << "step " << step;
    EXPECT_EQ(targets, straight[2 * step + 1]) << "step " << step;
  }
}

TEST(TokenWindows, TooShortStreamNamesTheSource) {
  const std::string message = error_message([] { TokenWindows(counting_stream(8), 8, "corpus/val.txt"); });
  EXPECT_NE(message.find("corpus/val.txt"), std::string::npos) << message;
  EXPECT_NE(message.find("8 tokens"), std::string::npos) << message;
  EXPECT_NE(message.find("9"), std::string::npos) << message;
  EXPECT_THROW(TokenWindows({}, 1, "empty"), Error);
  EXPECT_THROW(TokenWindows(counting_stream(10), 0, "zero"), Error);
}

TEST(TokenWindows, RejectsBadBatchArguments) {
  const TokenWindows windows(counting_stream(10), 3, "counting");
  std::vector<int32_t> inputs(3), targets(3);
  EXPECT_THROW(windows.train_batch(inputs.data(), targets.data(), 0, 1, 0), Error);
  EXPECT_THROW(windows.train_batch(inputs.data(), targets.data(), 1, 1, -1), Error);
}

}  // namespace
}  // namespace dape::data
