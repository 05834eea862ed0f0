// Token-by-token decoding with causal Fastformer: a small state object whose
// `append` turns (q_t, k_t[, v_t]) into the output row of token t in
// O(H * D) time (plus D^2 for the output transform), with O(D) state.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "additive.hpp"
#include "backend.hpp"
#include "cpu/scalar_additive.hpp"
#include "cpu/simd/additive_causal.hpp"
#include "cpu/simd/additive_rows.hpp"
#include "detail/additive_validate.hpp"
#include "detail/check.hpp"
#include "detail/element.hpp"
#include "tensor.hpp"

namespace streamattn {
namespace detail {

// The per-token engine of each backend, found by overload on the tag (so a
// tag derived from simd_t or scalar_t gets that engine). Declarations only:
// they name a type.
template <class Acc>
scalar_additive::causal_scan<Acc>* decode_engine_of(const scalar_t&);
template <class Acc>
simd_additive::causal_engine<Acc>* decode_engine_of(const simd_t&);

template <class Acc, class Backend, class = void>
struct has_decode_engine : std::false_type {};
template <class Acc, class Backend>
struct has_decode_engine<Acc, Backend, std::void_t<decltype(decode_engine_of<Acc>(std::declval<const Backend&>()))>>
    : std::true_type {};

}  // namespace detail

/// The causal Fastformer of `fastformer_attention(..., opts.causal = true)`,
/// one token at a time: after appending tokens 0..t, `append` has written
/// exactly row t of the batch result (the same numbers, bit for bit, on the
/// same backend without a transform; with one, the product W_t u_t is a
/// matrix-vector product here and part of a matrix product there, so the two
/// agree to rounding). See `fastformer_options` for the causal definition.
///
/// The decoder keeps references to the weights (they must outlive it) and
/// O(D) running state per pooling. `opts.causal`, `opts.mask` and
/// `opts.threads` do not apply: decoding is causal by nature and each token
/// brings its own mask bit. Not thread-safe: one decoder per sequence.
///
///     streamattn::fastformer_decoder<float> dec(streamattn::simd, weights, D);
///     for (t ...) dec.append(q_t, k_t, y_t);   // views of D elements
template <class T, class Backend = default_backend_t>
class fastformer_decoder {
  static_assert(detail::is_element_v<T>,
                "streamattn::fastformer_decoder: T must be float, double, Eigen::half or Eigen::bfloat16");
  static_assert(detail::has_decode_engine<detail::accum_t<T>, Backend>::value,
                "streamattn::fastformer_decoder: this backend has no decoder. Use streamattn::scalar or "
                "streamattn::simd.");

 public:
  /// Weights are in the accumulation type: float for float, half and
  /// bfloat16 tokens, double for double tokens.
  using weight_type = detail::accum_t<T>;

  /// Validates the weights for model dimension `dim` (a multiple of the
  /// number of heads). Throws std::invalid_argument on inconsistent input.
  fastformer_decoder(const Backend&, const fastformer_weights<weight_type>& weights, index_t dim,
                     const fastformer_options& opts = {})
      : params_(make_params(weights, dim, opts)), engine_(make_engine(params_)), transform_(params_) {
    const std::size_t d = static_cast<std::size_t>(dim);
    for (auto* v : {&q_, &k_, &v_, &kbar_, &u_}) v->resize(d);
  }

  /// The decoder on the default backend (simd).
  fastformer_decoder(const fastformer_weights<weight_type>& weights, index_t dim, const fastformer_options& opts = {})
      : fastformer_decoder(Backend{}, weights, dim, opts) {}

  /// Appends token t with V = Q (the official module) and writes its output
  /// row (D) to `out`. `keep` is the token's mask bit (see
  /// `additive_mask_mode`).
  template <class Q, class K, class O>
  void append(view<Q, 1> q, view<K, 1> k, view<O, 1> out, bool keep = true) {
    check_types<Q, K, Q, O>();
    append_impl(q, k, q, out, keep);
  }

  /// Appends token t with a separate value row v_t.
  template <class Q, class K, class V, class O>
  void append(view<Q, 1> q, view<K, 1> k, view<V, 1> v, view<O, 1> out, bool keep = true) {
    check_types<Q, K, V, O>();
    append_impl(q, k, v, out, keep);
  }

  /// Forgets every token: the next append is token 0 of a new sequence.
  void reset() { engine_->reset(); }

  /// Number of tokens appended since construction or the last reset.
  index_t position() const { return engine_->position(); }

  index_t dim() const { return params_.shape.dim; }

 private:
  using Acc = detail::accum_t<T>;
  using engine_type = std::remove_pointer_t<decltype(detail::decode_engine_of<Acc>(std::declval<const Backend&>()))>;
  static constexpr bool simd_engine = std::is_same_v<engine_type, detail::simd_additive::causal_engine<Acc>>;
  static constexpr const char* fn = "streamattn::fastformer_decoder";

