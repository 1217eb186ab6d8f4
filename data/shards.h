// Token shards: the HDF5 file of one piece of a split, and dataset.json, the manifest of a prepared
// directory. The format is specified in docs/data-format.md; the HDF5 C API stays in data/shards.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dape::data {

// The `schema` and `schema_version` attributes of every shard and the `format`, `format_version` of
// dataset.json.
inline constexpr const char* kShardSchema = "dape-tokens";
inline constexpr int kShardSchemaVersion = 1;

// "uint16" when every id of a vocabulary of vocab_size fits (vocab_size <= 65536), else "uint32".
std::string token_dtype_for(int vocab_size);

// What every shard of a dataset records about its tokens.
struct ShardHeader {
  std::string tokenizer;   // "byte", "gpt2"
  int vocab_size = 0;      // ids are in [0, vocab_size)
  int eod_id = 0;          // appended after every document
  std::string split;       // "train" or "val"
  std::string split_rule;  // how documents were assigned to splits, in words
};

// Writes one shard to path (created or truncated) and fsyncs it. tokens: the documents of the shard,
// each ending in eod_id; doc_offsets: n_docs + 1 entries from 0 to tokens.size(). Same arguments, same
// bytes: object timestamps are off and nothing depends on the time or the path. Throws dape::Error naming
// the path; a failed write may leave a partial file at path, which the caller removes.
void write_shard(const std::string& path, const ShardHeader& header, int shard_index,
                 const std::vector<int32_t>& tokens, const std::vector<uint64_t>& doc_offsets);

// What a shard says about itself (its attributes and dataset sizes).
struct ShardInfo {
  ShardHeader header;
  int schema_version = 0;
  int shard_index = 0;
  std::string token_dtype;  // "uint16" or "uint32"
  uint64_t n_tokens = 0;
  uint64_t n_docs = 0;
};

// One shard opened read-only, for hyperslab reads of its token array. Opening checks the schema, the
// attributes, the datasets' types and sizes and that doc_offsets is consistent; every failure is a
// dape::Error naming the file and what to do. HDF5 here is the thread-safe build: reads may come from
// any thread.
class ShardReader {
 public:
  explicit ShardReader(const std::string& path);
  ~ShardReader();
  ShardReader(ShardReader&& other) noexcept;
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;
  ShardReader& operator=(ShardReader&&) = delete;

  const std::string& path() const { return path_; }
  const ShardInfo& info() const { return info_; }
  // Tokens [first, first + count) of the shard, widened to int32; one hyperslab read.
  void read(uint64_t first, int64_t count, int32_t* out) const;
  // The whole /doc_offsets dataset (n_docs + 1 entries).
  std::vector<uint64_t> doc_offsets() const;

 private:
  std::string path_;
  ShardInfo info_;
  int64_t file_ = -1, tokens_ = -1;
};

// One shard as listed in dataset.json.
struct ShardEntry {
  std::string file;  // relative to the dataset directory: "train/shard_000000.h5"
  uint64_t docs = 0, tokens = 0, bytes = 0;
  std::string sha256;  // of the whole file, lowercase hex
};

struct SplitEntry {
  uint64_t docs = 0, tokens = 0;
  std::vector<ShardEntry> shards;
};

// One input of `dape prepare`.
struct SourceEntry {
  std::string path;
  uint64_t bytes = 0;  // as read (compressed size for .zst)
  uint64_t docs = 0;   // documents it gave, before dropping empty ones
};

// dataset.json: everything needed to open and check a prepared directory.
struct DatasetManifest {
  std::string tokenizer;
  int vocab_size = 0;
  int eod_id = 0;
  std::string token_dtype;
  double val_fraction = 0;
  std::string split_rule;
  SplitEntry train, val;
  std::vector<SourceEntry> sources;
  uint64_t empty_docs_dropped = 0;
  uint64_t nul_bytes_dropped = 0;   // byte tokenizer only (NUL is its end-of-document id)
  uint64_t endoftext_literals = 0;  // "<|endoftext|>" found in text, encoded as plain text
  std::string cleaning;             // a short note from the corpus builder, "" for plain prepare
};

// The file name of the manifest inside a prepared directory.
inline constexpr const char* kManifestName = "dataset.json";

// The manifest as JSON (two-space indent, fixed key order, a final newline).
std::string manifest_json(const DatasetManifest& manifest);
// Reads DIR/dataset.json; throws dape::Error naming it when missing, malformed or of another format.
DatasetManifest read_manifest(const std::string& dir);

// SHA-256 of a file's bytes as lowercase hex (OpenSSL EVP); throws dape::Error naming the file.
std::string sha256_file(const std::string& path);
// SHA-256 of a byte string as lowercase hex.
std::string sha256_hex(const std::string& bytes);

}  // namespace dape::data
