// Helpers for the launcher tests: run the real `dape` binary in a scratch folder and read what it wrote.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace dape::launcher::testing {

namespace fs = std::filesystem;

inline const std::string kDape = DAPE_BINARY_DIR "/dape";
inline const std::string kTinyConfig = DAPE_SOURCE_DIR "/configs/tiny.yaml";
inline const std::string kTrainText = DAPE_SOURCE_DIR "/data/corpus/cfi-en.train.txt";
inline const std::string kValText = DAPE_SOURCE_DIR "/data/corpus/cfi-en.val.txt";

inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

struct DapeRun {
  int exit_code = -1;
  std::string out, err;
};

// A fresh, empty folder for the current test under the build tree, removed again if the test passes.
class ScratchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "." + info->name();
    for (char& c : name)
      if (c == '/') c = '_';
    dir_ = fs::path(DAPE_BINARY_DIR) / "tests" / "launcher-scratch" / name;
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "cwd");
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // The scratch folder; dape runs in dir()/cwd, which holds nothing but what dape creates.
  const fs::path& dir() const { return dir_; }
  fs::path cwd() const { return dir_ / "cwd"; }

  // Runs `dape ARGS` (ARGS already shell-quoted) in cwd(); stdout and stderr go to files beside it.
  DapeRun dape(const std::string& args) const {
    fs::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    std::string command = "cd " + quote(cwd().string()) + " && OMP_NUM_THREADS=" + std::to_string(threads) +
                          " " + launch_prefix + quote(kDape) + " " + args + " > " + quote(out.string()) +
                          " 2> " + quote(err.string());
    int status = std::system(command.c_str());
    DapeRun run;
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    run.out = read_text(out);
    run.err = read_text(err);
    return run;
  }

  // OpenMP threads of the runs. One by default: the models are tiny, and ctest runs two tests at once.
  int threads = 1;
  // Put before the dape binary, e.g. "mpirun -np 2 " (with its trailing space); empty: dape alone.
  std::string launch_prefix;

  // `dape train CONFIG --run-dir RUN --set ...` with the given overrides.
  DapeRun train(const std::string& config, const fs::path& run_dir,
                const std::vector<std::string>& sets) const {
    std::string args = "train " + quote(config) + " --run-dir " + quote(run_dir.string());
    for (const std::string& s : sets) args += " --set " + quote(s);
    return dape(args);
  }

 private:
  fs::path dir_;
};

// metrics.jsonl lines without the timing fields, which differ from run to run.
inline std::vector<std::string> metrics_without_timing(const fs::path& path) {
  static const std::regex timing(R"re(,"(tokens_per_s|elapsed_s)":[^,}]*)re");
  std::vector<std::string> lines;
  std::istringstream in(read_text(path));
  for (std::string line; std::getline(in, line);) lines.push_back(std::regex_replace(line, timing, ""));
  return lines;
}

}  // namespace dape::launcher::testing
