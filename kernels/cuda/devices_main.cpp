// dape-devices: lists the CUDA devices dape can use, or says why there are none (exit 0 either way).
// Built with -DDAPE_CUDA=ON; it is also the check that the CUDA backend links into an executable.
#include <cstdio>
#include <string>

#include "kernels/cuda/device.h"

int main() {
  std::string why;
  const int count = dape::kernels::cuda_device_count(&why);
  if (count == 0) {
    std::printf("no usable CUDA device: %s\n", why.empty() ? "the runtime reports none" : why.c_str());
    return 0;
  }
  for (int d = 0; d < count; ++d) std::printf("cuda:%d %s\n", d, dape::kernels::cuda_device_name(d).c_str());
  return 0;
}
