// The GPT-2 tokenizer: the vectors of DATA.md §1.4, the table invariants of §1.2, UTF-8 repair, long pieces,
// round trips, the bundled corpus, and a differential test against js-tiktoken and gpt-tokenizer (§1.5).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "data/data.h"
#include "data/gpt2_tokenizer.h"
#include "kernels/error.h"

namespace dape::data {
namespace {

namespace fs = std::filesystem;

const std::string kTablesDir = std::string(DAPE_SOURCE_DIR) + "/third_party/gpt2";
const std::string kJsDir = std::string(DAPE_SOURCE_DIR) + "/tests/data/js";

const Gpt2Tokenizer& gpt2() {
  static const Gpt2Tokenizer tokenizer(kTablesDir);
  return tokenizer;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// UTF-8 of one code point.
std::string utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (c >> 6)));
    s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (c >> 12)));
    s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (c >> 18)));
    s.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
  return s;
}

std::string ids_text(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

// A deterministic generator that is the same with every standard library (splitmix64).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool chance(int percent) { return range(0, 99) < percent; }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[static_cast<size_t>(range(0, static_cast<int64_t>(v.size()) - 1))];
  }

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------------------------------------
// DATA.md §1.4, the Python-reference column.

struct Vector {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Vector> reference_vectors() {
  return {
      {"Hello world", {15496, 995}},
      {"don't DON'T we'll I'm you're they've she'd it's",
       {9099, 470, 23917, 6, 51, 356, 1183, 314, 1101, 345, 821, 484, 1053, 673, 1549, 340, 338}},
      {"I'M here", {40, 6, 44, 994}},
      {"rock\u2019n\u2019roll it\u2019s", {10823, 447, 247, 77, 447, 247, 2487, 340, 447, 247, 82}},
      {"a   b", {64, 220, 220, 275}},
      {"   ", {220, 220, 220}},
      {"   leading spaces", {220, 220, 3756, 9029}},
      {"trailing spaces   ", {9535, 4386, 9029, 220, 220, 220}},
      {"a\tb", {64, 197, 65}},
      {"\t\tx", {197, 197, 87}},
      {"Hello\n\nWorld", {15496, 198, 198, 10603}},
      {"Hello\n\n", {15496, 628}},
      {"x  \n  y", {87, 220, 220, 198, 220, 331}},
      {"\r\n", {201, 198}},
      {"", {}},
      {"12345678901234567890 and 3.14159",
       {10163, 2231, 3134, 4531, 486, 1954, 2231, 30924, 3829, 290, 513, 13, 1415, 19707}},
      {"caf\u00e9 vs cafe\u0301", {66, 1878, 2634, 3691, 26725, 136, 223}},
      {"\u4f60\u597d\u4e16\u754c", {19526, 254, 25001, 121, 10310, 244, 45911, 234}},
      {"emoji \U0001F600\U0001F44D\U0001F3FD", {368, 31370, 30325, 222, 41840, 235, 8582, 237, 121}},
      {"\u00bd \u00b2 \u0663\u0664", {23141, 1587, 110, 18923, 96, 149, 97}},
      {"x\u00a0y", {87, 1849, 88}},
      {"\\begin{equation} E = mc^2 \\end{equation}",
       {59, 27471, 90, 4853, 341, 92, 412, 796, 36650, 61, 17, 3467, 437, 90, 4853, 341, 92}},
      {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}},
      {"a \ufeffb", {64, 27332, 119, 123, 65}},
      {"a \u0085b", {64, 220, 126, 227, 65}},
      {"\ufeffHello", {171, 119, 123, 15496}},
  };
}

TEST(Gpt2Tokenizer, MatchesTheReferenceVectors) {
  for (const Vector& v : reference_vectors()) {
    EXPECT_EQ(ids_text(gpt2().encode(v.text)), ids_text(v.ids)) << "text: '" << v.text << "'";
    EXPECT_EQ(gpt2().decode(v.ids), v.text);
  }
}

