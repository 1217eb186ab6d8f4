// A rank that never joins a collective: rank 0 waits in an all-reduce that rank 1 skips (it sleeps, then
// exits), so rank 0's watchdog must abort it after the 2 s timeout with a message naming the rank and the
// operation. Run by ctest under mpirun with 2 ranks; the test passes on that message
// (tests/CMakeLists.txt), and fails if the all-reduce returns or the job hangs past the test's timeout.
#include <chrono>
#include <cstdio>
#include <thread>

#include "comm/process_group.h"

int main() {
  dape::comm::Runtime& runtime = dape::comm::Runtime::get();
  runtime.set_collective_timeout(2.0);
  if (runtime.world().rank() == 0) {
    float x = 1.0f;
    runtime.world().all_reduce_sum(&x, 1, "the test's all-reduce that rank 1 skips");
    std::printf("the all-reduce returned without rank 1: the timeout did not fire\n");
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::seconds(20));
  return 0;
}
