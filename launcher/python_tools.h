// The Python helpers under tools/ that draw the plots and write PyTorch files, and how dape runs them.
//
// Interpreter: $DAPE_PYTHON, else /usr/bin/python3 (Debian's, which has python3-matplotlib and python3-torch
// from scripts/setup.sh). Scripts: $DAPE_TOOLS_DIR, else the tools/ folder of the source tree dape was built
// from. A helper exits with kToolMissingModule (after one line on stderr naming the module) when a Python
// package it needs is not installed.
#pragma once

#include <string>
#include <vector>

namespace dape::launcher {

inline constexpr int kToolMissingModule = 3;

struct ToolRun {
  int exit_code = -1;  // 127: the interpreter could not be started
  std::string output;  // stdout and stderr together
};

std::string python_interpreter();
std::string tools_dir();

// Runs `python tools/SCRIPT ARGS...` (no shell) and waits for it; throws dape::Error only when no process
// could be created.
ToolRun run_python_tool(const std::string& script, const std::vector<std::string>& args);

// Draws a plot with a helper. Returns true when it was drawn. When Python or matplotlib is missing, prints
// "dape: note: ..." on stderr saying what to install and returns false; any other failure throws
// dape::Error with the helper's output.
bool draw_plot(const std::string& script, const std::vector<std::string>& args, const std::string& what);

}  // namespace dape::launcher
