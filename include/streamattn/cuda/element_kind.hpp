// The element type of an output, as a value: the kernels are instantiated per
// input type only and convert on store, so an (input, output) pair of types
// costs no extra kernel. Plain C++; the CUDA side maps it to device types.
#pragma once

#include <type_traits>

#include <Eigen/Core>

namespace streamattn::detail::gpu {

enum class element_kind : unsigned char { f32, f64, f16, bf16 };

template <class T>
constexpr element_kind element_kind_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, Eigen::half> ||
                    std::is_same_v<T, Eigen::bfloat16>,
                "streamattn: elements must be float, double, Eigen::half or Eigen::bfloat16");
  if constexpr (std::is_same_v<T, float>) return element_kind::f32;
  else if constexpr (std::is_same_v<T, double>) return element_kind::f64;
  else if constexpr (std::is_same_v<T, Eigen::half>) return element_kind::f16;
  else return element_kind::bf16;
}

constexpr bool is_16bit(element_kind k) { return k == element_kind::f16 || k == element_kind::bf16; }

constexpr const char* name_of(element_kind k) {
  switch (k) {
    case element_kind::f32: return "float";
    case element_kind::f64: return "double";
    case element_kind::f16: return "half";
    default: return "bfloat16";
  }
}

}  // namespace streamattn::detail::gpu
