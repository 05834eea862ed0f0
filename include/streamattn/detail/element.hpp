// Which element types a tensor may hold, and what they accumulate in.
#pragma once

#include <type_traits>

#include <Eigen/Core>

namespace streamattn::detail {

/// float, double, Eigen::half and Eigen::bfloat16 are the supported storage types.
template <class T>
inline constexpr bool is_element_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, Eigen::half> ||
    std::is_same_v<T, Eigen::bfloat16>;

/// Arithmetic happens in float for the 16- and 32-bit types, in double for double.
template <class T>
using accum_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

/// The naive oracle accumulates one step wider than the fast paths.
template <class T>
using oracle_accum_t = std::conditional_t<std::is_same_v<T, double>, long double, double>;

template <class To, class From>
inline To convert(From x) {
  if constexpr (std::is_same_v<From, Eigen::half> || std::is_same_v<From, Eigen::bfloat16>) {
    return static_cast<To>(static_cast<float>(x));
  } else if constexpr (std::is_same_v<To, Eigen::half> || std::is_same_v<To, Eigen::bfloat16>) {
    return To(static_cast<float>(x));
  } else {
    return static_cast<To>(x);
  }
}

}  // namespace streamattn::detail
