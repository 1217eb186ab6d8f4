// data: tokenizers and token sources. Owns the byte-level tokenizer, the text-file token source and its
// deterministic window order (later: GPT-2 BPE, HDF5 shards, CHE tasks). May include: kernels (errors), comm.
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

// Training and evaluation windows over one token stream. The stream is cut into windows of T+1 tokens
// that share one boundary token (window w covers tokens [w*T, w*T + T]); input = window[0:T],
// target = window[1:T+1] (DAPE-SPEC §2.2).
class TokenWindows {
 public:
  // Throws dape::Error naming `source` when the stream holds fewer than T+1 tokens.
  TokenWindows(std::vector<int32_t> tokens, int T, std::string source);

  int seq_len() const { return T_; }
  int64_t num_windows() const { return num_windows_; }
  size_t num_tokens() const { return tokens_.size(); }

  // Training order: every window once per epoch, shuffled by (seed, epoch), deterministic.
  // Fills inputs, targets (B,T) with the windows at positions [cursor, cursor + B) of that order,
  // crossing into the next epoch as needed; returns the cursor after the batch.
  int64_t train_batch(int32_t* inputs, int32_t* targets, int B, uint64_t seed, int64_t cursor) const;
  // Evaluation order: window w, no shuffle. inputs, targets (T).
  void eval_window(int32_t* inputs, int32_t* targets, int64_t w) const;

 private:
  std::vector<int32_t> tokens_;
  int T_;
  int64_t num_windows_;
  std::string source_;
};

// Reads a text file (throws dape::Error naming it when missing or unreadable) and tokenizes it.
std::vector<int32_t> tokenize_file(const std::string& path, const Tokenizer& tokenizer);

}  // namespace dape::data
