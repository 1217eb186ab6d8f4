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

// Central differences of `loss` with respect to x[0..n), compared with `analytic`. x is restored.
inline GradCheckResult check_gradient(const std::function<double()>& loss, double* x, size_t n,
                                      const double* analytic, double eps = 1e-6) {
  double max_abs = 0, max_ref = 0;
  for (size_t i = 0; i < n; ++i) {
    const double saved = x[i];
    x[i] = saved + eps;
    const double up = loss();
    x[i] = saved - eps;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2 * eps);
    max_abs = std::max(max_abs, std::abs(analytic[i] - numeric));
    max_ref = std::max(max_ref, std::abs(numeric));
  }
  return {max_abs, max_ref, max_abs / std::max(max_ref, 1e-300)};
}

}  // namespace dape::testing
