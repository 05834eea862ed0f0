// Non-owning strided views over attention tensors, and Eigen interop.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

#include "config.hpp"

namespace streamattn {

/// A non-owning view of a rank-`Rank` tensor: a data pointer, extents and
/// strides, both counted in elements. A stride of 0 broadcasts one element
/// along that axis. Nothing is assumed about contiguity or ordering.
///
///     view<float, 4> q{ptr, {B, N, H, D}, {N * H * D, H * D, D, 1}};
///
/// A `view<T, R>` converts implicitly to `view<const T, R>`.
template <class T, int Rank>
struct view {
  static_assert(Rank >= 1, "streamattn::view needs a rank of at least 1");
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  static constexpr int rank = Rank;
  using extents_type = std::array<index_t, Rank>;

  T* data = nullptr;
  std::array<index_t, Rank> shape{};
  std::array<index_t, Rank> strides{};

  constexpr view() = default;
  constexpr view(T* ptr, const std::array<index_t, Rank>& extents,
                 const std::array<index_t, Rank>& element_strides)
      : data(ptr), shape(extents), strides(element_strides) {}

  // view<T> -> view<const T>; never the other way.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  constexpr view(const view<U, Rank>& other)  // NOLINT(google-explicit-constructor)
      : data(other.data), shape(other.shape), strides(other.strides) {}

  constexpr index_t extent(int axis) const { return shape[static_cast<std::size_t>(axis)]; }
  constexpr index_t stride(int axis) const { return strides[static_cast<std::size_t>(axis)]; }

  /// Number of logical elements (the product of the extents).
  constexpr index_t size() const {
    index_t n = 1;
    for (index_t e : shape) n *= e;
    return n;
  }
  constexpr bool empty() const { return data == nullptr; }

  template <class... I>
  constexpr T& operator()(I... idx) const {
    static_assert(sizeof...(I) == Rank, "streamattn::view: wrong number of indices");
    const index_t indices[] = {static_cast<index_t>(idx)...};
    index_t offset = 0;
    for (int a = 0; a < Rank; ++a) offset += indices[a] * strides[static_cast<std::size_t>(a)];
    return data[offset];
  }
};

/// Contiguous row-major strides for the given extents.
template <std::size_t Rank>
constexpr std::array<index_t, Rank> contiguous_strides(const std::array<index_t, Rank>& extents) {
  std::array<index_t, Rank> s{};
  index_t running = 1;
  for (std::size_t a = Rank; a-- > 0;) {
    s[a] = running;
    running *= extents[a];
  }
  return s;
}

/// A contiguous row-major view of `ptr` with the given extents.
template <class T, std::size_t Rank>
constexpr view<T, static_cast<int>(Rank)> contiguous(T* ptr, const std::array<index_t, Rank>& extents) {
  return {ptr, extents, contiguous_strides(extents)};
}

// Attention tensors are always viewed in the logical order (batch, seq, head,
// dim); these builders describe the two common memory layouts in that order.

/// Memory laid out as [B, S, H, D] (FlashAttention layout).
template <class T>
constexpr view<T, 4> bshd(T* ptr, index_t batch, index_t seq, index_t heads, index_t dim) {
  return {ptr, {batch, seq, heads, dim}, {seq * heads * dim, heads * dim, dim, 1}};
}

/// Memory laid out as [B, H, S, D] (PyTorch layout), viewed as (B, S, H, D).
template <class T>
constexpr view<T, 4> bhsd(T* ptr, index_t batch, index_t heads, index_t seq, index_t dim) {
  return {ptr, {batch, seq, heads, dim}, {heads * seq * dim, dim, seq * dim, 1}};
}

}  // namespace streamattn
