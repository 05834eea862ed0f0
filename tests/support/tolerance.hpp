// Tolerances derived from float rounding, and comparisons that report where
// two results differ most.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include <Eigen/Core>

#include <streamattn/detail/element.hpp>
#include <streamattn/tensor.hpp>

namespace streamattn::testing {

/// Machine epsilon of a storage type (twice its unit roundoff).
template <class T>
double epsilon() {
  return static_cast<double>(Eigen::NumTraits<T>::epsilon());
}

/// Bound on the relative rounding error of a length-n reduction carried out
/// in T's accumulation type. Summation errors behave like a random walk, so
/// the bound grows with sqrt(n); the factor 4 covers the few extra roundings
/// of scaling, exp and the final division.
template <class T>
double reduction_tolerance(index_t n) {
  using Acc = detail::accum_t<T>;
  return 4.0 * epsilon<Acc>() * (2.0 + std::sqrt(static_cast<double>(std::max<index_t>(n, 1))));
}

/// |x - y| between a result and its reference: NaN on one side only counts
/// as an infinite error, NaN on both sides or equal infinities (matching
/// -inf lse entries) as none.
inline double element_error(double x, double y) {
  if (std::isnan(x) || std::isnan(y))
    return std::isnan(x) == std::isnan(y) ? 0.0 : std::numeric_limits<double>::infinity();
  if (std::isinf(x) && std::isinf(y) && x == y) return 0.0;
  return std::abs(x - y);
}

/// Largest |a - b| over the elements of two views of equal shape, the largest
/// |b|, and where the difference peaks. NaN anywhere counts as an infinite error.
struct difference {
  double max_abs_error = 0;
  double max_reference = 0;
  std::string where;
  std::string describe() const {
    std::ostringstream s;
    s << "max |error| " << max_abs_error << " at " << where << ", max |reference| " << max_reference;
    return s.str();
  }
};

template <class A, class B, int R>
difference compare(const view<A, R>& a, const view<B, R>& b) {
  difference diff;
  std::array<index_t, R> idx{};
  const index_t total = a.size();
  for (index_t n = 0; n < total; ++n) {
    index_t rest = n, off_a = 0, off_b = 0;
    for (int ax = R - 1; ax >= 0; --ax) {
      idx[static_cast<std::size_t>(ax)] = rest % a.extent(ax);
      rest /= a.extent(ax);
      off_a += idx[static_cast<std::size_t>(ax)] * a.stride(ax);
      off_b += idx[static_cast<std::size_t>(ax)] * b.stride(ax);
    }
    const double x = detail::convert<double>(a.data[off_a]);
    const double y = detail::convert<double>(b.data[off_b]);
    const double err = element_error(x, y);
    diff.max_reference = std::max(diff.max_reference, std::isfinite(y) ? std::abs(y) : 0.0);
    if (err > diff.max_abs_error || (std::isnan(err) && !std::isnan(diff.max_abs_error))) {
      diff.max_abs_error = err;
      std::ostringstream w;
      w << '(';
      for (int ax = 0; ax < R; ++ax) w << (ax ? "," : "") << idx[static_cast<std::size_t>(ax)];
      w << ") got " << x << " expected " << y;
      diff.where = w.str();
    }
  }
  return diff;
}

}  // namespace streamattn::testing
