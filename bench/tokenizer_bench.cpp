// GPT-2 tokenizer benchmark: encode speed in MB/s of dape's Gpt2Tokenizer on one thread and on N threads,
// beside js-tiktoken and gpt-tokenizer (tests/data/js/encode.mjs --time) on the same text on the same
// machine.
//
//   build/bench/tokenizer_bench [--file PATH] [--threads N] [--reps R] [--skip-js]
//
// The text defaults to the bundled book (data/corpus/cfi-en.train.txt + cfi-en.val.txt, 0.53 MB of English
// prose). One thread: "cold" is one encode with a new tokenizer (empty piece cache), "warm" the best of R
// further encodes; the JS numbers are the best of R after one warm-up pass. N threads: the text repeated 8
// times and cut into ~16 KB documents, encoded with encode_batch; MB/s in total and per thread.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/gpt2_tokenizer.h"
#include "kernels/error.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw dape::Error("tokenizer_bench: cannot read '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs command and returns its standard output, or "" when it fails.
std::string run_command(const std::string& command) {
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  return pclose(p) == 0 ? out : "";
}

}  // namespace

int main(int argc, char** argv) {
  const std::string source_dir = DAPE_SOURCE_DIR;
  std::string file;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int reps = 3;
  bool skip_js = false;
  CLI::App app{"GPT-2 tokenizer encode speed: dape vs js-tiktoken and gpt-tokenizer"};
  app.add_option("--file", file, "text to encode (default: the bundled book, data/corpus/cfi-en.*.txt)");
  app.add_option("--threads", threads, "threads for the batch measurement (default: all hardware threads)");
  app.add_option("--reps", reps, "timed repetitions; the best counts");
  app.add_flag("--skip-js", skip_js, "do not run the JS encoders");
  CLI11_PARSE(app, argc, argv);

  try {
    std::string text;
    std::string text_path = file;
    if (file.empty()) {
      text = read_bytes(source_dir + "/data/corpus/cfi-en.train.txt") +
             read_bytes(source_dir + "/data/corpus/cfi-en.val.txt");
      text_path = "/tmp/dape_tokenizer_bench_" + std::to_string(getpid()) + ".txt";
      std::ofstream(text_path, std::ios::binary) << text;
    } else {
      text = read_bytes(file);
    }
    const double mb = static_cast<double>(text.size()) / 1e6;
    const std::string dir = dape::data::Gpt2Tokenizer::default_dir();
    std::printf("text: %s (%.3f MB)\n", file.empty() ? "bundled book cfi-en (train + val)" : file.c_str(),
                mb);

    // One thread.
    double load_s = 1e30, cold_s = 1e30, warm_s = 1e30;
    size_t tokens = 0;
    std::unique_ptr<dape::data::Gpt2Tokenizer> tokenizer;
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      tokenizer = std::make_unique<dape::data::Gpt2Tokenizer>(dir);
      load_s = std::min(load_s, seconds_since(t0));
      t0 = Clock::now();
      tokens = tokenizer->encode(text).size();
      cold_s = std::min(cold_s, seconds_since(t0));
    }
    for (int r = 0; r < reps; ++r) {
      const auto t0 = Clock::now();
      tokens = tokenizer->encode(text).size();
      warm_s = std::min(warm_s, seconds_since(t0));
    }
    std::printf("tables load: %.0f ms\n", load_s * 1e3);
    std::printf("%-28s %10.2f MB/s   (%zu tokens)\n", "dape, 1 thread, cold cache", mb / cold_s, tokens);
    std::printf("%-28s %10.2f MB/s\n", "dape, 1 thread, warm cache", mb / warm_s);

    // JS reference encoders, one thread each.
    if (skip_js) {
      std::printf("js encoders: skipped (--skip-js)\n");
    } else {
      const std::string js_dir = source_dir + "/tests/data/js";
      const std::string out = run_command("node '" + js_dir + "/encode.mjs' --time '" + text_path + "' " +
                                          std::to_string(reps) + " 2>/dev/null");
      if (out.empty()) {
        std::printf("js encoders: not run (needs node and tests/data/js/setup.sh)\n");
      } else {
        const nlohmann::json js = nlohmann::json::parse(out);
        const double tiktoken = js.at("js-tiktoken").get<double>();
        const double gpt_tokenizer = js.at("gpt-tokenizer").get<double>();
        std::printf("%-28s %10.2f MB/s   dape cold / this = %.2fx\n", "js-tiktoken 1.0.21", tiktoken,
                    mb / cold_s / tiktoken);
        std::printf("%-28s %10.2f MB/s   dape warm / this = %.2fx\n", "gpt-tokenizer 4.0.0", gpt_tokenizer,
                    mb / warm_s / gpt_tokenizer);
      }
    }
    if (file.empty()) std::remove(text_path.c_str());

    // N threads over many documents.
    std::vector<std::string> docs;
    std::string big;
    for (int i = 0; i < 8; ++i) big += text;
    for (size_t i = 0; i < big.size();) {
      size_t end = std::min(big.size(), i + 16384);
      const size_t para = big.find("\n\n", end);  // cut at a paragraph boundary
      end = para == std::string::npos ? big.size() : para + 2;
      docs.push_back(big.substr(i, end - i));
      i = end;
    }
    std::vector<int> counts;
    for (int n = 1; n < threads; n *= 2) counts.push_back(n);
    counts.push_back(threads);
    for (int n : counts) {
      double best = 1e30;
      for (int r = 0; r < reps; ++r) {
        const dape::data::Gpt2Tokenizer fresh(dir);
        const auto t0 = Clock::now();
        const auto ids = fresh.encode_batch(docs, n);
        best = std::min(best, seconds_since(t0));
      }
      const double total = static_cast<double>(big.size()) / 1e6 / best;
      std::printf("dape, %2d threads, %zu docs  %10.2f MB/s   (%.2f MB/s per thread)\n", n, docs.size(),
                  total, total / n);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
