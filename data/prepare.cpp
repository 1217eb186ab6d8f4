// `dape prepare`: input listing, document reading (text, JSONL, zstd-compressed JSONL), the split rule,
// parallel tokenization in input order and the shard writers.
#include "data/prepare.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/gpt2_tokenizer.h"
#include "data/shards.h"
#include "kernels/error.h"

namespace dape::data {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
// Documents are read in batches of about this many bytes, tokenized in parallel, then written in order.
constexpr size_t kBatchBytes = 4u << 20;
constexpr size_t kBatchDocs = 8192;

// The splitmix64 finaliser, as in data/token_windows.cpp.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string format_count(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

void check_readable(const std::string& path) {
  if (::access(path.c_str(), R_OK) != 0) {
    throw Error("prepare: cannot read input " + quote(path) + ": " + std::strerror(errno) +
                "; check its permissions");
  }
}

bool matches_any(const fs::path& relative, const std::vector<std::string>& include) {
  if (include.empty()) return true;
  const std::string rel = relative.generic_string(), name = relative.filename().string();
  for (const std::string& glob : include) {
    const std::string& subject = glob.find('/') != std::string::npos ? rel : name;
    if (::fnmatch(glob.c_str(), subject.c_str(), 0) == 0) return true;
  }
  return false;
}

// ---- byte sources: a plain file or a zstd stream ----

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Appends up to about 1 MiB to out; false at the end.
  virtual bool read(std::string& out) = 0;
  uint64_t bytes_read() const { return bytes_read_; }

 protected:
  uint64_t bytes_read_ = 0;
};

class FileSource : public ByteSource {
 public:
  explicit FileSource(const std::string& path) : path_(path), file_(std::fopen(path.c_str(), "rb")) {
    if (!file_) throw Error("prepare: cannot read input " + quote(path) + ": " + std::strerror(errno));
  }
  ~FileSource() override { std::fclose(file_); }
  bool read(std::string& out) override {
    char buffer[1 << 16];
    size_t total = 0;
    while (total < (1u << 20)) {
      const size_t n = std::fread(buffer, 1, sizeof buffer, file_);
      if (n == 0) break;
      out.append(buffer, n);
      total += n;
    }
    if (std::ferror(file_)) {
      throw Error("prepare: error while reading input " + quote(path_) + ": " + std::strerror(errno) +
                  "; check the file and its disk");
    }
    bytes_read_ += total;
    return total > 0;
  }
  // The whole rest of the file.
  std::string read_all() {
    std::string out;
    while (read(out)) {
    }
    return out;
  }

 private:
  std::string path_;
  std::FILE* file_;
};

class ZstdSource : public ByteSource {
 public:
  explicit ZstdSource(const std::string& path) : path_(path), file_(path), stream_(ZSTD_createDStream()) {
    if (!stream_) throw Error("prepare: cannot start zstd for " + quote(path));
  }
  ~ZstdSource() override { ZSTD_freeDStream(stream_); }
  bool read(std::string& out) override {
    const size_t before = out.size();
    std::vector<char> buffer(ZSTD_DStreamOutSize());
    while (out.size() - before < (1u << 20)) {
      if (input_.pos == input_.size) {
        raw_.clear();
        if (!file_.read(raw_)) {
          if (last_ != 0) {
            throw Error("prepare: input " + quote(path_) +
                        " ends inside a zstd frame (truncated); download or copy it again");
          }
          break;
        }
        input_ = {raw_.data(), raw_.size(), 0};
      }
      ZSTD_outBuffer output = {buffer.data(), buffer.size(), 0};
      last_ = ZSTD_decompressStream(stream_, &output, &input_);
      if (ZSTD_isError(last_)) {
        throw Error("prepare: input " + quote(path_) + " is not valid zstd data (" +
                    ZSTD_getErrorName(last_) + "); check the file, or rename it if it is not compressed");
      }
      out.append(buffer.data(), output.pos);
    }
    bytes_read_ = file_.bytes_read();
    return out.size() > before;
  }

 private:
  std::string path_;
  FileSource file_;
  ZSTD_DStream* stream_;
  std::string raw_;
  ZSTD_inBuffer input_{nullptr, 0, 0};
  size_t last_ = 0;
};

}  // namespace

