// The (backend, element type) pairs every typed oracle suite runs over, with
// readable names ("simd_bfloat16") in the test output.
#pragma once

#include <string>
#include <type_traits>

#include <gtest/gtest.h>

#include <streamattn/streamattn.hpp>

namespace streamattn::testing {

template <class Backend, class T>
struct combo {
  using backend = Backend;
  using type = T;
};

/// The streaming backends (naive is the oracle) x the four element types.
using backend_element_combos =
    ::testing::Types<combo<scalar_t, float>, combo<scalar_t, double>, combo<scalar_t, Eigen::half>,
                     combo<scalar_t, Eigen::bfloat16>, combo<simd_t, float>, combo<simd_t, double>,
                     combo<simd_t, Eigen::half>, combo<simd_t, Eigen::bfloat16>>;

/// "float", "double", "half" or "bfloat16".
template <class T>
std::string element_name() {
  return std::is_same_v<T, float>         ? "float"
         : std::is_same_v<T, double>      ? "double"
         : std::is_same_v<T, Eigen::half> ? "half"
                                          : "bfloat16";
}

/// For suites about how operands are addressed (packed sequences, paged
/// caches) rather than about arithmetic: the oracle's own code path, each
/// streaming backend, and every element type at least once.
using addressing_combos =
    ::testing::Types<combo<naive_t, float>, combo<scalar_t, float>, combo<scalar_t, Eigen::bfloat16>,
                     combo<simd_t, float>, combo<simd_t, double>, combo<simd_t, Eigen::half>>;

class combo_names {
 public:
  template <class C>
  static std::string GetName(int) {
    using B = typename C::backend;
    const std::string b = std::is_same_v<B, simd_t> ? "simd_" : std::is_same_v<B, scalar_t> ? "scalar_" : "naive_";
    return b + element_name<typename C::type>();
  }
};

}  // namespace streamattn::testing
