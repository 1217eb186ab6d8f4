// When a CPU loop is worth an OpenMP team. Internal to kernels/cpu.
#pragma once

#include <cstddef>

namespace dape::kernels::cpu {

// Below this many scalar operations, waking a thread team costs more than it saves, and on a busy
// machine a barrier waiting for a descheduled thread can cost milliseconds: run serially.
inline bool worth_parallel(size_t work) { return work >= (size_t(1) << 16); }

}  // namespace dape::kernels::cpu
