// launcher: the `dape` command line. Owns the CLI (subcommands, exit codes), the YAML run config and its
// schema table (launcher/config.h), logging, metrics.jsonl and the training loop (launcher/train.h).
// May include: model, data, checkpoint (and through them kernels, comm); yaml-cpp, nlohmann-json and
// spdlog in .cpp files only; CLI11 in main.cpp only.
//
// Exit codes of `dape`:
//   0  success
//   1  any other dape::Error (I/O, a non-finite loss, ...), printed as one line
//   2  bad usage or bad configuration (dape::ConfigError), printed as one line naming the key, the value
//      found and what is expected; nothing is created on disk
#pragma once

#include "launcher/config.h"
#include "launcher/train.h"

namespace dape::launcher {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitConfigError = 2;

}  // namespace dape::launcher