TEST(Gpt2Tokenizer, PreTokenizesAsTheOrderedAlternation) {
  using Pieces = std::vector<std::string_view>;
  EXPECT_EQ(gpt2_pretokenize("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(gpt2_pretokenize("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(gpt2_pretokenize("x  \n  y"), (Pieces{"x", "  \n ", " y"}));
  EXPECT_EQ(gpt2_pretokenize("Hello\n\nWorld"), (Pieces{"Hello", "\n", "\n", "World"}));
  EXPECT_EQ(gpt2_pretokenize("Hello\n\n"), (Pieces{"Hello", "\n\n"}));
  EXPECT_EQ(gpt2_pretokenize("DON'T it's"), (Pieces{"DON", "'", "T", " it", "'s"}));
  EXPECT_EQ(gpt2_pretokenize("x.'s 's 'sup ''ll"),
            (Pieces{"x", ".'", "s", " '", "s", " '", "sup", " ''", "ll"}));
  EXPECT_EQ(gpt2_pretokenize("we're've'd'm'll"), (Pieces{"we", "'re", "'ve", "'d", "'m", "'ll"}));
  EXPECT_EQ(gpt2_pretokenize("a1b 2c ++x"), (Pieces{"a", "1", "b", " 2", "c", " ++", "x"}));
  EXPECT_EQ(gpt2_pretokenize("a\tb \tc"), (Pieces{"a", "\t", "b", " ", "\t", "c"}));
  EXPECT_EQ(gpt2_pretokenize("cafe\u0301s"), (Pieces{"cafe", "\u0301", "s"}));
  EXPECT_EQ(gpt2_pretokenize(" \u2167\u00bd x"), (Pieces{" \u2167\u00bd", " x"}));  // Nl and No are \p{N}
  EXPECT_EQ(gpt2_pretokenize("\U0001D400\U0001D7CE"), (Pieces{"\U0001D400", "\U0001D7CE"}));  // astral L, N
  EXPECT_EQ(gpt2_pretokenize("ab "), (Pieces{"ab", " "}));
}

// White_Space is exactly the 25 code points of DATA.md §1.3; lookalikes are "other".
TEST(Gpt2Tokenizer, WhiteSpaceIsTheTwentyFiveCodePoints) {
  std::vector<char32_t> space = {0x09, 0x0A,   0x0B,   0x0C,   0x0D,   0x20,   0x85,
                                 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
  for (char32_t c = 0x2000; c <= 0x200A; ++c) space.push_back(c);
  ASSERT_EQ(space.size(), 25u);
  for (char32_t c : space) {
    // A run of two whitespace characters before a letter splits into the first, then the second alone
    // (or, for U+0020, the second joins the letter).
    const std::string w = utf8(c);
    const std::string text = "x" + w + w + "y";
    const std::vector<std::string_view> pieces = gpt2_pretokenize(text);
    if (c == 0x20) {
      EXPECT_EQ(pieces, (std::vector<std::string_view>{"x", " ", " y"}));
    } else {
      EXPECT_EQ(pieces, (std::vector<std::string_view>{"x", w, w, "y"})) << "U+" << std::hex << uint32_t(c);
    }
  }
  for (char32_t c : {0x1Cu, 0x1Du, 0x1Eu, 0x1Fu, 0x180Eu, 0x200Bu, 0x2060u, 0xFEFFu}) {
    const std::string w = utf8(c), ww = w + w, text = "x" + ww + "y";
    EXPECT_EQ(gpt2_pretokenize(text), (std::vector<std::string_view>{"x", ww, "y"}))
        << "U+" << std::hex << uint32_t(c);
  }
}

TEST(Gpt2Tokenizer, EndOfTextIsNeverParsedFromText) {
  const Gpt2Tokenizer& t = gpt2();
  EXPECT_EQ(t.name(), "gpt2");
  EXPECT_EQ(t.vocab_size(), 50257);
  const std::vector<int32_t> ids = t.encode("a<|endoftext|>b <|endoftext|>");
  for (int32_t id : ids) EXPECT_NE(id, Gpt2Tokenizer::kEndOfText);
  EXPECT_EQ(t.decode({Gpt2Tokenizer::kEndOfText}), "<|endoftext|>");
  EXPECT_EQ(t.token_bytes(50256), "<|endoftext|>");
}

// ---------------------------------------------------------------------------------------------------------
// The tables (DATA.md §1.2), checked here independently of the loader.

// The byte map, written from its description: printable bytes stand for themselves, the other 68 take
// U+0100.. in byte order; ids 0..255 list printable bytes first.
std::map<std::string, char> inverse_byte_map(std::vector<unsigned char>* id_to_byte) {
  std::map<std::string, char> m;
  int extra = 0;
  std::vector<unsigned char> printable, other;
  for (int b = 0; b < 256; ++b) {
    const bool p = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    (p ? printable : other).push_back(static_cast<unsigned char>(b));
    m[utf8(p ? static_cast<char32_t>(b) : static_cast<char32_t>(0x100 + extra++))] = static_cast<char>(b);
  }
  *id_to_byte = printable;
  id_to_byte->insert(id_to_byte->end(), other.begin(), other.end());
  return m;
}

std::string unmap(const std::map<std::string, char>& inverse, const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t len = (static_cast<unsigned char>(s[i]) < 0x80) ? 1 : 2;
    out.push_back(inverse.at(s.substr(i, len)));
    i += len;
  }
  return out;
}

std::string md5_of(const std::string& path) {
  FILE* p = popen(("md5sum '" + path + "' 2>/dev/null").c_str(), "r");
  if (p == nullptr) return "";
  char buf[64] = {0};
  const size_t n = std::fread(buf, 1, 32, p);
  pclose(p);
  return std::string(buf, n);
}

TEST(Gpt2Tokenizer, TablesAreTheVendoredFiles) {
  EXPECT_EQ(fs::file_size(kTablesDir + "/encoder.json"), 1042301u);
  EXPECT_EQ(fs::file_size(kTablesDir + "/vocab.bpe"), 456318u);
  const std::string md5_encoder = md5_of(kTablesDir + "/encoder.json");
  if (!md5_encoder.empty()) {
    EXPECT_EQ(md5_encoder, "dffec25a898b1f5e569bec4dffd7e5c0");
    EXPECT_EQ(md5_of(kTablesDir + "/vocab.bpe"), "75a37753dd7a28a2c5df80c28bf06e4e");
  }
  EXPECT_TRUE(fs::exists(kTablesDir + "/LICENSE"));
  EXPECT_TRUE(fs::exists(kTablesDir + "/LICENSE-openai-gpt2"));
}

TEST(Gpt2Tokenizer, TokensFollowFromTheByteMapAndTheMerges) {
  const Gpt2Tokenizer& t = gpt2();
  std::vector<unsigned char> id_to_byte;
  const std::map<std::string, char> inverse = inverse_byte_map(&id_to_byte);
  for (int id = 0; id < 256; ++id)
    EXPECT_EQ(t.token_bytes(id), std::string(1, static_cast<char>(id_to_byte[id])));
  EXPECT_EQ(t.token_bytes(0), "!");
  EXPECT_EQ(t.token_bytes(198), "\n");
  EXPECT_EQ(t.token_bytes(220), " ");
  std::istringstream merges(read_bytes(kTablesDir + "/vocab.bpe"));
  std::string line;
  std::getline(merges, line);
  EXPECT_EQ(line, "#version: 0.2");
  int r = 0;
  while (std::getline(merges, line)) {
    const size_t space = line.find(' ');
    ASSERT_NE(space, std::string::npos) << line;
    const std::string made = unmap(inverse, line.substr(0, space)) + unmap(inverse, line.substr(space + 1));
    ASSERT_EQ(t.token_bytes(256 + r), made) << "merge " << r;
    ++r;
  }
  EXPECT_EQ(r, 50000);
}

TEST(Gpt2Tokenizer, BrokenOrMissingTablesNameTheFile) {
  const fs::path dir = fs::temp_directory_path() / ("dape_gpt2_tables_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto message = [&] {
    try {
      Gpt2Tokenizer t(dir.string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string encoder = read_bytes(kTablesDir + "/encoder.json");
  const std::string merges = read_bytes(kTablesDir + "/vocab.bpe");
  write_bytes((dir / "vocab.bpe").string(), merges);
  EXPECT_NE(message().find((dir / "encoder.json").string() + "': no such file"), std::string::npos)
      << message();

  std::string swapped = encoder;  // ids 0 and 1 exchanged: the byte map order is broken
  swapped.replace(swapped.find("\"!\": 0"), 6, "\"!\": 1");
  swapped.replace(swapped.find("\"\\\"\": 1"), 7, "\"\\\"\": 0");
  write_bytes((dir / "encoder.json").string(), swapped);
  EXPECT_NE(message().find((dir / "encoder.json").string()), std::string::npos) << message();

  write_bytes((dir / "encoder.json").string(), encoder.substr(0, encoder.size() / 2));
  EXPECT_NE(message().find("not valid JSON"), std::string::npos) << message();

  write_bytes((dir / "encoder.json").string(), encoder);
  write_bytes((dir / "vocab.bpe").string(), merges.substr(0, merges.size() - 30));
  EXPECT_NE(message().find((dir / "vocab.bpe").string()), std::string::npos) << message();

  std::string reordered = merges;  // the first two merges exchanged: ids no longer follow the merges
  const size_t a = reordered.find('\n') + 1, b = reordered.find('\n', a) + 1, c = reordered.find('\n', b) + 1;
  reordered =
      reordered.substr(0, a) + reordered.substr(b, c - b) + reordered.substr(a, b - a) + reordered.substr(c);
  write_bytes((dir / "vocab.bpe").string(), reordered);
  EXPECT_NE(message().find("merge line 2"), std::string::npos) << message();

  write_bytes((dir / "vocab.bpe").string(), merges);
  EXPECT_EQ(message(), "");
  fs::remove_all(dir);
}

TEST(Gpt2Tokenizer, FactoryAndEnvironmentOverride) {
  EXPECT_EQ(make_tokenizer("gpt2")->name(), "gpt2");
  ASSERT_EQ(setenv("DAPE_GPT2_DIR", "/nonexistent/gpt2", 1), 0);
  EXPECT_EQ(Gpt2Tokenizer::default_dir(), "/nonexistent/gpt2");
  try {
    make_tokenizer("gpt2");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/gpt2/encoder.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("DAPE_GPT2_DIR"), std::string::npos) << e.what();
  }
  unsetenv("DAPE_GPT2_DIR");
  EXPECT_EQ(Gpt2Tokenizer::default_dir(), kTablesDir);
  try {
    gpt2().decode({5, 50257});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("50257 at position 1"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Invalid UTF-8 (WHATWG replacement, as TextDecoder), round trips, long pieces.

TEST(Gpt2Tokenizer, ReplacesInvalidUtf8AsTextDecoder) {
  const std::string R = "\xEF\xBF\xBD";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"ok \xC3\xA9", "ok \xC3\xA9"},
      {"\xFF", R},
      {"a\x80"
       "b",
       "a" + R + "b"},
      {"\xC0\x80", R + R},                  // overlong lead bytes are invalid alone
      {"\xE0\x80\x80", R + R + R},          // E0 needs A0..BF next
      {"\xED\xA0\x80", R + R + R},          // surrogates
      {"\xF4\x90\x80\x80", R + R + R + R},  // above U+10FFFF
      {"\xF5\x80", R + R},
      {"\xE2\x82"
       "x",
       R + "x"},            // truncated sequence: one U+FFFD
      {"\xF0\x9F\x98", R},  // truncated at the end
      {"\xF0\x9F\x98\xC3\xA9", R + "\xC3\xA9"},
      {"\xE2\x82\xAC\xE2\x82\xAC", "\xE2\x82\xAC\xE2\x82\xAC"},
  };
  for (const auto& [in, want] : cases) {
    EXPECT_EQ(replace_invalid_utf8(in), want) << ids_text(gpt2().encode(in));
    EXPECT_EQ(first_invalid_utf8(in) == std::string::npos, in == want);
    EXPECT_EQ(gpt2().encode(in), gpt2().encode(want));
    EXPECT_EQ(gpt2().decode(gpt2().encode(in)), want);
  }
  EXPECT_EQ(first_invalid_utf8("abcdefghijklmnop\xC3"), 16u);
}

TEST(Gpt2Tokenizer, RoundTripsRandomValidUtf8) {
  Rng rng(20240611);
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x00, 0x7F},        {0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF},
      {0x10000, 0x10FFFF}, {0x20, 0x7E},  {0x20, 0x7E}};
  for (int n = 0; n < 3000; ++n) {
    std::string s;
    const int len = static_cast<int>(rng.range(0, 60));
    for (int i = 0; i < len; ++i) {
      const auto& [lo, hi] = rng.pick(ranges);
      s += utf8(static_cast<char32_t>(rng.range(lo, hi)));
    }
    ASSERT_EQ(first_invalid_utf8(s), std::string::npos);
    const std::vector<int32_t> ids = gpt2().encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < Gpt2Tokenizer::kEndOfText);
    ASSERT_EQ(gpt2().decode(ids), s);
  }
}

// The reference BPE, written plainly: merge every occurrence of the lowest-rank pair, left to right.
std::vector<int32_t> plain_bpe(std::string_view piece, const std::map<std::string, int>& rank,
                               const std::map<std::string, int32_t>& id_of) {
  std::vector<std::string> word;
  for (char c : piece) word.emplace_back(1, c);
  while (word.size() > 1) {
    int best = INT32_MAX;
    std::string first, second;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = rank.find(word[i] + '\x01' + word[i + 1]);
      if (it != rank.end() && it->second < best) {
        best = it->second;
        first = word[i];
        second = word[i + 1];
      }
    }
    if (best == INT32_MAX) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i++]);
      }
    }
    word = std::move(merged);
  }
  std::vector<int32_t> ids;
  for (const std::string& w : word) ids.push_back(id_of.at(w));
  return ids;
}

