// Softmax attention: out = softmax(scale * q k^T + terms) v, streamed over key
// chunks so no (Nq x Nk) matrix is ever formed (except by the naive oracle).
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "backend.hpp"
#include "cpu/naive_attention.hpp"
#include "cpu/scalar_attention.hpp"
#include "cpu/simd/attention.hpp"
#include "detail/eigen_view.hpp"
#include "detail/element.hpp"
#include "detail/validate_attention.hpp"
#include "options.hpp"
#include "tensor.hpp"

namespace streamattn {
namespace detail {

// Backends provide `attention_impl(tag, params)` (and optionally
// `attention_workspace_bytes(tag, params)`) in namespace streamattn::detail;
// they are found by argument-dependent lookup, so the CUDA overloads declared
// in a later header are found too.
/// Whether Backend implements attention for params P (its element types,
/// an int8 K/V cache included).
template <class Backend, class P = attention_params<float, float>, class = void>
struct has_attention : std::false_type {};
template <class Backend, class P>
struct has_attention<Backend, P,
                     std::void_t<decltype(attention_impl(std::declval<const Backend&>(), std::declval<const P&>()))>>
    : std::true_type {};

template <class Backend, class P, class = void>
struct has_workspace_query : std::false_type {};
template <class Backend, class P>
struct has_workspace_query<Backend, P,
                           std::void_t<decltype(attention_workspace_bytes(std::declval<const Backend&>(),
                                                                          std::declval<const P&>()))>>
    : std::true_type {};

template <class Backend, class Q, class K, class V, class O>
constexpr void check_attention_types() {
  using T = std::remove_const_t<Q>;
  using Tkv = std::remove_const_t<K>;
  static_assert(std::is_same_v<Tkv, std::remove_const_t<V>>,
                "streamattn::attention: k and v must have the same element type");
  static_assert(std::is_same_v<T, Tkv> || is_quantised_v<Tkv>,
                "streamattn::attention: k and v must have q's element type, or be std::int8_t (a quantised KV cache, "
                "with attention_options::k_scale and v_scale)");
  static_assert(is_element_v<T>,
                "streamattn::attention: elements must be float, double, Eigen::half or Eigen::bfloat16");
  static_assert(is_element_v<O>, "streamattn::attention: out must be a writable view of float, double, "
                                 "Eigen::half or Eigen::bfloat16");
}

/// P: the params of the call, so a backend that lacks only some element
/// types (an int8 K/V cache, say) is named here too.
template <class Backend, class P>
constexpr void check_attention_backend() {
  static_assert(has_attention<Backend, P>::value,
                "streamattn::attention: this backend has no attention implementation for these element types. Use "
                "streamattn::naive, streamattn::scalar, streamattn::simd, or streamattn::cuda in a translation unit "
                "compiled by nvcc that includes <streamattn/cuda.cuh>.");
}

/// Packed starts and block tables are read on the host (validation reads
/// their values). A backend whose operands live elsewhere checks, before
/// anything reads them, that they are host memory: its overload of this
/// function is found by argument-dependent lookup through the tag. The CPU
/// backends have nothing to check.
struct host_arrays_check {};
template <class Backend>
void check_host_arrays(const Backend&, const char*, const attention_options&, host_arrays_check) {}

}  // namespace detail

/// Softmax attention over views in logical (batch, seq, head, dim) order:
/// q (B, Nq, Hq, D), k (B, Nk, Hk, D), v (B, Nk, Hk, Dv), out (B, Nq, Hq, Dv),
/// any strides. Hq must be a multiple of Hk (grouped-query attention: query
/// head h reads key/value head h / (Hq / Hk)). See `attention_options` for the
/// score terms and masks, for packed variable-length sequences
/// (`query_starts`, `key_starts`) and for paged KV caches (`block_table`,
/// with k and v then (pages, page size, Hk, D)). Throws std::invalid_argument on inconsistent input.
template <class Backend, class Q, class K, class V, class O>
void attention(const Backend& backend, view<Q, 4> q, view<K, 4> k, view<V, 4> v, view<O, 4> out,
               const attention_options& opts = {}) {
  detail::check_attention_types<Backend, Q, K, V, O>();
  using T = std::remove_const_t<Q>;
  using Tkv = std::remove_const_t<K>;
  detail::check_attention_backend<Backend, detail::attention_params<T, O, Tkv>>();
  check_host_arrays(backend, "streamattn::attention", opts, detail::host_arrays_check{});
  const auto params = detail::make_attention_params<T, O, Tkv>("streamattn::attention", q, k, v, out, opts);
  detail::check_output_layout("streamattn::attention", out, opts.lse);
  attention_impl(backend, params);
}

/// `attention` on the default backend (simd).
template <class Q, class K, class V, class O>
void attention(view<Q, 4> q, view<K, 4> k, view<V, 4> v, view<O, 4> out, const attention_options& opts = {}) {
  attention(default_backend, q, k, v, out, opts);
}

/// Bytes of scratch memory `attention` needs to run without heap allocation
/// for these operands; pass that much as `opts.scratch`. Backends that do not
/// use scratch memory report 0.
template <class Backend, class Q, class K, class V, class O>
std::size_t workspace_size(const Backend& backend, view<Q, 4> q, view<K, 4> k, view<V, 4> v, view<O, 4> out,
                           const attention_options& opts = {}) {
  detail::check_attention_types<Backend, Q, K, V, O>();
  using T = std::remove_const_t<Q>;
  using Tkv = std::remove_const_t<K>;
  detail::check_attention_backend<Backend, detail::attention_params<T, O, Tkv>>();
  check_host_arrays(backend, "streamattn::workspace_size", opts, detail::host_arrays_check{});
  const auto params = detail::make_attention_params<T, O, Tkv>("streamattn::workspace_size", q, k, v, out, opts);
  if constexpr (detail::has_workspace_query<Backend, decltype(params)>::value)
    return attention_workspace_bytes(backend, params);
  return 0;
}

/// One-head attention on dense Eigen matrices: Q (Nq x D), K (Nk x D),
/// V (Nk x Dv), any storage order or expression. Returns a row-major Nq x Dv
/// matrix of Q's scalar type.
template <class Backend, class DQ, class DK, class DV>
Eigen::Matrix<typename DQ::Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> attention(
    const Backend& backend, const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k,
    const Eigen::MatrixBase<DV>& v, const attention_options& opts = {}) {
  using T = typename DQ::Scalar;
  const detail::eigen_operand<DQ> qa(q);
  const detail::eigen_operand<DK> ka(k);
  const detail::eigen_operand<DV> va(v);
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(q.rows(), v.cols());
  attention(backend, qa.as_bshd(), ka.as_bshd(), va.as_bshd(), bshd(out.data(), 1, out.rows(), 1, out.cols()), opts);
  return out;
}

/// The Eigen overload on the default backend.
template <class DQ, class DK, class DV>
Eigen::Matrix<typename DQ::Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> attention(
    const Eigen::MatrixBase<DQ>& q, const Eigen::MatrixBase<DK>& k, const Eigen::MatrixBase<DV>& v,
    const attention_options& opts = {}) {
  return attention(default_backend, q, k, v, opts);
}

}  // namespace streamattn
