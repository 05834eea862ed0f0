// exp/log/infinity that compile on the host and in CUDA device code alike.
#pragma once

#include <cmath>
#include <limits>

#include "../config.hpp"

namespace streamattn::detail {

template <class T>
STREAMATTN_HOST_DEVICE T neg_inf() {
#if defined(__CUDA_ARCH__)
  return -static_cast<T>(INFINITY);
#else
  return -std::numeric_limits<T>::infinity();
#endif
}

STREAMATTN_HOST_DEVICE float exp_(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return std::exp(x);
#endif
}
STREAMATTN_HOST_DEVICE double exp_(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}
inline long double exp_(long double x) { return std::exp(x); }

STREAMATTN_HOST_DEVICE float exp2_(float x) {
#if defined(__CUDA_ARCH__)
  return ::exp2f(x);
#else
  return std::exp2(x);
#endif
}
STREAMATTN_HOST_DEVICE double exp2_(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp2(x);
#else
  return std::exp2(x);
#endif
}

STREAMATTN_HOST_DEVICE float log_(float x) {
#if defined(__CUDA_ARCH__)
  return ::logf(x);
#else
  return std::log(x);
#endif
}
STREAMATTN_HOST_DEVICE double log_(double x) {
#if defined(__CUDA_ARCH__)
  return ::log(x);
#else
  return std::log(x);
#endif
}
inline long double log_(long double x) { return std::log(x); }

}  // namespace streamattn::detail
