// Which element types a tensor may hold, and what they accumulate in.
#pragma once

#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

namespace streamattn::detail {

/// float, double, Eigen::half and Eigen::bfloat16 are the supported storage types.
template <class T>
inline constexpr bool is_element_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, Eigen::half> ||
    std::is_same_v<T, Eigen::bfloat16>;

/// K/V caches may also hold symmetric int8 values, each row with a float
/// scale (attention_options::k_scale and v_scale).
template <class E>
inline constexpr bool is_quantised_v = std::is_same_v<E, std::int8_t>;

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

/// Element x of a K/V row whose scale is `scale`, in precision To: x
/// itself when the cache is not quantised (the scale is then 1), else
/// x * scale rounded once (exact for double; for float, as if the cache had
/// held float(x * scale)).
template <class To, class From>
inline To dequantise(From x, float scale) {
  if constexpr (is_quantised_v<From>) {
    return static_cast<To>(x) * static_cast<To>(scale);
  } else {
    return convert<To>(x);
  }
}

}  // namespace streamattn::detail