TEST(Gpt2Tokenizer, LongPiecesMatchThePlainAlgorithm) {
  const Gpt2Tokenizer& t = gpt2();
  std::map<std::string, int> rank;
  std::map<std::string, int32_t> id_of;
  for (int32_t id = 0; id < Gpt2Tokenizer::kEndOfText; ++id) id_of[std::string(t.token_bytes(id))] = id;
  {
    std::vector<unsigned char> id_to_byte;
    const std::map<std::string, char> inverse = inverse_byte_map(&id_to_byte);
    std::istringstream merges(read_bytes(kTablesDir + "/vocab.bpe"));
    std::string line;
    std::getline(merges, line);
    for (int r = 0; std::getline(merges, line); ++r) {
      const size_t space = line.find(' ');
      rank[unmap(inverse, line.substr(0, space)) + '\x01' + unmap(inverse, line.substr(space + 1))] = r;
    }
  }
  Rng rng(7);
  const std::vector<std::string> alphabets = {
      "0123456789", "aeiou", "abcdefghijklmnopqrstuvwxyz", "=-%*", "=", "ab", "\xC3\xA9\xC3\xA8"};
  for (int n = 0; n < 40; ++n) {
    const std::string& alphabet = alphabets[n % alphabets.size()];
    std::string piece;
    const int64_t len = rng.range(200, 1500);
    while (static_cast<int64_t>(piece.size()) < len) {
      if (alphabet[0] == '\xC3') {
        piece += alphabet.substr(2 * static_cast<size_t>(rng.range(0, 1)), 2);
      } else {
        piece += alphabet[static_cast<size_t>(rng.range(0, static_cast<int64_t>(alphabet.size()) - 1))];
      }
    }
    ASSERT_EQ(gpt2_pretokenize(piece).size(), 1u);
    EXPECT_EQ(t.encode(piece), plain_bpe(piece, rank, id_of)) << "piece of " << piece.size() << " bytes";
  }
  // Short pieces too: every word of the bundled corpus.
  const std::string corpus = read_bytes(std::string(DAPE_SOURCE_DIR) + "/data/corpus/cfi-en.val.txt");
  for (std::string_view piece : gpt2_pretokenize(corpus)) {
    ASSERT_EQ(t.encode(std::string(piece)), plain_bpe(piece, rank, id_of)) << "'" << piece << "'";
  }
}

