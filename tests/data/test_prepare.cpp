// `dape prepare` as a library: inputs (text, directories, JSONL, zstd JSONL), shard contents, the split
// rule, determinism, bad input; the Debian corpus builder's cleaning steps on small local fixtures.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "error_message.h"
#include "data/corpus_builder.h"
#include "data/prepare.h"
#include "data/shards.h"
#include "kernels/error.h"

namespace dape::data {
namespace {

using testing::error_message;

namespace fs = std::filesystem;

// {"text": "zst one"}\n{"text": "zst two\n"}\n compressed by `zstd -19`.
const unsigned char kZstJsonl[] = {0x28, 0xb5, 0x2f, 0xfd, 0x24, 0x2a, 0x15, 0x01, 0x00, 0xe0, 0x7b, 0x22,
                                   0x74, 0x65, 0x78, 0x74, 0x22, 0x3a, 0x20, 0x22, 0x7a, 0x73, 0x74, 0x20,
                                   0x6f, 0x6e, 0x65, 0x22, 0x7d, 0x0a, 0x74, 0x77, 0x6f, 0x5c, 0x6e, 0x22,
                                   0x7d, 0x0a, 0x01, 0x00, 0x4e, 0x9e, 0x4c, 0x50, 0xc7, 0x30, 0x25};

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A scratch folder per test, removed when the test passes.
class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("dape_prepare_" + std::to_string(::getpid()) + "_" +
                                        info->test_suite_name() + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  const fs::path& dir() const { return dir_; }

  PrepareOptions byte_options(std::vector<std::string> inputs, const std::string& out) const {
    PrepareOptions o;
    o.inputs = std::move(inputs);
    o.out_dir = (dir_ / out).string();
    o.tokenizer = "byte";
    o.val_fraction = 0;
    o.threads = 2;
    return o;
  }

 private:
  fs::path dir_;
};

// Every token of a split, shard after shard.
std::vector<int32_t> split_tokens(const fs::path& out, const SplitEntry& split) {
  std::vector<int32_t> all;
  for (const ShardEntry& e : split.shards) {
    ShardReader reader((out / e.file).string());
    std::vector<int32_t> tokens(reader.info().n_tokens);
    reader.read(0, static_cast<int64_t>(tokens.size()), tokens.data());
    all.insert(all.end(), tokens.begin(), tokens.end());
  }
  return all;
}

std::vector<int32_t> bytes_then_eod(const std::string& text) {
  std::vector<int32_t> ids(text.begin(), text.end());
  for (int32_t& id : ids) id = static_cast<unsigned char>(id);
  ids.push_back(0);
  return ids;
}

TEST_F(PrepareTest, TextDirectoryJsonlAndZstdInOrder) {
  write_bytes(dir() / "in/b.txt", "second file\n");
  write_bytes(dir() / "in/a.txt", "first file\n");
  write_bytes(dir() / "in/sub/c.md", "skipped by --include\n");
  write_bytes(dir() / "in/sub/d.txt", "nested\n");
  write_bytes(dir() / "docs.jsonl",
              "{\"text\": \"json one\", \"meta\": 1}\n\n{\"text\": \"json \\u00e9\"}\n");
  write_bytes(dir() / "pile.jsonl.zst",
              std::string(reinterpret_cast<const char*>(kZstJsonl), sizeof kZstJsonl));
  PrepareOptions o = byte_options(
      {(dir() / "in").string(), (dir() / "docs.jsonl").string(), (dir() / "pile.jsonl.zst").string()}, "out");
  o.include = {"*.txt"};
  const PrepareSummary s = prepare(o);
  EXPECT_EQ(s.train_docs, 7u);
  EXPECT_EQ(s.val_docs, 0u);

  const DatasetManifest m = read_manifest(o.out_dir);
  EXPECT_EQ(m.tokenizer, "byte");
  EXPECT_EQ(m.vocab_size, 256);
  EXPECT_EQ(m.eod_id, 0);
  EXPECT_EQ(m.token_dtype, "uint16");
  ASSERT_EQ(m.train.shards.size(), 1u);
  EXPECT_TRUE(m.val.shards.empty());
  ASSERT_EQ(m.sources.size(), 5u);
  EXPECT_EQ(m.sources[3].docs, 2u);  // the blank line is no document

  std::vector<int32_t> expected;
  for (const char* doc :
       {"first file\n", "second file\n", "nested\n", "json one", "json \xc3\xa9", "zst one", "zst two\n"}) {
    const std::vector<int32_t> ids = bytes_then_eod(doc);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(split_tokens(o.out_dir, m.train), expected);
  EXPECT_EQ(m.train.tokens, expected.size());

  ShardReader reader((fs::path(o.out_dir) / m.train.shards[0].file).string());
  EXPECT_EQ(reader.info().header.tokenizer, "byte");
  EXPECT_EQ(reader.info().n_docs, 7u);
  const std::vector<uint64_t> offsets = reader.doc_offsets();
  ASSERT_EQ(offsets.size(), 8u);
  EXPECT_EQ(offsets[1], 12u);  // "first file\n" + EOD
  EXPECT_EQ(offsets.back(), expected.size());
  EXPECT_EQ(m.train.shards[0].sha256, sha256_file((fs::path(o.out_dir) / m.train.shards[0].file).string()));
  EXPECT_EQ(m.train.shards[0].file, "train/shard_000000.h5");
}

TEST_F(PrepareTest, SameInputsGiveByteIdenticalShards) {
  std::string text;
  for (int i = 0; i < 300; ++i)
    text += "{\"text\": \"document " + std::to_string(i * 7919 % 1000) + " body\"}\n";
  write_bytes(dir() / "docs.jsonl", text);
  PrepareOptions a = byte_options({(dir() / "docs.jsonl").string()}, "a");
  a.val_fraction = 0.2;
  a.shard_tokens = 2000;
  a.threads = 1;
  PrepareOptions b = a;
  b.out_dir = (dir() / "b").string();
  b.threads = 2;
  prepare(a);
  prepare(b);
  const DatasetManifest ma = read_manifest(a.out_dir), mb = read_manifest(b.out_dir);
  ASSERT_GT(ma.train.shards.size(), 1u);
  ASSERT_GE(ma.val.shards.size(), 1u);
  for (const SplitEntry* s : {&ma.train, &ma.val}) {
    for (const ShardEntry& e : s->shards) {
      EXPECT_EQ(read_bytes(fs::path(a.out_dir) / e.file), read_bytes(fs::path(b.out_dir) / e.file)) << e.file;
    }
  }
  EXPECT_EQ(read_bytes(fs::path(a.out_dir) / "dataset.json").size() > 0, true);
  EXPECT_EQ(ma.train.shards[0].sha256, mb.train.shards[0].sha256);
  EXPECT_EQ(ma.val.docs + ma.train.docs, 300u);
}

TEST(SplitRule, DeterministicByDocumentAndNearTheFraction) {
  int val = 0;
  for (uint64_t i = 0; i < 10000; ++i) val += is_val_document(i, "same text", 0.1);
  EXPECT_GT(val, 850);
  EXPECT_LT(val, 1150);
  EXPECT_EQ(is_val_document(17, "abc", 0.3), is_val_document(17, "abc", 0.3));
  for (uint64_t i = 0; i < 100; ++i) EXPECT_FALSE(is_val_document(i, "x", 0.0));
  // A larger fraction keeps every val document of a smaller one (u < f is monotone in f).
  for (uint64_t i = 0; i < 1000; ++i)
    if (is_val_document(i, "t", 0.05)) EXPECT_TRUE(is_val_document(i, "t", 0.2));
  EXPECT_NE(split_rule_text(0.05).find("0.05"), std::string::npos);
}

TEST_F(PrepareTest, ShardsCloseAtDocumentBoundaries) {
  write_bytes(dir() / "in/1.txt", std::string(30, 'a'));
  write_bytes(dir() / "in/2.txt", std::string(30, 'b'));
  write_bytes(dir() / "in/3.txt", std::string(100, 'c'));  // longer than a shard: a shard of its own
  write_bytes(dir() / "in/4.txt", std::string(10, 'd'));
  PrepareOptions o = byte_options({(dir() / "in").string()}, "out");
  o.shard_tokens = 64;
  prepare(o);
  const DatasetManifest m = read_manifest(o.out_dir);
  ASSERT_EQ(m.train.shards.size(), 3u);
  EXPECT_EQ(m.train.shards[0].docs, 2u);
  EXPECT_EQ(m.train.shards[0].tokens, 62u);
  EXPECT_EQ(m.train.shards[1].tokens, 101u);
  EXPECT_EQ(m.train.shards[2].file, "train/shard_000002.h5");
  EXPECT_EQ(m.train.tokens, 62u + 101u + 11u);
}

TEST_F(PrepareTest, ByteTokenizerDropsNulAndEmptyDocuments) {
  write_bytes(dir() / "in/a.txt", std::string("a\0b\0", 4));
  write_bytes(dir() / "in/b.txt", "");
  write_bytes(dir() / "in/c.txt", std::string("\0", 1));
  PrepareOptions o = byte_options({(dir() / "in").string()}, "out");
  const PrepareSummary s = prepare(o);
  EXPECT_EQ(s.train_docs, 1u);
  EXPECT_EQ(s.nul_bytes_dropped, 3u);
  EXPECT_EQ(s.empty_docs_dropped, 2u);
  const DatasetManifest m = read_manifest(o.out_dir);
  EXPECT_EQ(split_tokens(o.out_dir, m.train), (std::vector<int32_t>{'a', 'b', 0}));
  EXPECT_EQ(m.nul_bytes_dropped, 3u);
}

// A Python with h5py: the first python3 on PATH, else Debian's (python3-h5py), else "".
std::string python_with_h5py() {
  for (const char* python : {"python3", "/usr/bin/python3"}) {
    if (std::system((std::string(python) + " -c 'import h5py' >/dev/null 2>&1").c_str()) == 0) return python;
  }
  return "";
}

TEST_F(PrepareTest, ShardIsReadableByH5py) {
  const std::string python = python_with_h5py();
  if (python.empty()) GTEST_SKIP() << "no python3 with h5py (Debian python3-h5py)";
  write_bytes(dir() / "a.txt", "hello");
  write_bytes(dir() / "b.txt", "hdf5");
  PrepareOptions o = byte_options({(dir() / "a.txt").string(), (dir() / "b.txt").string()}, "out");
  prepare(o);
  const std::string script =
      "import h5py\n"
      "f = h5py.File('" +
      (fs::path(o.out_dir) / "train/shard_000000.h5").string() +
      "', 'r')\n"
      "t, o = f['tokens'], f['doc_offsets'][:]\n"
      "assert t.dtype == 'uint16' and o.dtype == 'uint64', (t.dtype, o.dtype)\n"
      "start, end = int(o[1]), int(o[2])\n"
      "assert bytes(t[start:end - 1].tolist()) == b'hdf5' and t[end - 1] == 0\n"
      "assert f.attrs['tokenizer'] == 'byte' and f.attrs['vocab_size'] == 256 and f.attrs['eod_id'] == 0\n"
      "assert f.attrs['schema'] == 'dape-tokens' and f.attrs['schema_version'] == 1\n"
      "assert f['tokens'].id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS\n";
  write_bytes(dir() / "check.py", script);
  EXPECT_EQ(std::system((python + " " + (dir() / "check.py").string()).c_str()), 0);
}

// ---- bad input: message names the file and what to do; nothing is left behind ----

TEST_F(PrepareTest, MissingInputNamesItAndCreatesNothing) {
  PrepareOptions o = byte_options({(dir() / "nope.txt").string()}, "out");
  const std::string message = error_message([&] { prepare(o); });
  EXPECT_NE(message.find("nope.txt"), std::string::npos) << message;
  EXPECT_NE(message.find("no such file"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(o.out_dir));
}

TEST_F(PrepareTest, UnreadableInputNamesIt) {
  if (::geteuid() == 0) {
    // Root reads files whatever their permissions; a file whose read fails (EIO) stands in.
    PrepareOptions o = byte_options({"/proc/self/mem"}, "out");
    const std::string message = error_message([&] { prepare(o); });
    EXPECT_NE(message.find("error while reading input '/proc/self/mem'"), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(o.out_dir));
    return;
  }
  write_bytes(dir() / "secret.txt", "x");
  fs::permissions(dir() / "secret.txt", fs::perms::none);
  PrepareOptions o = byte_options({(dir() / "secret.txt").string()}, "out");
  const std::string message = error_message([&] { prepare(o); });
  EXPECT_NE(message.find("secret.txt"), std::string::npos) << message;
  EXPECT_NE(message.find("permissions"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(o.out_dir));
}

TEST_F(PrepareTest, EmptyInputIsAnError) {
  write_bytes(dir() / "empty.txt", "");
  write_bytes(dir() / "blank.jsonl", "\n\n");
  PrepareOptions o = byte_options({(dir() / "empty.txt").string(), (dir() / "blank.jsonl").string()}, "out");
  const std::string message = error_message([&] { prepare(o); });
  EXPECT_NE(message.find("no documents"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(o.out_dir));
  fs::create_directories(dir() / "emptydir");
  o.inputs = {(dir() / "emptydir").string()};
  EXPECT_NE(error_message([&] { prepare(o); }).find("no files"), std::string::npos);
}

TEST_F(PrepareTest, JsonlLineWithoutTextNamesFileAndLineAndLeavesNoShard) {
  std::string text;
  for (int i = 0; i < 50; ++i) text += "{\"text\": \"fine document number " + std::to_string(i) + "\"}\n";
  text += "{\"body\": \"no text field\"}\n";
  write_bytes(dir() / "bad.jsonl", text);
  PrepareOptions o = byte_options({(dir() / "bad.jsonl").string()}, "out");
  o.shard_tokens = 100;  // shards are written before the bad line is reached
  fs::create_directories(o.out_dir);
  const std::string message = error_message([&] { prepare(o); });
  EXPECT_NE(message.find("bad.jsonl' line 51"), std::string::npos) << message;
  EXPECT_NE(message.find("\"text\""), std::string::npos) << message;
  EXPECT_TRUE(fs::exists(o.out_dir));  // it existed before
  EXPECT_TRUE(fs::is_empty(o.out_dir)) << "left behind: " << fs::directory_iterator(o.out_dir)->path();

  write_bytes(dir() / "bad2.jsonl", "{\"text\": \"ok\"}\nnot json\n");
  o.inputs = {(dir() / "bad2.jsonl").string()};
  EXPECT_NE(error_message([&] { prepare(o); }).find("bad2.jsonl' line 2: not a JSON object"),
            std::string::npos);
  write_bytes(dir() / "bad3.jsonl", "{\"text\": 5}\n");
  o.inputs = {(dir() / "bad3.jsonl").string()};
  EXPECT_NE(error_message([&] { prepare(o); }).find("expected a string"), std::string::npos);
}

TEST_F(PrepareTest, CorruptOrTruncatedZstdNamesTheFile) {
  const std::string zst(reinterpret_cast<const char*>(kZstJsonl), sizeof kZstJsonl);
  write_bytes(dir() / "cut.jsonl.zst", zst.substr(0, zst.size() - 8));
  PrepareOptions o = byte_options({(dir() / "cut.jsonl.zst").string()}, "out");
  std::string message = error_message([&] { prepare(o); });
  EXPECT_NE(message.find("cut.jsonl.zst"), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  write_bytes(dir() / "junk.jsonl.zst", "this is not zstd");
  o.inputs = {(dir() / "junk.jsonl.zst").string()};
  message = error_message([&] { prepare(o); });
  EXPECT_NE(message.find("junk.jsonl.zst' is not valid zstd"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(o.out_dir));
}

TEST_F(PrepareTest, RefusesAFinishedDatasetAndBadOptions) {
  write_bytes(dir() / "a.txt", "text");
  PrepareOptions o = byte_options({(dir() / "a.txt").string()}, "out");
  prepare(o);
  EXPECT_THROW(prepare(o), ConfigError);
  o.out_dir = (dir() / "other").string();
  o.val_fraction = 1.0;
  EXPECT_THROW(prepare(o), ConfigError);
  o.val_fraction = 0;
  o.tokenizer = "gpt3";
  EXPECT_THROW(prepare(o), ConfigError);
}

TEST_F(PrepareTest, LeftoversOfAnInterruptedRunAreReplaced) {
  write_bytes(dir() / "a.txt", "text");
  PrepareOptions o = byte_options({(dir() / "a.txt").string()}, "out");
  write_bytes(fs::path(o.out_dir) / "train/shard_000007.h5.tmp", "partial");
  write_bytes(fs::path(o.out_dir) / "train/shard_000003.h5", "stale");
  prepare(o);
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "train/shard_000007.h5.tmp"));
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "train/shard_000003.h5"));
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "train/shard_000000.h5"));
}

// ---- corpus builder cleaning steps (no downloads) ----

TEST(CorpusClean, Utf8CheckAndNormalisation) {
  size_t bad = 0;
  EXPECT_TRUE(is_valid_utf8("G\xc3\xb6ran \xe2\x80\xa6 \xf0\x9f\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("ok\xc3(", &bad));
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xe2\x82"));          // truncated
  const char raw[] =
      "\xEF\xBB\xBF"
      "a\r\nb\rc\0d\x01\te\ff\x7f\n";
  EXPECT_EQ(normalize_text(std::string(raw, sizeof raw - 1)), "a\nb\ncd\te\ff\x7f\n");
  EXPECT_EQ(normalize_text("\xEF\xBB\xBF\xEF\xBB\xBFx"), "\xEF\xBB\xBFx");  // one BOM only
  EXPECT_DOUBLE_EQ(non_ascii_fraction("ab\xc3\xa9"), 0.5);
  EXPECT_DOUBLE_EQ(non_ascii_fraction(""), 0.0);
}

TEST(CorpusClean, HtmlToText) {
  const std::string html =
      "<html><head><title>T</title><style>p{}</style></head><body>"
      "<div class=\"NAVHEADER\">Prev Next</div>"
      "<nav id=\"sidebar\">contents</nav><div id=\"menu-bar\" class=\"menu-bar sticky\">menu</div>"
      "<h1>Title  here</h1><p>Some\n   text &amp; more&nbsp;text.</p>"
      "<pre>code  keeps\n    spaces\n<span class=\"boring\">hidden line\n</span>end</pre>"
      "<ul><li>one</li><li>two</li></ul><p>a<br>b</p><script>var x;</script><div "
      "class=\"sidebar\">aside</div>"
      "<div class=\"docnav\">nav</div><div class=\"navfooter\">Home</div></body></html>";
  EXPECT_EQ(html_to_text(html),
            "Title here\n\nSome text & more\xc2\xa0text.\n\ncode  keeps\n    "
            "spaces\nend\n\none\n\ntwo\n\na\nb\n\naside\n");
}

TEST(CorpusClean, ReadMaybeGz) {
  const fs::path dir = fs::temp_directory_path() / ("dape_gz_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  write_bytes(dir / "plain.tex", "\\section{x}\n");
  ASSERT_EQ(
      std::system(("gzip -c " + (dir / "plain.tex").string() + " > " + (dir / "z.tex.gz").string()).c_str()),
      0);
  EXPECT_EQ(read_maybe_gz((dir / "z.tex.gz").string()), "\\section{x}\n");
  EXPECT_EQ(read_maybe_gz((dir / "plain.tex").string()), "\\section{x}\n");
  EXPECT_THROW(read_maybe_gz((dir / "missing.gz").string()), Error);
  fs::remove_all(dir);
}

TEST(CorpusClean, DeduplicateKeepsTheFirstCopy) {
  std::vector<SourceText> files = {{"p1", "1", "a.tex", "g", "", "same\n", ""},
                                   {"p2", "1", "b.tex", "g", "", "other\n", ""},
                                   {"p3", "1", "c.tex", "h", "", "same\n", ""}};
  const auto dropped = deduplicate(files);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[1].path, "b.tex");
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0].first, "p3:c.tex");
  EXPECT_EQ(dropped[0].second, "p1:a.tex");
  EXPECT_EQ(files[0].sha256, sha256_hex("same\n"));
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(CorpusClean, AssembleDocumentsByGroupAndSize) {
  std::vector<SourceText> files = {{"p", "1", "a/1", "a", "", "one\n", ""},
                                   {"p", "1", "a/2", "a", "", "two\n", ""},
                                   {"p", "1", "b/1", "b", "", std::string(20, 'x') + "\n", ""},
                                   {"p", "1", "b/2", "b", "", "yy\n", ""}};
  const std::vector<CorpusDocument> docs = assemble_documents(files, 16);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "one\n\ntwo\n");
  EXPECT_EQ(docs[0].files, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(docs[1].files, (std::vector<size_t>{2}));  // over the limit alone: cut after it
  EXPECT_EQ(docs[2].text, "yy\n");
  EXPECT_EQ(assemble_documents(files, SIZE_MAX).size(), 2u);
}

TEST(CorpusClean, KjvBooksFromVerseLines) {
  const std::string out =
      "Ge1:1 In the beginning.\nGe1:2 And the earth.\nGe2:1 Thus the heavens.\n1Sa1:1 Now there was.\n";
  const std::vector<std::string> books = kjv_books(out);
  ASSERT_EQ(books.size(), 2u);
  EXPECT_EQ(books[0], "In the beginning. And the earth.\n\nThus the heavens.\n");
  EXPECT_EQ(books[1], "Now there was.\n");
  EXPECT_THROW(kjv_books("no label here\n"), Error);
}

}  // namespace
}  // namespace dape::data
