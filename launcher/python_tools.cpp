#include "launcher/python_tools.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "kernels/error.h"

#ifndef DAPE_TOOLS_DIR
#define DAPE_TOOLS_DIR "tools"
#endif

namespace dape::launcher {
namespace {

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::string python_interpreter() {
  const char* env = std::getenv("DAPE_PYTHON");
  return env && *env ? env : "/usr/bin/python3";
}

std::string tools_dir() {
  const char* env = std::getenv("DAPE_TOOLS_DIR");
  return env && *env ? env : DAPE_TOOLS_DIR;
}

ToolRun run_python_tool(const std::string& script, const std::vector<std::string>& args) {
  const std::string python = python_interpreter();
  const std::string path = (std::filesystem::path(tools_dir()) / script).string();
  std::vector<std::string> argv_text = {python, path};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (::pipe(fds) != 0)
    throw Error(std::string("cannot create a pipe for ") + script + ": " + std::strerror(errno));
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]), ::close(fds[1]);
    throw Error(std::string("cannot start ") + python + " for " + script + ": " + std::strerror(errno));
  }
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]), ::close(fds[1]);
    ::execv(python.c_str(), argv.data());
    std::fprintf(stderr, "cannot run %s: %s\n", python.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  ::close(fds[1]);
  ToolRun run;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      run.output.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

bool draw_plot(const std::string& script, const std::vector<std::string>& args, const std::string& what) {
  const ToolRun run = run_python_tool(script, args);
  if (run.exit_code == 0) return true;
  if (run.exit_code == kToolMissingModule || run.exit_code == 127) {
    std::fprintf(stderr,
                 "dape: note: %s skipped: %s; install it with `apt-get install python3-matplotlib` "
                 "(scripts/setup.sh) and draw it again\n",
                 what.c_str(), trimmed(run.output).c_str());
    return false;
  }
  throw Error(what + ": " + python_interpreter() + " " + script + " failed (exit " +
              std::to_string(run.exit_code) + "): " + trimmed(run.output));
}

}  // namespace dape::launcher
