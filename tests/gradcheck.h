// Finite-difference gradient checks in double precision, shared by the kernel and model tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <string>

namespace dape::testing {

// The error of one tensor relative to its own scale, max|ours - ref| / max|ref|. A tensor whose true
// gradient is exactly zero (a bias that adds a constant to every softmax row, for instance) has only
// round-off as reference; it is measured against the model's largest gradient instead.
inline double relative_error(double max_abs_err, double tensor_max_ref, double model_max_ref) {
  const double scale = tensor_max_ref < 1e-8 * model_max_ref ? model_max_ref : tensor_max_ref;
  return max_abs_err / std::max(scale, 1e-300);
}

struct GradCheckResult {
  double max_abs_err = 0;  // max_i |analytic_i - numeric_i|
  double max_ref = 0;      // max_i |numeric_i|
  double max_rel_err = 0;  // max_abs_err / max_ref: relative to the tensor's own scale
};

// Fourth-order central differences of `loss` with respect to x[0..n) (Richardson extrapolation of the
// central steps h and 2h: truncation h^4 f^(5) / 30, round-off about 1.5 e_L / h for a loss computed to e_L),
// compared with `analytic`. x is restored. Some parameter gradients (FIRE's scalars c and lambda seen through
// the DAPE MLP) are ~1e-5 of the largest; a plain central difference cannot resolve them to 1e-6 of their own
// scale, this one can.
inline GradCheckResult check_gradient(const std::function<double()>& loss, double* x, size_t n,
                                      const double* analytic, double h = 1e-4) {
  double max_abs = 0, max_ref = 0;
  for (size_t i = 0; i < n; ++i) {
    const double saved = x[i];
    auto at = [&](double step) {
      x[i] = saved + step;
      return loss();
    };
    const double numeric = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
    x[i] = saved;
    max_abs = std::max(max_abs, std::abs(analytic[i] - numeric));
    max_ref = std::max(max_ref, std::abs(numeric));
  }
  return {max_abs, max_ref, max_abs / std::max(max_ref, 1e-300)};
}

}  // namespace dape::testing
