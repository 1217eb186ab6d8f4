#include "comm/comm.h"

#include <stdexcept>

namespace dape::comm {

int64_t divide_exact(int64_t numerator, int64_t denominator, const std::string& what) {
  if (denominator <= 0 || numerator % denominator != 0) {
    throw std::invalid_argument(what + ": " + std::to_string(numerator) + " is not divisible by " +
                                std::to_string(denominator));
  }
  return numerator / denominator;
}

}  // namespace dape::comm
