// Combining attention results computed over disjoint key ranges.
#pragma once

#include <type_traits>

#include "detail/check.hpp"
#include "detail/element.hpp"
#include "detail/math.hpp"
#include "tensor.hpp"

namespace streamattn {

/// Merges two partial results of softmax attention over disjoint key sets A
/// and B (each an `out` in (batch, query, head, dim) order with its `lse` in
/// (batch, head, query) order, as `attention` returns them) into the result
/// over A u B. This is the split-KV / ring-attention combine:
///
///     lse = log(e^lse_a + e^lse_b)
///     out = e^(lse_a - lse) out_a + e^(lse_b - lse) out_b
///
/// A side with lse = -inf (no visible key) contributes nothing; if both are
/// -inf the row is zeros with lse = -inf. `out` and `lse` may be the very same
/// views as `out_a`/`lse_a` or `out_b`/`lse_b` (the merge is element-wise).
template <class A, class B, class O>
void merge_partials(view<A, 4> out_a, view<const float, 3> lse_a, view<B, 4> out_b, view<const float, 3> lse_b,
                    view<O, 4> out, view<float, 3> lse) {
  static_assert(detail::is_element_v<std::remove_const_t<A>> && detail::is_element_v<std::remove_const_t<B>> &&
                    detail::is_element_v<O>,
                "streamattn::merge_partials: elements must be float, double, Eigen::half or Eigen::bfloat16, "
                "and out must be writable");
  constexpr const char* fn = "streamattn::merge_partials";
  detail::check_view(fn, "out", out);
  const index_t batch = out.extent(0), nq = out.extent(1), heads = out.extent(2), dim = out.extent(3);
  detail::check_shape(fn, "out_a", out_a, out.shape, "out's shape");
  detail::check_shape(fn, "out_b", out_b, out.shape, "out's shape");
  detail::check_shape(fn, "lse_a", lse_a, {batch, heads, nq}, "(batch, heads, queries) =");
  detail::check_shape(fn, "lse_b", lse_b, {batch, heads, nq}, "(batch, heads, queries) =");
  detail::check_shape(fn, "lse", lse, {batch, heads, nq}, "(batch, heads, queries) =");

  using Acc = std::conditional_t<std::is_same_v<std::remove_const_t<A>, double> ||
                                     std::is_same_v<std::remove_const_t<B>, double> || std::is_same_v<O, double>,
                                 double, float>;
  for (index_t b = 0; b < batch; ++b)
    for (index_t i = 0; i < nq; ++i)
      for (index_t h = 0; h < heads; ++h) {
        const Acc la = lse_a(b, h, i), lb = lse_b(b, h, i);
        const Acc top = la > lb ? la : lb;
        const bool none = top == detail::neg_inf<Acc>();
        // Weights relative to the larger lse, so neither exponent overflows.
        const Acc wa = none ? Acc(0) : detail::exp_(la - top);
        const Acc wb = none ? Acc(0) : detail::exp_(lb - top);
        const Acc total = wa + wb;
        const Acc inv = none ? Acc(0) : Acc(1) / total;
        for (index_t d = 0; d < dim; ++d) {
          const Acc merged = (wa * detail::convert<Acc>(out_a(b, i, h, d)) + wb * detail::convert<Acc>(out_b(b, i, h, d))) * inv;
          out(b, i, h, d) = detail::convert<O>(merged);
        }
        lse(b, h, i) = none ? detail::neg_inf<float>() : static_cast<float>(top + detail::log_(total));
      }
}

}  // namespace streamattn