  template <class Q, class K, class V, class O>
  static constexpr void check_types() {
    static_assert(std::is_same_v<std::remove_const_t<Q>, T> && std::is_same_v<std::remove_const_t<K>, T> &&
                      std::is_same_v<std::remove_const_t<V>, T>,
                  "streamattn::fastformer_decoder::append: q, k and v must hold the decoder's element type T");
    static_assert(detail::is_element_v<O>, "streamattn::fastformer_decoder::append: out must be a writable view of "
                                           "float, double, Eigen::half or Eigen::bfloat16");
  }

  static detail::fastformer_params<T, Acc, Acc> make_params(const fastformer_weights<Acc>& weights, index_t dim,
                                                            const fastformer_options& opts) {
    if (dim < 0) detail::fail(fn, "dim must be >= 0, got ", dim);
    // Zero tokens: the shape checks of the batch call, on the weights alone.
    const view<const T, 3> none{nullptr, {0, 0, dim}, {0, 0, 0}};
    const view<Acc, 3> no_out{nullptr, {0, 0, dim}, {0, 0, 0}};
    detail::additive_settings settings = detail::settings_of(opts);
    settings.mask = {};
    settings.causal = true;
    auto p = detail::make_fastformer_params<T, Acc, Acc>(fn, none, none, none, false, weights, no_out,
                                                         settings);
    if (!opts.scale && p.shape.head_dim == 0)
      detail::fail(fn, "the head size D/heads is 0 and no scale is given (the default 1/sqrt(D/heads) is undefined)");
    return p;
  }

  static std::unique_ptr<engine_type> make_engine(const detail::fastformer_params<T, Acc, Acc>& p) {
    return std::make_unique<engine_type>(p.shape, p.query_att, &p.key_att, static_cast<Acc>(p.scale), p.mask.exclude,
                                         p.pool_raw_keys);
  }

  template <class Q, class K, class V, class O>
  void append_impl(const view<Q, 1>& q, const view<K, 1>& k, const view<V, 1>& v, const view<O, 1>& out, bool keep) {
    const index_t d = params_.shape.dim;
    detail::check_shape(fn, "q", q, {d}, "(D) =");
    detail::check_shape(fn, "k", k, {d}, "(D) =");
    detail::check_shape(fn, "v", v, {d}, "(D) =");
    detail::check_shape(fn, "out", out, {d}, "(D) =");
    detail::check_no_alias(fn, "out", out, "q", q);
    detail::check_no_alias(fn, "out", out, "k", k);
    detail::check_no_alias(fn, "out", out, "v", v);
    for (index_t f = 0; f < d; ++f) {
      q_[static_cast<std::size_t>(f)] = detail::convert<Acc>(q(f));
      k_[static_cast<std::size_t>(f)] = detail::convert<Acc>(k(f));
      v_[static_cast<std::size_t>(f)] = detail::convert<Acc>(v(f));
    }
    const Acc* kbar = nullptr;
    if constexpr (simd_engine) {
      const detail::simd_additive::row_tile<Acc> q_row{q_.data(), d, 1}, k_row{k_.data(), d, 1};
      engine_->push(q_row, k_row, &keep, kbar_.data());
      kbar = kbar_.data();
    } else {
      kbar = engine_->push(q_.data(), k_.data(), keep);
    }
    for (index_t f = 0; f < d; ++f) u_[static_cast<std::size_t>(f)] = v_[static_cast<std::size_t>(f)] * kbar[f];

    if constexpr (simd_engine) {
      if (transform_.present()) {
        Eigen::Map<Eigen::Matrix<Acc, Eigen::Dynamic, 1>> y(kbar_.data(), d);  // k̄ is no longer needed
        const Eigen::Map<const Eigen::Matrix<Acc, Eigen::Dynamic, 1>> u(u_.data(), d);
        transform_.visit([&](const auto& wt) { y.noalias() = wt * u; });
        for (index_t f = 0; f < d; ++f) {
          Acc yf = y(f) + transform_.bias()[f];
          if (params_.residual) yf += q_[static_cast<std::size_t>(f)];
          out(f) = detail::convert<O>(yf);
        }
        return;
      }
      for (index_t f = 0; f < d; ++f) out(f) = detail::convert<O>(u_[static_cast<std::size_t>(f)]);
    } else {
      detail::scalar_additive::write_output_row(params_, u_.data(), q_.data(), 1, out.data, out.stride(0));
    }
  }

  detail::fastformer_params<T, Acc, Acc> params_;
  std::unique_ptr<engine_type> engine_;
  detail::simd_additive::transform_matrix<Acc> transform_;
  std::vector<Acc> q_, k_, v_, kbar_, u_;
};

}  // namespace streamattn
