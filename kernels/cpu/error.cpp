#include "kernels/error.h"

#include <cstdio>
#include <cstdlib>

namespace dape {

// Aborts rather than throws: a broken invariant means the state is already wrong, and the core dump
// keeps the stack that led here.
void internal_error(const char* condition, const char* file, int line) {
  std::fprintf(stderr, "internal error: %s at %s:%d\n", condition, file, line);
  std::fflush(stderr);
  std::abort();
}

}  // namespace dape
