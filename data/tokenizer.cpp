// The byte tokenizer, the tokenizer factory and reading a text file into tokens.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/data.h"
#include "data/gpt2_tokenizer.h"
#include "kernels/error.h"

namespace dape::data {

std::vector<int32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] > 255) {
      throw Error("byte tokenizer: token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary [0, 256); the ids were not produced by this tokenizer");
    }
    text.push_back(static_cast<char>(static_cast<unsigned char>(ids[i])));
  }
  return text;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  if (name == "gpt2") return std::make_unique<Gpt2Tokenizer>(Gpt2Tokenizer::default_dir());
  throw ConfigError("data.tokenizer: unknown tokenizer '" + name + "'; expected one of: byte, gpt2");
}

std::vector<int32_t> tokenize_file(const std::string& path, const Tokenizer& tokenizer) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    throw Error("data: cannot read text file '" + path + "': no such file (working directory '" +
                std::filesystem::current_path(ec).string() +
                "'); check the data file path in the config, relative paths start at the working directory");
  }
  if (std::filesystem::is_directory(status)) {
    throw Error("data: cannot read text file '" + path + "': it is a directory; name a text file instead");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error("data: cannot read text file '" + path + "': " + std::strerror(errno) +
                "; check the file's permissions");
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw Error("data: error while reading text file '" + path + "': " + std::strerror(errno) +
                "; check the file and the disk it is on");
  }
  return tokenizer.encode(text.str());
}

}  // namespace dape::data
