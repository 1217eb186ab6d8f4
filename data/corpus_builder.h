// `dape corpus`: the offline stand-in corpora of DATA.md §2, built from Debian bookworm packages.
//   arxiv-like  LaTeX sources of the TeX Live documentation (14 packages), one document per package
//               directory, files with more than 1% non-ASCII bytes dropped (§2.1)
//   books-like  9 long English manuals and books (Linux, Python, Perl, PostgreSQL, KJV, Rust books,
//               abs-guide, Debian handbook, cfi-en), documents of about 0.1-1 MB (§2.2)
// Steps (§2.0): apt-get download into a cache, unpack, collect files by the per-corpus rules, gunzip,
// decode strictly as UTF-8 (failures go to a reject list), normalise minimally, deduplicate by SHA-256,
// assemble documents, write them to OUT/text/ with OUT/manifest.jsonl, then run prepare on OUT/text.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/prepare.h"

namespace dape::data {

struct CorpusOptions {
  std::string name;       // "arxiv-like" or "books-like"
  std::string out_dir;    // receives text/, manifest.jsonl, rejected.jsonl, train/, val/, dataset.json
  std::string cache_dir;  // .deb files and unpacked trees; empty: $XDG_CACHE_HOME/dape/debian
  std::string tokenizer = "gpt2";
  double val_fraction = -1;  // < 0: the corpus default (arxiv-like 0.05, books-like 0.08, DATA.md §2.4)
  int threads = 0;
};

struct CorpusSummary {
  uint64_t files = 0;     // kept source files (or KJV books)
  uint64_t rejected = 0;  // invalid UTF-8 or over the non-ASCII limit
  uint64_t duplicates = 0;
  uint64_t documents = 0;
  uint64_t text_bytes = 0;  // of the documents, as written to OUT/text
  PrepareSummary prepared;
};

// Names accepted by build_corpus.
const std::vector<std::string>& corpus_names();

// Builds the corpus; log receives one line per step. Downloads with apt-get (the Debian archive must be
// reachable, or the cache already filled). Throws ConfigError for an unknown name or an --out that holds
// a dataset, dape::Error naming the package or file otherwise.
CorpusSummary build_corpus(const CorpusOptions& options, const std::function<void(const std::string&)>& log,
                           const std::function<void(const PrepareProgress&)>& progress = nullptr);

// ---- the cleaning steps, exposed for tests ----

// Whether text is well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF); if
// not and bad_offset is given, the offset of the first bad byte.
bool is_valid_utf8(const std::string& text, size_t* bad_offset = nullptr);
// DATA.md §2.0 step 4, on valid UTF-8: strips one leading BOM, turns CRLF and CR into LF, drops NUL and
// the other C0 controls except TAB, LF and FF. Nothing else changes.
std::string normalize_text(const std::string& text);
// Share of bytes >= 0x80 (0 for empty text).
double non_ascii_fraction(const std::string& text);
// DATA.md §2.2 HTML to text with libxml2's HTML parser: <head>, <script>, <style>, <nav> and navigation
// blocks (classes navheader, navfooter, docnav, menu-bar, boring; ids sidebar, menu-bar; any case) dropped; a
// newline before and after block elements, one at <br>; whitespace inside <pre> kept, elsewhere every run of
// whitespace one space; entities decoded; spaces at line ends removed; 3+ newlines squeezed to 2; ends with
// one newline.
std::string html_to_text(const std::string& html);
// The bytes of a file, gunzipped when its name ends in .gz; throws dape::Error naming it.
std::string read_maybe_gz(const std::string& path);

// One cleaned source file on its way into a document.
struct SourceText {
  std::string package, version, path;  // path inside the package
  std::string group;                   // files of one group form one document (in this order)
  std::string licence;
  std::string text;  // normalised
  std::string sha256;
};

// Keeps the first file of each SHA-256 in order; returns the dropped ones as "package:path" duplicates
// of their kept twin ("package:path").
std::vector<std::pair<std::string, std::string>> deduplicate(std::vector<SourceText>& files);

struct CorpusDocument {
  std::string text;
  std::vector<size_t> files;  // indices into the SourceText list
};
// Joins consecutive files of the same group with a blank line; within a group a document closes before
// the file that would take it past max_bytes (at file boundaries, so one file may exceed it).
std::vector<CorpusDocument> assemble_documents(const std::vector<SourceText>& files, size_t max_bytes);

// The KJV from `bible -f` output (one verse per line, "Ge1:1 In the beginning ..."): one document per
// book, the label stripped, each chapter's verses joined into one paragraph, chapters separated by a
// blank line. Throws dape::Error on a line without a label.
std::vector<std::string> kjv_books(const std::string& bible_output);

}  // namespace dape::data
