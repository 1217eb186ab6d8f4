// `dape prepare`: text, directories of text and JSONL (.jsonl, .jsonl.zst) in; token shards and
// dataset.json out (docs/data-format.md). Deterministic: the same inputs and options give byte-identical
// shards, whatever the thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/data.h"

namespace dape::data {

struct PrepareOptions {
  std::vector<std::string> inputs;     // files and directories, in this order
  std::string out_dir;                 // gets train/, val/ and dataset.json; must not hold dataset.json yet
  std::string tokenizer = "gpt2";      // make_tokenizer name
  double val_fraction = 0.05;          // share of documents in val, [0, 1)
  uint64_t shard_tokens = 1ull << 26;  // a shard closes before the document that would take it past this
  std::vector<std::string> include;    // globs for files found in directories (all files when empty)
  int threads = 0;                     // tokenizer threads; 0: one per core
  std::string cleaning;                // recorded in dataset.json (set by the corpus builder)
};

// Where prepare stands, for a progress bar.
struct PrepareProgress {
  uint64_t bytes_done = 0, bytes_total = 0;  // input bytes as stored (compressed for .zst)
  uint64_t docs = 0, tokens = 0;
  double seconds = 0;
};

struct PrepareSummary {
  uint64_t train_docs = 0, train_tokens = 0, val_docs = 0, val_tokens = 0;
  int train_shards = 0, val_shards = 0;
  uint64_t input_bytes = 0;
  uint64_t empty_docs_dropped = 0, nul_bytes_dropped = 0, endoftext_literals = 0;
  double seconds = 0;
  double tokens_per_s = 0;
};

// Runs the whole preparation. Shards are written under temporary names and renamed, then dataset.json is
// written last, so a directory without dataset.json is never a finished dataset. On any error everything
// this call wrote is removed and the error propagates: ConfigError for bad options, dape::Error naming
// the input file (and line, for JSONL) otherwise. progress is called now and then from this thread.
PrepareSummary prepare(const PrepareOptions& options,
                       const std::function<void(const PrepareProgress&)>& progress = nullptr);

// ---- the steps, exposed for tests and the corpus builder ----

// The end-of-document id of a tokenizer: gpt2 50256 (<|endoftext|>); byte 0 (NUL, which prepare
// removes from the text). ConfigError for any other tokenizer.
int end_of_document_id(const Tokenizer& tokenizer);

// The files behind the inputs: a file is itself; a directory gives its regular files, recursively, whose
// path relative to the directory (for globs containing '/') or name (otherwise) matches one of `include`
// (all files when empty), sorted by path. Throws dape::Error naming a missing or unreadable input.
std::vector<std::string> list_input_files(const std::vector<std::string>& inputs,
                                          const std::vector<std::string>& include);

// Reads the documents of one input file in order: the whole file for text, the `text` field of each
// non-blank line for .jsonl and .jsonl.zst. Throws dape::Error naming the file (and line).
class DocumentReader {
 public:
  explicit DocumentReader(const std::string& path);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // The next document into text; false at the end of the file.
  bool next(std::string& text);
  // Bytes of the file consumed so far.
  uint64_t bytes_read() const;

 private:
  struct Impl;
  Impl* impl_;
};

// Whether document `index` (counting all documents of all inputs from 0) with this text goes to val:
// u = top 53 bits of mix64(fnv1a64(text) ^ mix64(index + 0x9E3779B97F4A7C15)) / 2^53, val iff
// u < val_fraction.
bool is_val_document(uint64_t index, const std::string& text, double val_fraction);
// The rule above in words, as recorded in the shards and dataset.json.
std::string split_rule_text(double val_fraction);

}  // namespace dape::data
