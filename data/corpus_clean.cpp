// The cleaning steps of the corpus builder (DATA.md §2.0, §2.2): UTF-8 check, minimal normalisation,
// HTML to text (libxml2), gunzip (zlib), deduplication, document assembly and the KJV's verse layout.
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <strings.h>
#include <zlib.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <map>
#include <regex>
#include <sstream>

#include "data/corpus_builder.h"
#include "data/shards.h"
#include "kernels/error.h"

namespace dape::data {

bool is_valid_utf8(const std::string& text, size_t* bad_offset) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    }
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (s[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (!ok) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

std::string normalize_text(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  for (; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\r') {
      out += '\n';
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else if (c >= 0x20 || c == '\t' || c == '\n' || c == '\f') {
      out += static_cast<char>(c);
    }
  }
  return out;
}

double non_ascii_fraction(const std::string& text) {
  if (text.empty()) return 0;
  size_t n = 0;
  for (char c : text) n += static_cast<unsigned char>(c) >= 0x80;
  return static_cast<double>(n) / static_cast<double>(text.size());
}

namespace {

bool is_block(const char* name) {
  static const char* kBlocks[] = {"p",  "div", "h1",  "h2", "h3", "h4",    "h5",        "h6",
                                  "li", "tr",  "pre", "dt", "dd", "table", "blockquote"};
  for (const char* b : kBlocks)
    if (strcasecmp(name, b) == 0) return true;
  return false;
}

bool attribute_is(xmlNode* node, const char* attribute, std::initializer_list<const char*> values) {
  xmlChar* value = xmlGetProp(node, reinterpret_cast<const xmlChar*>(attribute));
  if (value == nullptr) return false;
  std::istringstream tokens(reinterpret_cast<const char*>(value));
  xmlFree(value);
  for (std::string token; tokens >> token;) {
    for (const char* v : values)
      if (strcasecmp(token.c_str(), v) == 0) return true;
  }
  return false;
}

// Elements without text (head, script, style), navigation (nav; DocBook navheader/navfooter, Publican
// docnav, mdBook's sidebar and menu bar) and mdBook's hidden code lines. DocBook's class "sidebar" is a
// boxed aside with real text and stays.
bool is_dropped(xmlNode* node) {
  const char* name = reinterpret_cast<const char*>(node->name);
  for (const char* d : {"head", "script", "style", "nav"})
    if (strcasecmp(name, d) == 0) return true;
  return attribute_is(node, "class", {"navheader", "navfooter", "docnav", "menu-bar", "boring"}) ||
         attribute_is(node, "id", {"sidebar", "menu-bar"});
}

// Text output that collapses whitespace outside <pre> and keeps lines free of trailing spaces.
class TextOut {
 public:
  void newline() {
    trim_trailing_spaces();
    out_ += '\n';
  }
  void collapsed(const char* text) {
    for (const char* p = text; *p; ++p) {
      const bool space = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f';
      if (!space) {
        out_ += *p;
      } else if (!out_.empty() && out_.back() != ' ' && out_.back() != '\n') {
        out_ += ' ';
      }
    }
  }
  void raw(const char* text) { out_ += text; }
  std::string finish() {
    trim_trailing_spaces();
    std::string squeezed;
    int newlines = 0;
    for (char c : out_) {
      newlines = c == '\n' ? newlines + 1 : 0;
      if (newlines <= 2) squeezed += c;
    }
    const size_t begin = squeezed.find_first_not_of('\n');
    if (begin == std::string::npos) return "";
    const size_t end = squeezed.find_last_not_of('\n');
    return squeezed.substr(begin, end - begin + 1) + "\n";
  }

 private:
  void trim_trailing_spaces() {
    while (!out_.empty() && (out_.back() == ' ' || out_.back() == '\t')) out_.pop_back();
  }
  std::string out_;
};

void walk(xmlNode* node, bool in_pre, TextOut& out) {
  for (xmlNode* n = node; n != nullptr; n = n->next) {
    if (n->type == XML_ELEMENT_NODE) {
      if (is_dropped(n)) continue;
      const char* name = reinterpret_cast<const char*>(n->name);
      if (strcasecmp(name, "br") == 0) {
        out.newline();
        continue;
      }
      const bool block = is_block(name);
      if (block) out.newline();
      walk(n->children, in_pre || strcasecmp(name, "pre") == 0, out);
      if (block) out.newline();
    } else if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
      const char* text = reinterpret_cast<const char*>(n->content);
      if (text == nullptr) continue;
      in_pre ? out.raw(text) : out.collapsed(text);
    }
  }
}

}  // namespace

std::string html_to_text(const std::string& html) {
  htmlDocPtr doc =
      htmlReadMemory(html.data(), static_cast<int>(html.size()), nullptr, nullptr,
                     HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET);
  if (doc == nullptr) return "";
  TextOut out;
  walk(xmlDocGetRootElement(doc), false, out);
  xmlFreeDoc(doc);
  return out.finish();
}

std::string read_maybe_gz(const std::string& path) {
  const bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  std::string out;
  char buffer[1 << 16];
  if (gz) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (f == nullptr) throw Error("corpus: cannot read " + path + ": " + std::strerror(errno));
    int n = 0;
    while ((n = gzread(f, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<size_t>(n));
    int err = 0;
    const std::string message = n < 0 ? gzerror(f, &err) : "";
    gzclose(f);
    if (n < 0)
      throw Error("corpus: " + path + " is not valid gzip data (" + message + "); unpack the package again");
    return out;
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw Error("corpus: cannot read " + path + ": " + std::strerror(errno));
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) out.append(buffer, n);
  const bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) throw Error("corpus: error while reading " + path);
  return out;
}

std::vector<std::pair<std::string, std::string>> deduplicate(std::vector<SourceText>& files) {
  std::map<std::string, std::string> first;  // sha256 -> "package:path"
  std::vector<std::pair<std::string, std::string>> dropped;
  std::vector<SourceText> kept;
  for (SourceText& f : files) {
    if (f.sha256.empty()) f.sha256 = sha256_hex(f.text);
    const std::string name = f.package + ":" + f.path;
    const auto [it, inserted] = first.emplace(f.sha256, name);
    if (inserted) {
      kept.push_back(std::move(f));
    } else {
      dropped.emplace_back(name, it->second);
    }
  }
  files = std::move(kept);
  return dropped;
}

std::vector<CorpusDocument> assemble_documents(const std::vector<SourceText>& files, size_t max_bytes) {
  std::vector<CorpusDocument> docs;
  for (size_t i = 0; i < files.size(); ++i) {
    const bool same_group = i > 0 && files[i].group == files[i - 1].group;
    const bool fits = !docs.empty() && docs.back().text.size() + 2 + files[i].text.size() <= max_bytes;
    if (!same_group || !fits) {
      docs.emplace_back();
    } else {
      docs.back().text += "\n\n";
    }
    // Files end in a newline; the blank line between files is the separator itself.
    std::string text = files[i].text;
    while (!text.empty() && text.back() == '\n') text.pop_back();
    docs.back().text += text;
    docs.back().files.push_back(i);
  }
  for (CorpusDocument& d : docs) d.text += "\n";
  return docs;
}

std::vector<std::string> kjv_books(const std::string& bible_output) {
  static const std::regex label(R"(^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$)");
  std::vector<std::string> books;
  std::string book, chapter;
  std::istringstream in(bible_output);
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) continue;
    std::smatch m;
    if (!std::regex_match(line, m, label)) {
      throw Error("corpus: line " + std::to_string(line_number) +
                  " of the bible output has no verse label (\"" + line.substr(0, 40) +
                  "\"); expected lines like \"Ge1:1 In the beginning ...\"");
    }
    if (m[1] != book) {
      books.emplace_back();
      book = m[1];
      chapter.clear();
    }
    std::string& text = books.back();
    if (m[2] != chapter) {
      if (!text.empty()) text += "\n\n";
      chapter = m[2];
    } else {
      text += ' ';
    }
    text += m[4].str();
  }
  for (std::string& b : books) b += "\n";
  return books;
}

}  // namespace dape::data