// ---- DocumentReader ----

struct DocumentReader::Impl {
  std::string path;
  bool jsonl = false, done = false;
  std::unique_ptr<ByteSource> source;
  std::string pending;  // bytes read but not yet split into lines
  size_t pending_pos = 0;
  uint64_t line = 0;

  // The next line without its '\n' (a final line without one too); false at the end.
  bool next_line(std::string& out) {
    for (;;) {
      const size_t nl = pending.find('\n', pending_pos);
      if (nl != std::string::npos) {
        out.assign(pending, pending_pos, nl - pending_pos);
        pending_pos = nl + 1;
        return true;
      }
      pending.erase(0, pending_pos);
      pending_pos = 0;
      if (!source->read(pending)) {
        if (pending.empty()) return false;
        out.swap(pending);
        pending.clear();
        return true;
      }
    }
  }
};

DocumentReader::DocumentReader(const std::string& path) : impl_(new Impl) {
  impl_->path = path;
  try {
    const bool zst = ends_with(path, ".jsonl.zst");
    impl_->jsonl = zst || ends_with(path, ".jsonl");
    if (zst) {
      impl_->source = std::make_unique<ZstdSource>(path);
    } else {
      impl_->source = std::make_unique<FileSource>(path);
    }
  } catch (...) {
    delete impl_;
    throw;
  }
}

DocumentReader::~DocumentReader() {
  delete impl_;
}

uint64_t DocumentReader::bytes_read() const {
  return impl_->source->bytes_read();
}

bool DocumentReader::next(std::string& text) {
  Impl& r = *impl_;
  if (r.done) return false;
  if (!r.jsonl) {
    text = static_cast<FileSource&>(*r.source).read_all();
    r.done = true;
    return true;
  }
  std::string line;
  for (;;) {
    if (!r.next_line(line)) {
      r.done = true;
      return false;
    }
    ++r.line;
    if (line.find_first_not_of(" \t\r") != std::string::npos) break;  // blank lines are no documents
  }
  const std::string where = "prepare: " + quote(r.path) + " line " + std::to_string(r.line);
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    throw Error(where +
                ": not a JSON object; every line of a .jsonl input must be an object with a string "
                "field \"text\" (e.g. {\"text\": \"...\"})");
  }
  const auto it = j.find("text");
  if (it == j.end()) {
    throw Error(where +
                ": no \"text\" field; every line of a .jsonl input needs one (e.g. {\"text\": "
                "\"...\"}), fix or remove the line");
  }
  if (!it->is_string()) {
    throw Error(where + ": field \"text\" is " + std::string(it->type_name()) +
                ", expected a string; fix or remove the line");
  }
  text = it->get<std::string>();
  return true;
}

// ---- steps ----

int end_of_document_id(const Tokenizer& tokenizer) {
  if (tokenizer.name() == "gpt2") return Gpt2Tokenizer::kEndOfText;
  if (tokenizer.name() == "byte") return 0;
  throw ConfigError("prepare: tokenizer '" + tokenizer.name() +
                    "' has no end-of-document id defined; expected gpt2 or byte");
}

