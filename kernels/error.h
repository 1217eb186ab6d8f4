// The error type every dape library throws, and the internal-invariant check.
// User-facing errors (bad config, bad file) are dape::Error with a message that names the thing,
// the value found, what was expected and what to do; the CLI turns them into one line and an exit code.
#pragma once

#include <stdexcept>
#include <string>

namespace dape {

// Any error a user can cause or act on.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A user error in the configuration (unknown key, wrong type, impossible value). The CLI exits with 2.
class ConfigError : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void internal_error(const char* condition, const char* file, int line);

}  // namespace dape

// For states no input can reach. Stays on in release builds.
#define DAPE_ASSERT(cond)                                           \
  do {                                                              \
    if (!(cond)) ::dape::internal_error(#cond, __FILE__, __LINE__); \
  } while (0)
