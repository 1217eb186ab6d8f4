// data: tokenizers and token sources. Owns the byte-level tokenizer, the window interface (WindowSource)
// with its deterministic window order, the text-file source, and through data/prepare.h, data/shards.h
// and data/loader.h the HDF5 token shards (docs/data-format.md) and their streaming loader.
// May include: kernels (errors), comm; HDF5, zstd, OpenSSL, libxml2 and zlib in .cpp files only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dape::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual int vocab_size() const = 0;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
};

// Each byte is one token (vocabulary 256); round trip is exact for any bytes.
class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "byte"; }
  int vocab_size() const override { return 256; }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
};

// Makes the tokenizer named by data.tokenizer ("byte"); throws ConfigError naming the key otherwise.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name);

// A token stream cut into training and evaluation windows. Implemented by TokenWindows (one tokenized
// text file in memory) and ShardWindows (prepared HDF5 shards read by hyperslab, data/loader.h); `dape
// train` takes either through open_window_source.
//
// The stream is cut into windows of T+1 tokens that share one boundary token (window w covers tokens
// [w*T, w*T + T]); input = window[0:T], target = window[1:T+1] (DAPE-SPEC §2.2).
// Training order: every window once per epoch, shuffled by (seed, epoch) as documented in
// data/token_windows.cpp; a cursor counts windows across epochs (position c is window order(c / N)[c % N]).
class WindowSource {
 public:
  virtual ~WindowSource() = default;

  // Tokens of the whole stream.
  virtual uint64_t num_tokens() const = 0;
  // Every id is in [0, vocab_size()).
  virtual int vocab_size() const = 0;
  // The tokenizer that made the ids ("byte", "gpt2"); empty when unknown.
  virtual const std::string& tokenizer() const = 0;
  // The file or directory the tokens came from, for messages.
  virtual const std::string& source() const = 0;
  // Copies tokens [first, first + count) of the stream into out; throws dape::Error naming source() when
  // the range is outside the stream or a read fails.
  virtual void read_tokens(uint64_t first, int64_t count, int32_t* out) const = 0;

  int seq_len() const { return T_; }
  int64_t num_windows() const { return num_windows_; }

  // Fills inputs, targets (B,T) from the training order. Data-parallel rank `rank` of `world` takes the
  // positions cursor + b*world + rank for b in [0, B), so the ranks' windows are disjoint and together
  // cover positions [cursor, cursor + B*world); returns the cursor of the next batch, cursor + B*world.
  int64_t train_batch(int32_t* inputs, int32_t* targets, int B, uint64_t seed, int64_t cursor, int rank = 0,
                      int world = 1) const;
  // Evaluation order: window w of length T, no shuffle. inputs, targets (T).
  void eval_window(int32_t* inputs, int32_t* targets, int64_t w) const;
  // Evaluation at another length L: non-overlapping windows w covering tokens [w*L, w*L + L], no shuffle.
  // num_eval_windows(L) is floor((num_tokens - 1) / L), 0 when the stream is shorter than L+1 tokens.
  int64_t num_eval_windows(int L) const;
  void eval_window(int32_t* inputs, int32_t* targets, int64_t w, int L) const;

 protected:
  // Sets T and the window count; throws dape::Error naming source() when T < 1 or the stream holds fewer
  // than T+1 tokens. Derived constructors call it once their stream is known.
  void init_windows(int T);

 private:
  int T_ = 0;
  int64_t num_windows_ = 0;
};

// The windows of one in-memory token stream, e.g. a tokenized text file.
class TokenWindows final : public WindowSource {
 public:
  // Throws dape::Error naming `source` when the stream holds fewer than T+1 tokens. vocab_size 0 means
  // the largest id + 1.
  TokenWindows(std::vector<int32_t> tokens, int T, std::string source, int vocab_size = 0,
               std::string tokenizer = "");

  uint64_t num_tokens() const override { return tokens_.size(); }
  int vocab_size() const override { return vocab_size_; }
  const std::string& tokenizer() const override { return tokenizer_; }
  const std::string& source() const override { return source_; }
  void read_tokens(uint64_t first, int64_t count, int32_t* out) const override;

 private:
  std::vector<int32_t> tokens_;
  std::string source_;
  int vocab_size_;
  std::string tokenizer_;
};

// The position of the training order that a cursor names, for loaders that walk it themselves.
// window_at(num_windows, seed, c) = order(c / num_windows)[c % num_windows]; memoised per thread.
int64_t window_at(int64_t num_windows, uint64_t seed, int64_t cursor);

enum class Split { train, val };
const char* split_name(Split split);

// Whether path is a directory written by `dape prepare` (it holds dataset.json), or the train/ or val/
// folder of one.
bool is_prepared_dataset(const std::string& path);

// The windows of data.train or data.val. A prepared directory (docs/data-format.md) gives ShardWindows
// over its `split` (a train/ or val/ folder names its split itself); anything else is read as a text
// file with `tokenizer` (tokenize_file). Throws ConfigError when a prepared directory was made with
// another tokenizer than `tokenizer`, or when its vocabulary exceeds model_vocab_size (naming both
// numbers); dape::Error for unreadable files and streams shorter than T+1 tokens.
std::unique_ptr<WindowSource> open_window_source(const std::string& path, Split split, int T,
                                                 const Tokenizer& tokenizer, int model_vocab_size);

// Reads a text file (throws dape::Error naming it when missing or unreadable) and tokenizes it.
std::vector<int32_t> tokenize_file(const std::string& path, const Tokenizer& tokenizer);

}  // namespace dape::data