TEST(Gpt2Tokenizer, LongWhitespaceAndDigitRuns) {
  const Gpt2Tokenizer& t = gpt2();
  const std::string spaces(100000, ' ');
  EXPECT_EQ(t.encode(spaces), std::vector<int32_t>(100000, 220));
  std::vector<int32_t> want(99999, 220);
  want.push_back(t.encode(" x")[0]);
  EXPECT_EQ(t.encode(spaces + "x"), want);
  EXPECT_EQ(t.encode(std::string(10000, '\n')), std::vector<int32_t>(5000, 628));
  want.assign(5000, 628);
  want.push_back(198);
  want.push_back(87);
  EXPECT_EQ(t.encode(std::string(10001, '\n') + "x"), want);
  std::string digits;
  for (int i = 0; i < 200000; ++i) digits.push_back(static_cast<char>('0' + (i * 7 + i / 13) % 10));
  const std::vector<int32_t> ids = t.encode(digits);
  EXPECT_EQ(t.decode(ids), digits);
  EXPECT_LT(ids.size(), digits.size() / 2);
}

TEST(Gpt2Tokenizer, BatchEqualsSerial) {
  const std::string corpus = read_bytes(std::string(DAPE_SOURCE_DIR) + "/data/corpus/cfi-en.val.txt");
  std::vector<std::string> docs;
  for (size_t i = 0; i < corpus.size(); i += 997) docs.push_back(corpus.substr(i, 1500));
  docs.push_back("");
  const std::vector<std::vector<int32_t>> batch = gpt2().encode_batch(docs, 4);
  ASSERT_EQ(batch.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(batch[i], gpt2().encode(docs[i])) << i;
  EXPECT_EQ(gpt2().encode_batch(docs, 1), batch);
}

// The whole bundled book (train then val, one document) is 110,243 ids; js-tiktoken and gpt-tokenizer give
// the same count. (DATA.md §1.5's 120,654 is for another extraction of the book, with chapters joined by
// blank lines.)
TEST(Gpt2Tokenizer, BundledCorpusTokenCount) {
  const std::string dir = std::string(DAPE_SOURCE_DIR) + "/data/corpus/";
  const std::string book = read_bytes(dir + "cfi-en.train.txt") + read_bytes(dir + "cfi-en.val.txt");
  ASSERT_EQ(book.size(), 531725u);
  const std::vector<int32_t> ids = gpt2().encode(book);
  EXPECT_EQ(ids.size(), 110243u);
  EXPECT_EQ(gpt2().decode(ids), book);
}

// ---------------------------------------------------------------------------------------------------------
// Differential test against the JS encoders (DATA.md §1.5).

// Code points the generator uses and random bytes may keep: all assigned before Unicode 15.0 (our ICU) and
// unchanged since, so Node's newer Unicode tables classify them the same. U+0085 and U+FEFF are left out: the
// JS encoders treat them differently from the Python reference (§1.4).
const std::vector<std::pair<char32_t, char32_t>>& stable_ranges() {
  static const std::vector<std::pair<char32_t, char32_t>> r = {
      {0x80, 0x84},       {0x86, 0x36F},      {0x391, 0x3A1},     {0x3A3, 0x3C9},     {0x400, 0x4FF},
      {0x5D0, 0x5EA},     {0x60C, 0x60C},     {0x621, 0x64A},     {0x64B, 0x652},     {0x660, 0x669},
      {0x905, 0x939},     {0x93E, 0x94C},     {0x964, 0x96F},     {0xE01, 0xE2E},     {0xE30, 0xE3A},
      {0xE50, 0xE59},     {0x1680, 0x1680},   {0x2000, 0x2027},   {0x2028, 0x205F},   {0x2070, 0x2071},
      {0x2074, 0x208E},   {0x20A0, 0x20B5},   {0x2150, 0x2188},   {0x2190, 0x22FF},   {0x2460, 0x24FF},
      {0x2500, 0x257F},   {0x3000, 0x303F},   {0x3041, 0x3096},   {0x30A1, 0x30FA},   {0x4E00, 0x9FA5},
      {0xAC00, 0xD7A3},   {0xFE00, 0xFE0F},   {0xFF01, 0xFF5E},   {0xFFFD, 0xFFFD},   {0x1D400, 0x1D454},
      {0x1D7CE, 0x1D7FF}, {0x1F300, 0x1F5FF}, {0x1F600, 0x1F64F}, {0x20000, 0x2A6D6},
  };
  return r;
}

bool is_stable(char32_t c) {
  if (c < 0x80) return true;
  for (const auto& [lo, hi] : stable_ranges())
    if (c >= lo && c <= hi) return true;
  return false;
}

// Turns every valid multi-byte sequence outside stable_ranges() into invalid bytes by overwriting its lead
// byte with '?': the rest of the sequence then reads as U+FFFD on both sides.
void keep_stable_code_points(std::string& bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t rest = bytes.size() - i;
    size_t len = 0;
    for (size_t l = 2; l <= 4 && l <= rest; ++l) {
      if (first_invalid_utf8(std::string_view(bytes).substr(i, l)) == std::string::npos) {
        len = l;
        break;
      }
    }
    if (len == 0) {
      ++i;
      continue;
    }
    char32_t c = 0;
    if (len == 2) c = ((s[i] & 0x1F) << 6) | (s[i + 1] & 0x3F);
    if (len == 3) c = ((s[i] & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
    if (len == 4)
      c = ((s[i] & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
    if (!is_stable(c)) bytes[i] = '?';
    i += is_stable(c) ? len : 1;
  }
}

// A deterministic mixed corpus of about `target` bytes in documents: the bundled book, then generated prose,
// LaTeX, source code, non-Latin scripts with marks and digits, emoji, whitespace runs, long runs, and random
// or corrupted bytes.
std::vector<std::string> mixed_corpus(size_t target) {
  const std::string dir = std::string(DAPE_SOURCE_DIR) + "/data/corpus/";
  std::vector<std::string> docs;
  const std::string book = read_bytes(dir + "cfi-en.train.txt") + read_bytes(dir + "cfi-en.val.txt");
  for (size_t i = 0; i < book.size(); i += 60000)
    docs.push_back(book.substr(i, 60000));  // cuts may split words
  std::vector<std::string> words;
  {
    std::istringstream in(book);
    std::string w;
    while (in >> w) words.push_back(w);
  }
  const std::vector<std::string> contractions = {"don't",
                                                 "DON'T",
                                                 "we'll",
                                                 "I'm",
                                                 "I'M",
                                                 "you're",
                                                 "they've",
                                                 "she'd",
                                                 "it's",
                                                 "It'S",
                                                 "rock\u2019n\u2019roll",
                                                 "it\u2019s",
                                                 "'tis",
                                                 "o'clock",
                                                 "''",
                                                 "'",
                                                 "x.'s",
                                                 "y'all",
                                                 "'ll've",
                                                 "<|endoftext|>",
                                                 "<|endoftext|"};
  const std::vector<std::string> latex = {"\\begin{equation}",
                                          "\\end{equation}",
                                          "\\frac{a}{b}",
                                          "\\alpha_{i}^{2}",
                                          "$x^2 + y^2 = z^2$",
                                          "\\section{Intro}",
                                          "\\cite{knuth84}",
                                          "\\\\",
                                          "&",
                                          "\\mathbb{R}^{n \\times m}",
                                          "\\left(",
                                          "\\right)",
                                          "\\label{eq:1}",
                                          "~",
                                          "\\textbf{bold}",
                                          "{}",
                                          "\\item",
                                          "% comment",
                                          "\\usepackage[utf8]{inputenc}"};
  const std::vector<std::string> code = {"int main(int argc, char** argv) {",
                                         "return 0;",
                                         "}",
                                         "std::vector<int32_t> ids;",
                                         "for (size_t i = 0; i < n; ++i)",
                                         "x->next = nullptr;",
                                         "a != b && c <= d",
                                         "def forward(self, x):",
                                         "    return x @ w.T",
                                         "#include <cstdio>",
                                         "0xDEADBEEF",
                                         "// TODO(someone): fix",
                                         "if __name__ == \"__main__\":",
                                         "s += \"\\n\";",
                                         "i <<= 3;",
                                         "lambda x: x**2",
                                         "print(f\"{value:>10.3f}\")",
                                         "/* block */",
                                         "fn main() -> i32 {"};
  const std::vector<std::string> spaces = {" ",      "  ",     "\t",     "\n",     "\n\n",   "\r\n",
                                           " \n",    "\n ",    "\u00a0", "\u3000", "\u2003", "\u2009",
                                           "\u202f", "\u205f", "\u1680", "\u2028", "\u2029", "\x0b",
                                           "\x0c",   "\r",     "\x1c",   "\x1f",   "\u200b", "\u00ad"};
  const std::vector<std::pair<char32_t, char32_t>> scripts = {
      {0x3B1, 0x3C9},   {0x410, 0x44F},   {0x5D0, 0x5EA},   {0x621, 0x64A},
      {0x905, 0x939},   {0xE01, 0xE2E},   {0x3041, 0x3096}, {0x30A1, 0x30FA},
      {0x4E00, 0x9FA5}, {0xAC00, 0xD7A3}, {0xC0, 0x17F},    {0x1D400, 0x1D454}};
  const std::vector<std::pair<char32_t, char32_t>> marks = {
      {0x300, 0x36F}, {0x64B, 0x652}, {0x93E, 0x94C}, {0xFE00, 0xFE0F}};
  const std::vector<std::pair<char32_t, char32_t>> numbers = {
      {0x30, 0x39},     {0x660, 0x669},     {0x966, 0x96F},   {0xE50, 0xE59},
      {0xFF10, 0xFF19}, {0xB2, 0xB3},       {0xBC, 0xBE},     {0x2160, 0x2188},
      {0x2460, 0x249B}, {0x1D7CE, 0x1D7FF}, {0x2070, 0x2070}, {0x2074, 0x2079}};
  const std::vector<std::pair<char32_t, char32_t>> symbols = {
      {0x1F300, 0x1F5FF}, {0x1F600, 0x1F64F}, {0x2190, 0x22FF}, {0x2500, 0x257F}, {0x3001, 0x3003},
      {0xFF01, 0xFF0F},   {0x20A0, 0x20B5},   {0x2010, 0x2027}, {0xA1, 0xBF}};
  Rng rng(0x6770742d32ull);
  auto from = [&](const std::vector<std::pair<char32_t, char32_t>>& r) {
    const auto& [lo, hi] = rng.pick(r);
    return utf8(static_cast<char32_t>(rng.range(lo, hi)));
  };
  auto number = [&] {
    std::string s;
    const int64_t len = rng.chance(5) ? rng.range(20, 400) : rng.range(1, 8);
    for (int64_t i = 0; i < len; ++i) s.push_back(static_cast<char>('0' + rng.range(0, 9)));
    if (rng.chance(30)) s += "." + std::to_string(rng.range(0, 99999));
    return s;
  };
  auto word = [&]() -> std::string {
    std::string w = rng.pick(words);
    const int64_t k = rng.range(0, 9);
    if (k == 0) {
      for (char& c : w) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    } else if (k == 1) {
      w = rng.pick(contractions);
    } else if (k == 2) {
      w = number();
    }
    return w;
  };
  size_t total = 0;
  for (const std::string& d : docs) total += d.size();
  for (int kind = 0; total < target; kind = (kind + 1) % 8) {
    std::string doc;
    const size_t size = static_cast<size_t>(rng.range(500, 30000));
    while (doc.size() < size) {
      switch (kind) {
        case 0:  // prose
          doc += word();
          doc += rng.chance(85) ? " " : rng.pick(spaces);
          if (rng.chance(8))
            doc += rng.pick(std::vector<std::string>{". ", ", ", "; ", "! ", "? ", "\n\n", " (", ") "});
          break;
        case 1:  // LaTeX
          doc += rng.chance(50) ? rng.pick(latex) : word();
          doc += rng.chance(80) ? " " : "\n";
          if (rng.chance(2))
            doc += std::string(static_cast<size_t>(rng.range(3, 120)), "%-=*"[rng.range(0, 3)]) + "\n";
          if (rng.chance(2))
            doc += "\\begin{verbatim}\n" + std::string(static_cast<size_t>(rng.range(1, 80)), ' ') + "x\n";
          break;
        case 2:  // source code
          doc += std::string(static_cast<size_t>(4 * rng.range(0, 4)), ' ');
          if (rng.chance(20)) doc += std::string(static_cast<size_t>(rng.range(1, 3)), '\t');
          doc += rng.pick(code);
          doc += rng.chance(10) ? "   \n" : "\n";
          if (rng.chance(5)) doc += "\n";
          break;
        case 3:  // non-Latin scripts, marks, digits
          for (int64_t i = rng.range(1, 8); i > 0; --i) {
            doc += from(scripts);
            if (rng.chance(10)) doc += from(marks);
          }
          if (rng.chance(15)) doc += from(numbers) + from(numbers);
          if (rng.chance(10))
            doc += rng.pick(std::vector<std::string>{"\u3002", "\u3001", "\u060c", "\u0964", ",", "."});
          doc += rng.chance(80) ? " " : rng.pick(spaces);
          break;
        case 4:  // emoji and symbols
          doc += word() + " ";
          for (int64_t i = rng.range(0, 4); i > 0; --i) {
            doc += from(symbols);
            if (rng.chance(20)) doc += utf8(static_cast<char32_t>(rng.range(0x1F3FB, 0x1F3FF)));
            if (rng.chance(10)) doc += "\u200d";
            if (rng.chance(10)) doc += "\ufe0f";
          }
          doc += rng.chance(70) ? " " : rng.pick(spaces);
          break;
        case 5:  // whitespace runs
          for (int64_t i = rng.range(1, 6); i > 0; --i) doc += rng.pick(spaces);
          // Runs that merge stay short here (newlines; '%', '-', '=' above): js-tiktoken's merge loop is
          // quadratic in a piece's length (5,000 newlines take it seconds). LongPiecesMatchThePlainAlgorithm
          // covers long pieces.
          if (rng.chance(3)) doc += std::string(static_cast<size_t>(rng.range(100, 5000)), ' ');
          if (rng.chance(2)) doc += std::string(static_cast<size_t>(rng.range(20, 300)), '\n');
          if (rng.chance(3)) doc += std::string(static_cast<size_t>(rng.range(2, 300)), '\t');
          doc += rng.chance(50) ? word() : from(numbers);
          break;
        case 6:  // random bytes
          for (int64_t i = rng.range(1, 64); i > 0; --i) doc.push_back(static_cast<char>(rng.range(0, 255)));
          break;
        case 7: {  // corrupted UTF-8 text
          std::string part = from(scripts) + from(symbols) + word() + from(scripts) + " ";
          if (rng.chance(40)) {
            const size_t at = static_cast<size_t>(rng.range(0, static_cast<int64_t>(part.size()) - 1));
            const int64_t how = rng.range(0, 2);
            if (how == 0) part.erase(at, 1);
            if (how == 1) part[at] = static_cast<char>(rng.range(0x80, 0xFF));
            if (how == 2) part.insert(at, 1, static_cast<char>(rng.range(0x80, 0xFF)));
          }
          doc += part;
          break;
        }
      }
    }
    if (kind == 5 && rng.chance(50)) doc += std::string(static_cast<size_t>(rng.range(1, 40)), ' ');
    keep_stable_code_points(doc);
    total += doc.size();
    docs.push_back(std::move(doc));
  }
  return docs;
}

// Parses the node script's {"name": [[ids], ...], ...} into one list of documents per name.
std::map<std::string, std::vector<std::vector<int32_t>>> parse_js_output(const std::string& s) {
  std::map<std::string, std::vector<std::vector<int32_t>>> out;
  size_t i = 0;
  while ((i = s.find('"', i)) != std::string::npos) {
    const size_t end = s.find('"', i + 1);
    const std::string name = s.substr(i + 1, end - i - 1);
    std::vector<std::vector<int32_t>>& docs = out[name];
    i = s.find('[', end) + 1;  // the list of documents
    while (s[i] != ']') {
      if (s[i] == ',') ++i;
      ++i;  // '[' of one document
      docs.emplace_back();
      while (s[i] != ']') {
        if (s[i] == ',') ++i;
        char* next = nullptr;
        docs.back().push_back(static_cast<int32_t>(std::strtol(s.c_str() + i, &next, 10)));
        i = static_cast<size_t>(next - s.c_str());
      }
      ++i;
    }
    i += 1;
  }
  return out;
}

TEST(Gpt2Tokenizer, IdenticalToJsEncodersOnMixedText) {
  if (!fs::exists(kJsDir + "/node_modules/js-tiktoken") ||
      !fs::exists(kJsDir + "/node_modules/gpt-tokenizer") ||
      std::system("node --version >/dev/null 2>&1") != 0) {
    GTEST_SKIP()
        << "node or the JS encoders are missing; run tests/data/js/setup.sh (needs npm) to enable the "
           "differential test against js-tiktoken and gpt-tokenizer";
  }
  const std::vector<std::string> docs = mixed_corpus(5u << 20);
  // DAPE_GPT2_DIFF_DIR keeps the corpus and the JS output there, for debugging.
  const char* keep = std::getenv("DAPE_GPT2_DIFF_DIR");
  const fs::path dir =
      keep ? fs::path(keep) : fs::temp_directory_path() / ("dape_gpt2_diff_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::string all, index;
  for (const std::string& d : docs) {
    all += d;
    index += std::to_string(d.size()) + "\n";
  }
  ASSERT_GE(all.size(), 5u << 20);
  ASSERT_EQ(all.find("\xC2\x85"), std::string::npos);
  ASSERT_EQ(all.find("\xEF\xBB\xBF"), std::string::npos);
  write_bytes((dir / "corpus.bin").string(), all);
  write_bytes((dir / "corpus.idx").string(), index);
  const std::string command = "node '" + kJsDir + "/encode.mjs' '" + (dir / "corpus.bin").string() + "' '" +
                              (dir / "corpus.idx").string() + "' > '" + (dir / "js.json").string() + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const auto js = parse_js_output(read_bytes((dir / "js.json").string()));
  if (!keep) fs::remove_all(dir);

  const std::vector<std::vector<int32_t>> ours = gpt2().encode_batch(docs, 2);
  size_t tokens = 0, invalid_docs = 0;
  for (const auto& name : {"js-tiktoken", "gpt-tokenizer"}) {
    ASSERT_EQ(js.count(name), 1u) << name;
    const std::vector<std::vector<int32_t>>& theirs = js.at(name);
    ASSERT_EQ(theirs.size(), docs.size()) << name;
    size_t same = 0;
    for (size_t d = 0; d < docs.size(); ++d) {
      if (ours[d] == theirs[d]) {
        ++same;
        continue;
      }
      size_t k = 0;
      while (k < ours[d].size() && k < theirs[d].size() && ours[d][k] == theirs[d][k]) ++k;
      const std::vector<int32_t> around_ours(ours[d].begin() + k,
                                             ours[d].begin() + std::min(ours[d].size(), k + 8));
      const std::vector<int32_t> around_theirs(theirs[d].begin() + k,
                                               theirs[d].begin() + std::min(theirs[d].size(), k + 8));
      ADD_FAILURE() << name << ": document " << d << " differs at token " << k << ": ours "
                    << ids_text(around_ours) << ", theirs " << ids_text(around_theirs) << " ('"
                    << gpt2().decode(around_ours) << "' vs '" << gpt2().decode(around_theirs) << "')";
    }
    EXPECT_EQ(same, docs.size()) << name;
  }
  for (size_t d = 0; d < docs.size(); ++d) {
    tokens += ours[d].size();
    if (first_invalid_utf8(docs[d]) != std::string::npos) ++invalid_docs;
  }
  std::printf(
      "[ differential ] %zu documents (%zu with invalid UTF-8), %zu bytes, %zu tokens compared with "
      "js-tiktoken 1.0.21 and gpt-tokenizer 4.0.0\n",
      docs.size(), invalid_docs, all.size(), tokens);
}

}  // namespace
}  // namespace dape::data
