// dape tokenize: encode a text to ids or decode ids to bytes with a data tokenizer (launcher/commands.h).
#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/data.h"
#include "kernels/error.h"
#include "launcher/commands.h"

namespace dape::launcher {
namespace {

std::string read_input(const std::string& input) {
  std::FILE* f = stdin;
  if (input != "-") {
    std::error_code ec;
    if (!std::filesystem::exists(input, ec))
      throw Error("tokenize: cannot read '" + input + "': no such file");
    if (std::filesystem::is_directory(input, ec))
      throw Error("tokenize: cannot read '" + input + "': it is a directory; name a file or - for stdin");
    f = std::fopen(input.c_str(), "rb");
    if (f == nullptr) throw Error("tokenize: cannot read '" + input + "': " + std::strerror(errno));
  }
  std::string bytes;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  if (f != stdin) std::fclose(f);
  if (failed) throw Error("tokenize: error while reading '" + input + "': " + std::strerror(errno));
  return bytes;
}

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

// Ids separated by whitespace; each a decimal integer in [0, vocab).
std::vector<int32_t> parse_ids(const std::string& text, int vocab, const std::string& source) {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4);
  const char* p = text.data();
  const char* end = p + text.size();
  while (true) {
    while (p < end && is_space(*p)) ++p;
    if (p == end) break;
    const char* word_end = p;
    while (word_end < end && !is_space(*word_end)) ++word_end;
    int64_t id = 0;
    const auto [stop, ec] = std::from_chars(p, word_end, id);
    const std::string word(p, word_end);
    const std::string where = "word " + std::to_string(ids.size() + 1) + " of " + source;
    if (ec != std::errc() || stop != word_end)
      throw Error("tokenize --decode: '" + word.substr(0, 40) + "' (" + where +
                  ") is not a token id; expected decimal ids separated by whitespace");
    if (id < 0 || id >= vocab)
      throw Error("tokenize --decode: token id " + word + " (" + where + ") is outside the vocabulary [0, " +
                  std::to_string(vocab) + ") of this tokenizer");
    ids.push_back(static_cast<int32_t>(id));
    p = word_end;
  }
  return ids;
}

}  // namespace

std::string tokenize_output(const TokenizeRequest& request, const std::string& input,
                            const std::string& source) {
  const std::unique_ptr<data::Tokenizer> tokenizer = data::make_tokenizer(request.tokenizer);
  if (request.decode) return tokenizer->decode(parse_ids(input, tokenizer->vocab_size(), source));
  const std::vector<int32_t> ids = tokenizer->encode(input);
  std::string out;
  out.reserve(ids.size() * 6 + 1);
  char buf[16];
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out.push_back(' ');
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, ids[i]);
    out.append(buf, end);
  }
  out.push_back('\n');
  return out;
}

void add_tokenize_command(CLI::App& app) {
  auto request = std::make_shared<TokenizeRequest>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "encode a text file to token ids (one line), or with --decode ids back to bytes");
  cmd->add_option("input", request->input, "input file, or - for standard input (default)");
  cmd->add_flag("--decode", request->decode, "read token ids separated by whitespace and write their bytes");
  cmd->add_option("--tokenizer", request->tokenizer, "gpt2 (GPT-2 BPE, docs/tokenizer.md) or byte")
      ->check(CLI::IsMember({"gpt2", "byte"}))
      ->capture_default_str();
  cmd->callback([request] {
    const std::string source = request->input == "-" ? "standard input" : "'" + request->input + "'";
    const std::string out = tokenize_output(*request, read_input(request->input), source);
    if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0)
      throw Error(std::string("tokenize: cannot write the output: ") + std::strerror(errno));
  });
}

}  // namespace dape::launcher
