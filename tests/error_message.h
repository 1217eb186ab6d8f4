// The message of the dape::Error that f throws, or "" when it throws none: tests assert on what users read.
#pragma once

#include <string>

#include "kernels/error.h"

namespace dape::testing {

template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace dape::testing
