// `dape corpus`: the package lists and file rules of DATA.md §2.1 and §2.2, fetching and unpacking with
// apt-get and dpkg-deb, and the run from packages to prepared shards.
#include "data/corpus_builder.h"

#include <fnmatch.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/shards.h"
#include "kernels/error.h"

namespace dape::data {
namespace {

namespace fs = std::filesystem;
using Log = std::function<void(const std::string&)>;

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a shell command; throws naming `what` when it fails.
void run(const std::string& command, const std::string& what, const std::string& hint) {
  const int status = std::system(command.c_str());
  if (status != 0) {
    throw Error("corpus: " + what + " failed (exit status " +
                std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + "); " + hint);
  }
}

// The stdout of a shell command.
std::string capture(const std::string& command, const std::string& what) {
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw Error("corpus: cannot run " + what);
  std::string out;
  char buffer[1 << 16];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  const int status = ::pclose(pipe);
  if (status != 0) throw Error("corpus: " + what + " failed (status " + std::to_string(status) + ")");
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip_gz(const std::string& s) {
  return ends_with(s, ".gz") ? s.substr(0, s.size() - 3) : s;
}

// ---- packages ----

struct Package {
  std::string name, version;
  fs::path root;  // the unpacked tree
};

// The cached .deb of a package, downloading it with apt-get when absent.
fs::path fetch_deb(const std::string& package, const fs::path& debs, const Log& log) {
  auto cached = [&]() -> fs::path {
    std::vector<fs::path> found;
    for (const fs::directory_entry& e : fs::directory_iterator(debs)) {
      const std::string name = e.path().filename().string();
      if (name.rfind(package + "_", 0) == 0 && ends_with(name, ".deb")) found.push_back(e.path());
    }
    std::sort(found.begin(), found.end());
    return found.empty() ? fs::path() : found.back();
  };
  fs::path deb = cached();
  if (!deb.empty()) return deb;
  log("downloading " + package);
  run("cd " + shell_quote(debs.string()) + " && apt-get download -q " + shell_quote(package) + " >/dev/null",
      "apt-get download " + package,
      "check that the Debian archive is reachable and that bookworm main is in the apt sources (run "
      "apt-get update as root), or fill the cache folder " +
          debs.string() + " with the .deb");
  deb = cached();
  if (deb.empty()) throw Error("corpus: apt-get download " + package + " left no .deb in " + debs.string());
  return deb;
}

// Unpacks the members whose names match one of the fnmatch patterns (all when none; `*` also matches
// `/`) into cache/unpacked/<package>, once.
Package unpack(const std::string& name, const fs::path& cache, const std::vector<std::string>& members,
               const Log& log) {
  const fs::path debs = cache / "debs";
  fs::create_directories(debs);
  const fs::path deb = fetch_deb(name, debs, log);
  Package p{name, "", cache / "unpacked" / deb.stem()};
  p.version = capture("dpkg-deb -f " + shell_quote(deb.string()) + " Version", "dpkg-deb -f " + deb.string());
  while (!p.version.empty() && std::isspace(static_cast<unsigned char>(p.version.back())))
    p.version.pop_back();
  const fs::path done = p.root / ".dape-unpacked";
  if (fs::exists(done)) return p;
  log("unpacking " + deb.filename().string());
  fs::remove_all(p.root);
  fs::create_directories(p.root);
  const std::string tar_stream = "dpkg-deb --fsys-tarfile " + shell_quote(deb.string());
  const std::string hint = "delete the file from the cache and run again to download it anew";
  if (members.empty()) {
    run(tar_stream + " | tar -x -C " + shell_quote(p.root.string()), "unpacking " + deb.string(), hint);
  } else {
    // tar fails on a pattern that matches nothing, so match the listing here and extract by name.
    std::istringstream listing(capture(tar_stream + " | tar -t", "listing " + deb.string()));
    std::string names;
    for (std::string member; std::getline(listing, member);) {
      for (const std::string& m : members) {
        if (::fnmatch(m.c_str(), member.c_str(), 0) == 0) {
          names += member + "\n";
          break;
        }
      }
    }
    const fs::path list = p.root / ".dape-members";
    std::ofstream(list) << names;
    if (!names.empty()) {
      run(tar_stream + " | tar -x -C " + shell_quote(p.root.string()) + " --verbatim-files-from -T " +
              shell_quote(list.string()),
          "unpacking " + deb.string(), hint);
    }
  }
  std::ofstream(done) << p.version << "\n";
  return p;
}

// Regular files (no symlinks) under root/dir whose path relative to root/dir passes keep, sorted.
std::vector<std::string> list_files(const fs::path& root, const std::string& dir,
                                    const std::function<bool(const std::string&)>& keep) {
  std::vector<std::string> out;
  const fs::path base = root / dir;
  if (!fs::is_directory(base)) return out;
  for (const fs::directory_entry& e : fs::recursive_directory_iterator(base)) {
    if (e.is_symlink() || !e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), base).generic_string();
    if (keep(rel)) out.push_back(rel);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string first_components(const std::string& rel, int n) {
  size_t pos = 0;
  for (int i = 0; i < n; ++i) {
    pos = rel.find('/', pos);
    if (pos == std::string::npos)
      return rel.substr(0, rel.rfind('/') == std::string::npos ? 0 : rel.rfind('/'));
    ++pos;
  }
  return rel.substr(0, pos - 1);
}

// Licences of the TeX Live documentation folders from a package's Licenses.gz ("name: licence" followed
// by "texmf-dist/doc/<area>/<pkg>/*" lines): "<area>/<pkg>" -> licence.
std::map<std::string, std::string> texlive_licences(const Package& p) {
  std::map<std::string, std::string> out;
  const fs::path file = p.root / "usr/share/doc" / p.name / "Licenses.gz";
  if (!fs::exists(file)) return out;
  std::istringstream in(read_maybe_gz(file.string()));
  std::string licence;
  for (std::string line; std::getline(in, line);) {
    const size_t colon = line.find(": ");
    if (colon != std::string::npos && line.find('/') == std::string::npos) {
      licence = line.substr(colon + 2);
    } else if (line.rfind("texmf-dist/doc/", 0) == 0 && ends_with(line, "/*")) {
      out.emplace(line.substr(15, line.size() - 17), licence);
    }
  }
  return out;
}

// ---- collecting ----

struct Collected {
  std::vector<SourceText> files;
  std::vector<std::pair<std::string, std::string>> rejected;  // "package:path", reason
};

// Reads, decodes, normalises and (max_non_ascii < 1) filters one file; false when rejected.
bool add_file(Collected& c, const Package& p, const std::string& path, std::string text, std::string group,
              std::string licence, double max_non_ascii) {
  size_t bad = 0;
  if (!is_valid_utf8(text, &bad)) {
    c.rejected.emplace_back(p.name + ":" + path, "invalid UTF-8 at byte " + std::to_string(bad));
    return false;
  }
  text = normalize_text(text);
  if (non_ascii_fraction(text) > max_non_ascii) {
    c.rejected.emplace_back(p.name + ":" + path, "more than 1% non-ASCII bytes");
    return false;
  }
  c.files.push_back({p.name, p.version, path, std::move(group), std::move(licence), std::move(text), ""});
  return true;
}

const std::vector<std::string> kTexLivePackages = {
    "texlive-latex-extra-doc", "texlive-pictures-doc",         "texlive-publishers-doc",
    "texlive-bibtex-extra",    "texlive-science-doc",          "texlive-lang-english",
    "texlive-fonts-extra-doc", "texlive-pstricks-doc",         "texlive-latex-recommended-doc",
    "texlive-plain-generic",   "texlive-metapost-doc",         "texlive-humanities-doc",
    "texlive-latex-base-doc",  "texlive-fonts-recommended-doc"};

// §2.1: every *.tex and *.tex.gz under usr/share/doc/texlive-doc/ of the 14 packages, in path order;
// one document per package directory texlive-doc/<area>/<pkg>/.
Collected collect_arxiv_like(const fs::path& cache, const Log& log) {
  struct Candidate {
    std::string rel;
    size_t package;
  };
  std::vector<Package> packages;
  std::vector<std::map<std::string, std::string>> licences;
  std::vector<Candidate> candidates;
  for (const std::string& name : kTexLivePackages) {
    packages.push_back(unpack(name, cache, {"*.tex", "*.tex.gz", "*/Licenses.gz"}, log));
    licences.push_back(texlive_licences(packages.back()));
    for (const std::string& rel :
         list_files(packages.back().root, "usr/share/doc/texlive-doc",
                    [](const std::string& r) { return ends_with(r, ".tex") || ends_with(r, ".tex.gz"); }))
      candidates.push_back({rel, packages.size() - 1});
  }
  // Path order within a package directory, the directories one after the other.
  std::stable_sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    const std::string ga = first_components(a.rel, 2), gb = first_components(b.rel, 2);
    if (ga != gb) return ga < gb;
    return strip_gz(a.rel) != strip_gz(b.rel) ? strip_gz(a.rel) < strip_gz(b.rel) : a.package < b.package;
  });
  Collected c;
  for (const Candidate& k : candidates) {
    const Package& p = packages[k.package];
    const std::string path = "usr/share/doc/texlive-doc/" + k.rel;
    const std::string group = first_components(k.rel, 2);
    const auto licence = licences[k.package].find(group);
    add_file(c, p, path, read_maybe_gz((p.root / path).string()), group,
             licence == licences[k.package].end() ? "see Licenses.gz" : licence->second, 0.01);
  }
  return c;
}

// One books-like source: files of a package, their document groups and a size limit per document.
struct BookSource {
  std::string package;
  std::string dir;                                       // inside the package
  std::function<bool(const std::string&)> keep;          // path relative to dir
  std::function<std::string(const std::string&)> group;  // files of a group form documents
  bool html = false;
  size_t max_bytes = 1 << 20;
  std::string licence;
  std::vector<std::string> order;  // explicit reading order (file names), else path order
};

const std::vector<std::string> kRustBooks = {"book",    "reference",     "rust-by-example",
                                             "nomicon", "edition-guide", "embedded-book",
                                             "rustc",   "rustdoc",       "unstable-book"};

std::vector<BookSource> book_sources() {
  auto top = [](const std::string& rel) { return first_components(rel, 1); };
  auto one = [](const std::string&) { return std::string("all"); };
  std::vector<std::string> cfi = {"preface.htm"};
  for (int i = 1; i <= 17; ++i) cfi.push_back("ch" + std::to_string(i) + "web.htm");
  cfi.push_back("ottoen.htm");
  return {
      {"linux-doc-6.1",
       "usr/share/doc/linux-doc-6.1/Documentation",
       [](const std::string& r) {
         const std::string s = strip_gz(r);
         return r.rfind("translations/", 0) != 0 && (ends_with(s, ".rst") || ends_with(s, ".txt"));
       },
       top,
       false,
       1 << 20,
       "GPL-2 (SPDX tags per file)",
       {}},
      {"python3.11-doc",
       "usr/share/doc/python3.11/html/_sources",
       [](const std::string& r) { return ends_with(r, ".rst.txt"); },
       top,
       false,
       1 << 20,
       "PSF-2.0",
       {}},
      {"perl-doc",
       "usr/share/perl/5.36.0/pod",
       [](const std::string& r) { return r.find('/') == std::string::npos && ends_with(r, ".pod"); },
       one,
       false,
       256 << 10,
       "GPL-1+ or Artistic",
       {}},
      {"postgresql-doc-15",
       "usr/share/doc/postgresql-doc-15/html",
       [](const std::string& r) { return r.find('/') == std::string::npos && ends_with(r, ".html"); },
       one,
       true,
       512 << 10,
       "PostgreSQL",
       {}},
      {"rust-doc",
       "usr/share/doc/rust-doc/html",
       [](const std::string& r) {
         return std::any_of(kRustBooks.begin(), kRustBooks.end(),
                            [&](const std::string& b) { return r == b + "/print.html"; });
       },
       top,
       true,
       1 << 20,
       "MIT or Apache-2.0",
       {}},
      {"abs-guide",
       "usr/share/doc/abs-guide/html",
       [](const std::string& r) { return r.find('/') == std::string::npos && ends_with(r, ".html"); },
       one,
       true,
       1 << 20,
       "public domain",
       {}},
      {"debian-handbook",
       "usr/share/doc/debian-handbook/html/en-US",
       [](const std::string& r) { return r.find('/') == std::string::npos && ends_with(r, ".html"); },
       one,
       true,
       1 << 20,
       "GPL-2+ or CC-BY-SA-3.0",
       {}},
      {"cfi-en", "usr/share/doc/cfi-en/html",
       [cfi](const std::string& r) { return std::find(cfi.begin(), cfi.end(), r) != cfi.end(); }, one, true,
       1 << 20, "public domain", cfi},
  };
}

// §2.2, in the table's order; the KJV (between PostgreSQL and Rust) comes from the bible program.
Collected collect_books_like(const fs::path& cache, const Log& log, std::vector<size_t>* limits) {
  Collected c;
  for (const BookSource& s : book_sources()) {
    if (s.package == "rust-doc") {  // the KJV goes before Rust, as in the table
      const Package text = unpack("bible-kjv-text", cache, {}, log);
      const Package program = unpack("bible-kjv", cache, {}, log);
      const std::string output =
          capture(shell_quote((program.root / "usr/bin/bible").string()) + " -f -p " +
                      shell_quote((text.root / "usr/lib").string()) + " 'gen1:1-rev22:21'",
                  "the bible program of bible-kjv");
      const std::vector<std::string> books = kjv_books(output);
      for (size_t b = 0; b < books.size(); ++b) {
        const std::string n = std::to_string(b + 1);
        c.files.push_back({"bible-kjv-text", text.version, "usr/lib/bible.data (book " + n + ")", "kjv:" + n,
                           "public domain", normalize_text(books[b]), ""});
        limits->push_back(1 << 20);
      }
    }
    const Package p = unpack(s.package, cache, {}, log);
    std::vector<std::string> rels = list_files(p.root, s.dir, s.keep);
    // Path order within a group, the groups one after the other.
    std::stable_sort(rels.begin(), rels.end(),
                     [&](const std::string& a, const std::string& b) { return s.group(a) < s.group(b); });
    if (!s.order.empty()) {
      std::vector<std::string> ordered;
      for (const std::string& name : s.order)
        if (std::find(rels.begin(), rels.end(), name) != rels.end()) ordered.push_back(name);
      rels = ordered;
    }
    if (rels.empty()) {
      throw Error("corpus: package " + s.package + " has no files under " + s.dir +
                  "; the package layout changed, check DATA.md §2.2 against the package");
    }
    for (const std::string& rel : rels) {
      const std::string path = s.dir + "/" + rel;
      std::string bytes = read_maybe_gz((p.root / path).string());
      if (s.html) bytes = html_to_text(bytes);
      if (add_file(c, p, path, std::move(bytes), s.package + ":" + s.group(rel), s.licence, 1.0))
        limits->push_back(s.max_bytes);
    }
  }
  return c;
}

void write_jsonl(const fs::path& path, const std::vector<nlohmann::ordered_json>& rows) {
  std::ofstream out(path, std::ios::binary);
  for (const auto& row : rows) out << row.dump() << "\n";
  if (!out) throw Error("corpus: cannot write " + path.string() + "; check free disk space");
}

}  // namespace

const std::vector<std::string>& corpus_names() {
  static const std::vector<std::string> names = {"arxiv-like", "books-like"};
  return names;
}

CorpusSummary build_corpus(const CorpusOptions& options, const Log& log,
                           const std::function<void(const PrepareProgress&)>& progress) {
  const bool arxiv = options.name == "arxiv-like";
  if (!arxiv && options.name != "books-like")
    throw ConfigError("corpus: unknown corpus '" + options.name + "'; expected arxiv-like or books-like");
  if (options.out_dir.empty()) throw ConfigError("corpus: no --out given; name the output directory");
  const fs::path out(options.out_dir);
  if (fs::exists(out / kManifestName)) {
    throw ConfigError("corpus: --out " + out.string() +
                      " already holds a prepared dataset (dataset.json); pick another --out or delete it");
  }
  fs::path cache = options.cache_dir;
  if (cache.empty()) {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    cache = xdg && *xdg ? fs::path(xdg) / "dape/debian" : fs::path(home ? home : ".") / ".cache/dape/debian";
  }
  log("cache " + cache.string());

  std::vector<size_t> limits;
  Collected c = arxiv ? collect_arxiv_like(cache, log) : collect_books_like(cache, log, &limits);
  if (arxiv) limits.assign(c.files.size(), SIZE_MAX);  // one document per package directory, uncut
  CorpusSummary summary;
  summary.rejected = c.rejected.size();
  // Deduplicate, carrying each file's size limit along.
  std::map<std::string, size_t> limit_of;
  for (size_t i = 0; i < c.files.size(); ++i)
    limit_of[c.files[i].package + ":" + c.files[i].path] = limits[i];
  const auto duplicates = deduplicate(c.files);
  summary.duplicates = duplicates.size();
  summary.files = c.files.size();

  // Assemble per group with the group's limit (files of one group share it).
  std::vector<CorpusDocument> docs;
  for (size_t i = 0; i < c.files.size();) {
    size_t j = i;
    while (j < c.files.size() && c.files[j].group == c.files[i].group) ++j;
    std::vector<SourceText> group(c.files.begin() + static_cast<std::ptrdiff_t>(i),
                                  c.files.begin() + static_cast<std::ptrdiff_t>(j));
    for (CorpusDocument& d :
         assemble_documents(group, limit_of[c.files[i].package + ":" + c.files[i].path])) {
      for (size_t& f : d.files) f += i;
      docs.push_back(std::move(d));
    }
    i = j;
  }

  const fs::path text_dir = out / "text";
  fs::create_directories(text_dir);
  for (const fs::directory_entry& e : fs::directory_iterator(text_dir))
    if (e.path().extension() == ".txt") fs::remove(e.path());
  std::vector<nlohmann::ordered_json> manifest, rejected;
  for (size_t d = 0; d < docs.size(); ++d) {
    char name[32];
    std::snprintf(name, sizeof name, "%06zu.txt", d);
    std::ofstream(text_dir / name, std::ios::binary) << docs[d].text;
    summary.text_bytes += docs[d].text.size();
    for (size_t f : docs[d].files) {
      const SourceText& s = c.files[f];
      manifest.push_back({{"package", s.package},
                          {"version", s.version},
                          {"path", s.path},
                          {"licence", s.licence},
                          {"sha256", s.sha256},
                          {"bytes", s.text.size()},
                          {"document", name}});
    }
  }
  for (const auto& [file, reason] : c.rejected) rejected.push_back({{"file", file}, {"reason", reason}});
  for (const auto& [file, twin] : duplicates)
    rejected.push_back({{"file", file}, {"reason", "duplicate of " + twin}});
  write_jsonl(out / "manifest.jsonl", manifest);
  write_jsonl(out / "rejected.jsonl", rejected);
  summary.documents = docs.size();
  log(std::to_string(summary.files) + " files (" + std::to_string(summary.rejected) + " rejected, " +
      std::to_string(summary.duplicates) + " duplicates) -> " + std::to_string(docs.size()) + " documents, " +
      std::to_string(summary.text_bytes) + " bytes in " + text_dir.string());

  PrepareOptions p;
  p.inputs = {text_dir.string()};
  p.include = {"*.txt"};
  p.out_dir = out.string();
  p.tokenizer = options.tokenizer;
  p.val_fraction = options.val_fraction >= 0 ? options.val_fraction : arxiv ? 0.05 : 0.08;
  p.threads = options.threads;
  p.cleaning = std::string("utf8-strict,bom,crlf,c0,dedup-sha256") +
               (arxiv ? ",nonascii<=1%" : ",html-text") + "; corpus " + options.name + ", manifest.jsonl";
  summary.prepared = prepare(p, progress);
  return summary;
}

}  // namespace dape::data