std::vector<std::string> list_input_files(const std::vector<std::string>& inputs,
                                          const std::vector<std::string>& include) {
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(input, ec);
    if (!fs::exists(st)) {
      throw Error("prepare: input " + quote(input) + ": no such file or directory (working directory '" +
                  fs::current_path(ec).string() + "'); check the --input path");
    }
    check_readable(input);
    if (!fs::is_directory(st)) {
      files.push_back(input);
      continue;
    }
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(input, ec), end;
    if (ec) throw Error("prepare: cannot list directory " + quote(input) + ": " + ec.message());
    for (; it != end; it.increment(ec)) {
      if (ec) throw Error("prepare: cannot list directory " + quote(input) + ": " + ec.message());
      if (!it->is_regular_file(ec)) continue;
      if (!matches_any(fs::relative(it->path(), input, ec), include)) continue;
      check_readable(it->path().string());
      found.push_back(it->path().string());
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

bool is_val_document(uint64_t index, const std::string& text, double val_fraction) {
  const uint64_t h = mix64(fnv1a64(text) ^ mix64(index + kGolden));
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
  return u < val_fraction;
}

std::string split_rule_text(double val_fraction) {
  char fraction[32];
  for (int digits = 1; digits <= 17; ++digits) {  // the shortest form that reads back exactly
    std::snprintf(fraction, sizeof fraction, "%.*g", digits, val_fraction);
    if (std::strtod(fraction, nullptr) == val_fraction) break;
  }
  return std::string(
             "by document: u = (mix64(fnv1a64(text) ^ mix64(index + 0x9E3779B97F4A7C15)) >> 11) / 2^53, "
             "val iff u < ") +
         fraction + "; index counts the documents of all inputs from 0 in input order";
}

namespace {

// The shards of one split: documents accumulate in memory and a shard is written (under a .tmp name)
// before the document that would take it past shard_tokens; a longer document gets a shard of its own.
class SplitWriter {
 public:
  SplitWriter(fs::path out_dir, Split split, ShardHeader header, uint64_t shard_tokens)
      : out_dir_(std::move(out_dir)), split_(split), header_(std::move(header)), shard_tokens_(shard_tokens) {
    header_.split = split_name(split);
  }

  void add(const std::vector<int32_t>& doc) {
    if (!tokens_.empty() && tokens_.size() + doc.size() > shard_tokens_) flush();
    tokens_.insert(tokens_.end(), doc.begin(), doc.end());
    offsets_.push_back(tokens_.size());
    entry_.docs += 1;
    entry_.tokens += doc.size();
  }

  void flush() {
    if (tokens_.empty()) return;
    const std::string index = std::to_string(entry_.shards.size());
    const std::string name = std::string(6 - std::min<size_t>(6, index.size()), '0') + index;
    ShardEntry shard;
    shard.file = std::string(split_name(split_)) + "/shard_" + name + ".h5";
    shard.docs = offsets_.size() - 1;
    shard.tokens = tokens_.size();
    const std::string tmp = (out_dir_ / (shard.file + ".tmp")).string();
    written_.push_back(tmp);
    write_shard(tmp, header_, static_cast<int>(entry_.shards.size()), tokens_, offsets_);
    entry_.shards.push_back(shard);
    tokens_.clear();
    offsets_.assign(1, 0);
  }

  // Checksums the shards, renames them into place and returns the split's manifest entry.
  SplitEntry finish() {
    flush();
    for (ShardEntry& shard : entry_.shards) {
      const fs::path final_path = out_dir_ / shard.file;
      const std::string tmp = final_path.string() + ".tmp";
      shard.bytes = fs::file_size(tmp);
      shard.sha256 = sha256_file(tmp);
      written_.push_back(final_path.string());
      std::error_code ec;
      fs::rename(tmp, final_path, ec);
      if (ec) throw Error("prepare: cannot rename " + quote(tmp) + ": " + ec.message());
    }
    return entry_;
  }

  const std::vector<std::string>& written() const { return written_; }

 private:
  fs::path out_dir_;
  Split split_;
  ShardHeader header_;
  uint64_t shard_tokens_;
  std::vector<int32_t> tokens_;
  std::vector<uint64_t> offsets_{0};
  SplitEntry entry_;
  std::vector<std::string> written_;  // every path this writer may have created
};

struct Document {
  uint64_t index = 0;
  std::string text;
  std::vector<int32_t> tokens;
  uint64_t nul_bytes = 0, endoftext = 0;
};

// Cleans and tokenizes a batch: NUL removal for the byte tokenizer, the count of literal <|endoftext|>,
// then the ids plus the end-of-document id of every non-empty document. The GPT-2 tokenizer has its own
// parallel batch encoder; others run encode() on `threads` threads, each taking the next document.
void encode_batch(std::vector<Document>& batch, const Tokenizer& tokenizer, int eod, bool strip_nul,
                  int threads) {
  for (Document& d : batch) {
    if (strip_nul) {
      const size_t before = d.text.size();
      d.text.erase(std::remove(d.text.begin(), d.text.end(), '\0'), d.text.end());
      d.nul_bytes = before - d.text.size();
    }
    for (size_t p = d.text.find("<|endoftext|>"); p != std::string::npos;
         p = d.text.find("<|endoftext|>", p + 1))
      ++d.endoftext;
  }
  if (const auto* gpt2 = dynamic_cast<const Gpt2Tokenizer*>(&tokenizer)) {
    std::vector<std::string> texts(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) texts[i].swap(batch[i].text);
    std::vector<std::vector<int32_t>> ids = gpt2->encode_batch(texts, threads);
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i].text.swap(texts[i]);
      batch[i].tokens = std::move(ids[i]);
      if (!batch[i].text.empty()) batch[i].tokens.push_back(eod);
    }
    return;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&] {
    try {
      for (size_t i; (i = next.fetch_add(1)) < batch.size();) {
        Document& d = batch[i];
        if (d.text.empty()) continue;
        d.tokens = tokenizer.encode(d.text);
        d.tokens.push_back(eod);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = batch.size();
    }
  };
  const int helpers = std::max(0, std::min<int>(threads, static_cast<int>(batch.size())) - 1);
  std::vector<std::thread> pool;
  for (int t = 0; t < helpers; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  const std::string tmp = path.string() + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("prepare: cannot create " + quote(tmp) + ": " + std::strerror(errno));
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
            ::fsync(fileno(f)) == 0;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("prepare: cannot write " + quote(path.string()) + "; check free disk space");
  }
}

// Makes the renames inside a directory durable.
void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    throw Error("prepare: cannot open directory " + quote(dir.string()) +
                " to sync it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0)
    throw Error("prepare: fsync of directory " + quote(dir.string()) + " failed: " + std::strerror(saved));
}

// Shards and temporaries of an earlier prepare that never wrote dataset.json.
int remove_unfinished(const fs::path& out_dir) {
  int removed = 0;
  for (const char* split : {"train", "val"}) {
    std::error_code ec;
    for (const fs::directory_entry& e : fs::directory_iterator(out_dir / split, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("shard_", 0) == 0 && (ends_with(name, ".h5") || ends_with(name, ".h5.tmp"))) {
        fs::remove(e.path(), ec);
        ++removed;
      }
    }
  }
  return removed;
}

void check_options(const PrepareOptions& o) {
  if (o.inputs.empty()) throw ConfigError("prepare: no --input given; name at least one file or directory");
  if (o.out_dir.empty()) throw ConfigError("prepare: no --out given; name the output directory");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1)) {
    throw ConfigError("prepare: --val-fraction = " + std::to_string(o.val_fraction) +
                      ": expected 0 <= F < 1 (the share of documents in val)");
  }
  if (o.shard_tokens < 1) throw ConfigError("prepare: --shard-tokens must be at least 1");
  if (o.threads < 0)
    throw ConfigError("prepare: --threads = " + std::to_string(o.threads) + ": expected >= 0");
  std::error_code ec;
  if (fs::exists(fs::path(o.out_dir) / kManifestName, ec)) {
    throw ConfigError("prepare: --out " + quote(o.out_dir) +
                      " already holds a prepared dataset (dataset.json); pick another --out or delete it");
  }
  if (fs::exists(o.out_dir, ec) && !fs::is_directory(o.out_dir, ec)) {
    throw ConfigError("prepare: --out " + quote(o.out_dir) +
                      " exists and is not a directory; pick another --out");
  }
}

}  // namespace

