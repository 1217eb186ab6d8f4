#include "launcher/files.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "kernels/error.h"

namespace dape::launcher {

void write_text_atomic(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(tmp + ": cannot create file");
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
            ::fsync(fileno(f)) == 0;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write file");
  }
}

}  // namespace dape::launcher

namespace dape::launcher {

void draw_progress_bar(double fraction, const std::string& text) {
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * std::clamp(fraction, 0.0, 1.0));
  std::string bar(size_t(filled), '#');
  bar.append(size_t(kWidth - filled), '.');
  std::fprintf(stderr, "\r[%s] %s\033[K", bar.c_str(), text.c_str());
  std::fflush(stderr);
}

void clear_progress_bar() {
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

}  // namespace dape::launcher
