// The backward pass of softmax attention: the gradients of a loss with
// respect to q, k, v (and the bias) from the gradient of `attention`'s
// output, without the (Nq x Nk) matrix.
#pragma once

#include <type_traits>
#include <utility>

#include "attention_gradients.hpp"
#include "backend.hpp"
#include "cpu/naive_attention_backward.hpp"
#include "cpu/scalar_attention_backward.hpp"
#include "cpu/simd/attention_backward.hpp"
#include "detail/element.hpp"
#include "detail/validate_attention_backward.hpp"
#include "options.hpp"
#include "tensor.hpp"

namespace streamattn {
namespace detail {

// Backends provide `attention_backward_impl(tag, params)`, found by
// argument-dependent lookup like `attention_impl`.
template <class Backend, class = void>
struct has_attention_backward : std::false_type {};
template <class Backend>
struct has_attention_backward<Backend, std::void_t<decltype(attention_backward_impl(
                                           std::declval<const Backend&>(),
                                           std::declval<const attention_backward_params<float, float, float>&>()))>>
    : std::true_type {};

}  // namespace detail

/// Gradients of softmax attention. Pass the operands and options of the
/// forward call, with `opts.lse` holding the log-sum-exp that call wrote, its
/// output `out`, and `dout` = dL/d(out) of the same shape; `grads` receives
/// dL/dq, dL/dk, dL/dv and, when set, dL/d(opts.bias). Every option of
/// `attention` but `block_table` (a paged KV cache) is supported; the streaming backends recompute the softmax
/// weights from lse, so out and lse must be the forward's (on the same
/// inputs). Rows that saw no key get zero gradients. Nothing grows with the
/// sequence length (`naive` excepted), and the result does not depend on the
/// thread count. q, k and v share one element type; out and
/// dout share one (any element type); the gradients may have a third.
/// Throws std::invalid_argument on inconsistent input.
template <class Backend, class Q, class K, class V, class O, class DO, class G>
void attention_backward(const Backend& backend, view<Q, 4> q, view<K, 4> k, view<V, 4> v, view<O, 4> out,
                        view<DO, 4> dout, const attention_gradients<G>& grads, const attention_options& opts) {
  using T = std::remove_const_t<Q>;
  using To = std::remove_const_t<O>;
  constexpr bool one_input_type =
      std::is_same_v<T, std::remove_const_t<K>> && std::is_same_v<T, std::remove_const_t<V>>;
  static_assert(one_input_type, "streamattn::attention_backward: q, k and v must have the same element type (int8 "
                                "quantised KV caches are for inference: the forward pass only)");
  static_assert(std::is_same_v<To, std::remove_const_t<DO>>,
                "streamattn::attention_backward: out and dout must have the same element type");
  static_assert(detail::is_element_v<T> && detail::is_element_v<To> && detail::is_element_v<G>,
                "streamattn::attention_backward: elements must be float, double, Eigen::half or Eigen::bfloat16");
  static_assert(!std::is_const_v<G>, "streamattn::attention_backward: the gradients must be writable views");
  static_assert(detail::has_attention_backward<Backend>::value,
                "streamattn::attention_backward: this backend has no backward pass. Use streamattn::naive, "
                "streamattn::scalar or streamattn::simd (the cuda backend has none yet).");
  // Guarded so that a call the assertions above refuse stops at their
  // sentence instead of adding failed conversions and overload resolutions.
  if constexpr (one_input_type && detail::has_attention_backward<Backend>::value) {
    const auto params = detail::make_attention_backward_params<T, To, G>(
        "streamattn::attention_backward", view<const T, 4>(q), view<const T, 4>(k), view<const T, 4>(v),
        view<const To, 4>(out), view<const To, 4>(dout), grads, opts);
    attention_backward_impl(backend, params);
  }
}

}  // namespace streamattn