PrepareSummary prepare(const PrepareOptions& options,
                       const std::function<void(const PrepareProgress&)>& progress) {
  check_options(options);
  const auto tokenizer = make_tokenizer(options.tokenizer);
  const int eod = end_of_document_id(*tokenizer);
  const bool strip_nul = tokenizer->name() == "byte";
  const std::vector<std::string> files = list_input_files(options.inputs, options.include);
  if (files.empty()) {
    throw Error("prepare: the inputs hold no files" +
                std::string(options.include.empty() ? "" : " matching --include") +
                "; check --input and --include");
  }
  const int threads = options.threads > 0
                          ? options.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  DatasetManifest manifest;
  manifest.tokenizer = tokenizer->name();
  manifest.vocab_size = tokenizer->vocab_size();
  manifest.eod_id = eod;
  manifest.token_dtype = token_dtype_for(manifest.vocab_size);
  manifest.val_fraction = options.val_fraction;
  manifest.split_rule = split_rule_text(options.val_fraction);
  manifest.cleaning = options.cleaning;
  PrepareProgress state;
  for (const std::string& f : files) {
    std::error_code ec;
    state.bytes_total += fs::file_size(f, ec);
  }

  const fs::path out(options.out_dir);
  std::vector<fs::path> created_dirs;
  for (const fs::path& dir : {out, out / "train", out / "val"}) {
    std::error_code ec;
    if (fs::exists(dir, ec)) continue;
    if (!fs::create_directories(dir, ec) || ec) {
      throw Error("prepare: cannot create directory " + quote(dir.string()) + ": " + ec.message() +
                  "; check that --out is writable");
    }
    created_dirs.push_back(dir);
  }
  remove_unfinished(out);

  const ShardHeader header{manifest.tokenizer, manifest.vocab_size, eod, "", manifest.split_rule};
  SplitWriter train(out, Split::train, header, options.shard_tokens);
  SplitWriter val(out, Split::val, header, options.shard_tokens);
  const auto start = Clock::now();
  try {
    uint64_t index = 0, bytes_before = 0;
    std::vector<Document> batch;
    size_t batch_bytes = 0;
    auto drain = [&] {
      encode_batch(batch, *tokenizer, eod, strip_nul, threads);
      for (Document& d : batch) {
        manifest.nul_bytes_dropped += d.nul_bytes;
        manifest.endoftext_literals += d.endoftext;
        if (d.tokens.empty()) {
          ++manifest.empty_docs_dropped;
          continue;
        }
        (is_val_document(d.index, d.text, options.val_fraction) ? val : train).add(d.tokens);
        state.docs += 1;
        state.tokens += d.tokens.size();
      }
      batch.clear();
      batch_bytes = 0;
      state.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (progress) progress(state);
    };
    for (const std::string& file : files) {
      DocumentReader reader(file);
      SourceEntry source{file, 0, 0};
      for (Document d; reader.next(d.text);) {
        d.index = index++;
        batch_bytes += d.text.size();
        batch.push_back(std::move(d));
        d = Document{};
        ++source.docs;
        state.bytes_done = bytes_before + reader.bytes_read();
        if (batch_bytes >= kBatchBytes || batch.size() >= kBatchDocs) drain();
      }
      source.bytes = reader.bytes_read();
      bytes_before += source.bytes;
      state.bytes_done = bytes_before;
      manifest.sources.push_back(source);
    }
    drain();
    if (state.docs == 0) {
      throw Error("prepare: the inputs hold no documents (" + std::to_string(files.size()) + " file(s), " +
                  format_count(manifest.empty_docs_dropped) +
                  " empty document(s) dropped), so there is nothing to train on; check --input");
    }
    manifest.train = train.finish();
    manifest.val = val.finish();
    fsync_directory(out / "train");
    fsync_directory(out / "val");
    write_text_atomic(out / kManifestName, manifest_json(manifest));
    fsync_directory(out);
  } catch (...) {
    std::error_code ec;
    for (const SplitWriter* w : {&train, &val})
      for (const std::string& path : w->written()) fs::remove(path, ec);
    fs::remove(out / (std::string(kManifestName) + ".tmp"), ec);
    for (auto it = created_dirs.rbegin(); it != created_dirs.rend(); ++it) fs::remove(*it, ec);  // if empty
    throw;
  }

  PrepareSummary summary;
  summary.train_docs = manifest.train.docs;
  summary.train_tokens = manifest.train.tokens;
  summary.val_docs = manifest.val.docs;
  summary.val_tokens = manifest.val.tokens;
  summary.train_shards = static_cast<int>(manifest.train.shards.size());
  summary.val_shards = static_cast<int>(manifest.val.shards.size());
  summary.input_bytes = state.bytes_total;
  summary.empty_docs_dropped = manifest.empty_docs_dropped;
  summary.nul_bytes_dropped = manifest.nul_bytes_dropped;
  summary.endoftext_literals = manifest.endoftext_literals;
  summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  summary.tokens_per_s = summary.seconds > 0 ? static_cast<double>(state.tokens) / summary.seconds : 0;
  return summary;
}

}  // namespace dape::data
