// Owning test tensors with random contents, in several memory layouts, viewed
// in streamattn's logical order.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include <streamattn/detail/element.hpp>
#include <streamattn/tensor.hpp>

namespace streamattn::testing {

/// How a (batch, seq, head, dim) tensor sits in memory.
enum class layout {
  bshd,    // contiguous [B, S, H, D]
  bhsd,    // contiguous [B, H, S, D]
  padded,  // [B, S, H, D] with gaps after every axis: no axis is contiguous with the next
};

inline const char* name_of(layout l) {
  switch (l) {
    case layout::bshd: return "bshd";
    case layout::bhsd: return "bhsd";
    default: return "padded";
  }
}

/// What fills the elements a kernel must not read: NaN, or for an int8
/// (quantised) tensor -128, which no symmetric quantisation produces.
template <class T>
T poison() {
  if constexpr (std::is_integral_v<T>) {
    return std::numeric_limits<T>::min();
  } else {
    return detail::convert<T>(std::numeric_limits<float>::quiet_NaN());
  }
}

/// A 4-d tensor that owns its storage. Unused (gap) elements are filled with
/// NaN (see `poison`) so a kernel that reads outside the view poisons its result.
template <class T>
struct tensor4 {
  std::vector<T> storage;
  view<T, 4> v;

  tensor4() = default;
  tensor4(const tensor4&) = delete;  // the view would point into the source
  tensor4& operator=(const tensor4&) = delete;
  tensor4(tensor4&&) noexcept = default;
  tensor4& operator=(tensor4&&) noexcept = default;
  tensor4(std::array<index_t, 4> shape, layout l = layout::bshd) {
    const index_t B = shape[0], S = shape[1], H = shape[2], D = shape[3];
    std::array<index_t, 4> strides{};
    index_t total = 0;
    switch (l) {
      case layout::bshd:
        strides = {S * H * D, H * D, D, 1};
        total = B * S * H * D;
        break;
      case layout::bhsd:
        strides = {H * S * D, D, S * D, 1};
        total = B * S * H * D;
        break;
      case layout::padded: {
        const index_t d = 2, h = (D + 1) * d, s = (H + 1) * h, b = (S + 2) * s;
        strides = {b, s, h, d};
        total = std::max<index_t>(1, B) * b;
        break;
      }
    }
    // Dense layouts have no gaps: zeros at once. (Element by element, this
    // took a sixth of the sanitized paged-cache suite.)
    const bool gaps = l == layout::padded || total == 0;
    storage.assign(static_cast<std::size_t>(std::max<index_t>(total, 1)),
                   gaps ? poison<T>() : detail::convert<T>(0.0f));
    v = view<T, 4>{storage.data(), shape, strides};
    if (gaps) for_each([&](index_t b, index_t s, index_t h, index_t d) { v(b, s, h, d) = detail::convert<T>(0.0f); });
  }

  template <class F>
  void for_each(F&& f) const {
    for (index_t b = 0; b < v.extent(0); ++b)
      for (index_t s = 0; s < v.extent(1); ++s)
        for (index_t h = 0; h < v.extent(2); ++h)
          for (index_t d = 0; d < v.extent(3); ++d) f(b, s, h, d);
  }

  /// Uniform random values in [lo, hi), rounded to T.
  template <class Rng>
  tensor4& randomize(Rng& rng, double lo = -1.0, double hi = 1.0) {
    std::uniform_real_distribution<double> dist(lo, hi);
    for_each([&](index_t b, index_t s, index_t h, index_t d) { v(b, s, h, d) = detail::convert<T>(dist(rng)); });
    return *this;
  }

  /// The same values in another element type and layout.
  template <class U>
  tensor4<U> as(layout l = layout::bshd) const {
    tensor4<U> t(v.shape, l);
    for_each([&](index_t b, index_t s, index_t h, index_t d) { t.v(b, s, h, d) = detail::convert<U>(v(b, s, h, d)); });
    return t;
  }

  view<const T, 4> cv() const { return v; }
  /// NaN in every element, gaps included: rows a kernel must not read (or
  /// write) stand out in its result.
  void fill_nan() {
    std::fill(storage.begin(), storage.end(), poison<T>());
  }
};

}  // namespace streamattn::testing
