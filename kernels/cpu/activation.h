// Pointwise activations shared by the CPU ops (FIRE's bias MLP and the DAPE MLP). Internal to kernels/cpu.
#pragma once

#include <cmath>
#include <cstddef>

#include "kernels/error.h"
#include "kernels/positional.h"

namespace dape::kernels::cpu {

template <typename F>
F activation_forward(F y, Activation act) {
  switch (act) {
    case Activation::relu:
      return y > 0 ? y : F(0);
    case Activation::leaky_relu:
      return y > 0 ? y : F(kLeakyReluSlope) * y;
    case Activation::gelu:
      return F(0.5) * y * (F(1) + std::erf(y * F(M_SQRT1_2)));
  }
  DAPE_ASSERT(false);
}

// d act / dy. At y = 0, ReLU gives 0 and LeakyReLU gives its slope, as PyTorch does.
template <typename F>
F activation_derivative(F y, Activation act) {
  switch (act) {
    case Activation::relu:
      return y > 0 ? F(1) : F(0);
    case Activation::leaky_relu:
      return y > 0 ? F(1) : F(kLeakyReluSlope);
    case Activation::gelu: {
      const F cdf = F(0.5) * (F(1) + std::erf(y * F(M_SQRT1_2)));
      const F pdf = std::exp(F(-0.5) * y * y) * F(0.5 * M_2_SQRTPI * M_SQRT1_2);
      return cdf + y * pdf;
    }
  }
  DAPE_ASSERT(false);
}

// out[e] = act(in[e]) for e < n, the choice made once outside the loop so that it vectorises. out may alias
// in.
template <typename F>
void activation_forward(F* out, const F* in, size_t n, Activation act) {
  switch (act) {
    case Activation::relu:
      for (size_t e = 0; e < n; ++e) out[e] = in[e] > 0 ? in[e] : F(0);
      return;
    case Activation::leaky_relu:
      for (size_t e = 0; e < n; ++e) out[e] = in[e] > 0 ? in[e] : F(kLeakyReluSlope) * in[e];
      return;
    case Activation::gelu:
      for (size_t e = 0; e < n; ++e) out[e] = activation_forward(in[e], act);
      return;
  }
}

}  // namespace dape::kernels::cpu
