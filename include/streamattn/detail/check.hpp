// Helpers that turn bad arguments into std::invalid_argument with a sentence
// naming the argument and the sizes involved.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "../config.hpp"
#include "../tensor.hpp"

namespace streamattn::detail {

template <class... Parts>
[[noreturn]] inline void fail(const char* function, Parts&&... parts) {
  std::ostringstream msg;
  msg << function << ": ";
  (msg << ... << std::forward<Parts>(parts));
  throw std::invalid_argument(msg.str());
}

template <class T, int R>
std::string shape_string(const view<T, R>& v) {
  std::ostringstream s;
  s << '(';
  for (int a = 0; a < R; ++a) s << (a ? ", " : "") << v.extent(a);
  s << ')';
  return s.str();
}

/// Rejects negative extents and null data behind a non-empty shape.
template <class T, int R>
void check_view(const char* function, const char* name, const view<T, R>& v) {
  for (int a = 0; a < R; ++a)
    if (v.extent(a) < 0) fail(function, name, " has a negative extent: ", shape_string(v));
  if (v.data == nullptr && v.size() != 0)
    fail(function, name, " has null data but shape ", shape_string(v));
}

template <class T, int R>
void check_shape(const char* function, const char* name, const view<T, R>& v,
                 const typename view<T, R>::extents_type& expected, const char* expected_names) {
  check_view(function, name, v);
  if (v.shape != expected) {
    view<T, R> e{nullptr, expected, {}};
    fail(function, name, " has shape ", shape_string(v), " but ", expected_names, " ", shape_string(e),
         " was expected");
  }
}

/// The address range [lo, hi) a view's elements occupy, in bytes.
template <class T, int R>
std::pair<std::uintptr_t, std::uintptr_t> byte_range(const view<T, R>& v) {
  if (v.data == nullptr || v.size() == 0) return {0, 0};
  std::intptr_t lo = 0, hi = 0;
  for (int a = 0; a < R; ++a) {
    const std::intptr_t reach = static_cast<std::intptr_t>((v.extent(a) - 1) * v.stride(a));
    (reach < 0 ? lo : hi) += reach;
  }
  const auto base = reinterpret_cast<std::uintptr_t>(v.data);
  return {base + static_cast<std::uintptr_t>(lo * static_cast<std::intptr_t>(sizeof(T))),
          base + static_cast<std::uintptr_t>((hi + 1) * static_cast<std::intptr_t>(sizeof(T)))};
}

/// Throws when an output's address range overlaps an input's. Conservative:
/// two interleaved strided views whose ranges overlap count as aliasing.
template <class A, int RA, class B, int RB>
void check_no_alias(const char* function, const char* out_name, const view<A, RA>& out, const char* in_name,
                    const view<B, RB>& in) {
  const auto o = byte_range(out);
  const auto i = byte_range(in);
  if (o.first < o.second && i.first < i.second && o.first < i.second && i.first < o.second)
    fail(function, out_name, " overlaps ", in_name, " in memory; outputs must not alias inputs");
}

/// An output is written (a gradient summed into), so no two of its elements
/// may share an address: a stride of 0 along an axis longer than 1, or axes
/// whose strides interleave into each other's span, would write several
/// results into one element (and race between threads). Conservative: with
/// the axes ordered by |stride|, each stride must exceed the span of the
/// axes inside it, which every dense or padded layout satisfies.
template <class E, int R>
void check_distinct_elements(const char* fn, const char* name, const view<E, R>& g) {
  if (g.size() == 0) return;
  for (int a = 0; a < R; ++a)
    if (g.stride(a) == 0 && g.extent(a) > 1)
      fail(fn, name, " has stride 0 along axis ", a, " of extent ", g.extent(a),
           "; an output needs one element per position");
  int order[R];
  for (int a = 0; a < R; ++a) order[a] = a;
  auto magnitude = [&](int a) { return g.stride(a) < 0 ? -g.stride(a) : g.stride(a); };
  std::sort(order, order + R, [&](int x, int y) { return magnitude(x) < magnitude(y); });
  index_t span = 0;  // largest offset the inner axes reach
  for (int n = 0; n < R; ++n) {
    const int a = order[n];
    if (g.extent(a) <= 1) continue;
    if (magnitude(a) <= span)
      fail(fn, name, " has strides ", shape_string(view<E, R>{nullptr, g.strides, {}}), " for shape ", shape_string(g),
           ": axis ", a, " overlaps the axes inside it; an output needs one element per position");
    span += (g.extent(a) - 1) * magnitude(a);
  }
}

inline void check_finite(const char* function, const char* name, float value) {
  if (!std::isfinite(value)) fail(function, name, " must be finite, got ", value);
}

}  // namespace streamattn::detail
