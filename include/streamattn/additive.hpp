// Fastformer additive attention (Wu et al. 2021, "Fastformer: Additive
// Attention Can Be All You Need"), faithful to the official `FastSelfAttention`
// module, computed by streaming passes with O(D) state per sequence.
//
// Fastformer's two pooling steps are softmax attention with a static learned
// query, so the running max/sum/accumulator of `online_softmax` computes each
// of them in one pass over the tokens, and the states of two token ranges
// merge associatively (which is what splits one long sequence across threads).
//
// Shapes: q, k, v, x are (B, N, D) views in logical (batch, token, feature)
// order with any strides; D = H * dh, head h owns features [h*dh, (h+1)*dh).
//
// Forward pass (the official module; softmax over tokens j, per head h):
//
//     a[j,h] = scale * (Q[j,:] . W_qa[h,:] + b_qa[h])  (+ mask term)
//     q̄[h-slice] = sum_j softmax_j(a[:,h]) Q[j, h-slice]           global query
//     P[j,:] = K[j,:] ⊙ q̄                                         (all D features)
//     c[j,h] = scale * (P[j,:] . W_ka[h,:] + b_ka[h])  (+ mask term)
//     k̄[h-slice] = sum_j softmax_j(c[:,h]) P[j, h-slice]           global key
//     U[i,:] = V[i,:] ⊙ k̄          (V = Q unless a separate v is given)
//     Y[i,:] = U[i,:] W_tᵀ + b_t + Q[i,:]   (when `weights.transform` is set)
//
// W_qa, W_ka are dense (H, D): each head's score reads all D features. The
// kernels never form P: c[j,h] = K[j,:] . (W_ka[h,:] ⊙ q̄) * scale uses a
// weight scaled by q̄ once per sequence, and k̄ = q̄ ⊙ (sum_j β_j K[j, h-slice]).
//
// The score biases b_qa, b_ka shift every score of a head by the same amount
// and cancel in every softmax (masked, causal or not). They are validated and
// used by the naive oracle, which materialises the module literally; the
// streaming kernels leave them out, which is exact and avoids the rounding a
// large bias would add to every score.
#pragma once

#include <optional>
#include <type_traits>

#include "backend.hpp"
#include "config.hpp"
#include "cpu/naive_additive.hpp"
#include "cpu/scalar_additive.hpp"
#include "cpu/simd/additive.hpp"
#include "detail/additive_validate.hpp"
#include "detail/element.hpp"
#include "fastformer_weights.hpp"
#include "tensor.hpp"

namespace streamattn {

/// What the (B, N) keep-mask does to a padded token (mask false).
enum class additive_mask_mode {
  /// The official module: -10000 is added to the padded token's (scaled)
  /// score. A padded token still gets a (vanishing) weight, padded positions
  /// still get outputs, and a fully padded sequence gives exactly the result
  /// of the unmasked one (every score shifts by the same constant; the
  /// kernels track that shift separately, so no precision is lost to it).
  additive,
  /// Padded tokens get weight exactly 0 and their data never enters a
  /// pooling (NaN padding cannot reach other positions); a fully padded
  /// sequence pools to q̄ = k̄ = 0. Padded positions still get outputs
  /// (U = V ⊙ k̄ from their own V).
  exclude,
};

/// The shape of the score weights (W_qa, W_ka, or the `w` of additive_pool).
enum class score_weight_layout {
  /// (H, D): every head's score reads all D features, as in the official module.
  dense,
  /// (H, D/H): head h's score reads only its own slice, w[h, e] applying to
  /// feature h*dh + e (popular ports; the dense form with zero off-head
  /// blocks). A (1, D/H) row broadcast with head stride 0 shares one vector.
  per_head,
};

/// Options of `additive_pool` and `additive_prefix_pool`.
struct additive_pool_options {
  /// Multiplier of (x . w[h] + b[h]); defaults to 1/sqrt(D/H).
  std::optional<float> scale;
  /// Keep-mask in (batch, token) order, true = real token. Either axis may
  /// broadcast with extent 1 or stride 0. Empty = keep every token. (The
  /// official module takes a 0/1 float mask; pass `mask != 0`.)
  view<const bool, 2> mask{};
  additive_mask_mode mask_mode = additive_mask_mode::additive;
  score_weight_layout weight_layout = score_weight_layout::dense;
  /// Worker threads of the simd backend; 0 = all hardware threads. Results
  /// are bitwise identical for every value (see the README for why).
  int threads = 0;
};

/// Options of `fastformer_attention` (and of `fastformer_decoder`).
///
/// Causal Fastformer (`causal = true`): every pooling becomes a prefix
/// pooling over tokens j <= t, evaluated with the global query *of the time
/// each key was seen*:
///
///     q̄_t = sum_{j<=t} softmax_{j<=t}(a[j,h]) Q[j, h-slice]
///     P_j = K_j ⊙ q̄_j                     (q̄ of prefix j, not of prefix t)
///     c[j,h] = scale * (P_j . W_ka[h] + b_ka[h])  (+ mask term)
///     k̄_t = sum_{j<=t} softmax_{j<=t}(c[j,h]) P_j[h-slice]   (K_j with pool_raw_keys)
///     U_t = V_t ⊙ k̄_t,   Y_t = U_t W_tᵀ + b_t (+ Q_t)
///
/// This is the recurrence of the known causal ports (their cumulative sums of
/// exp overflow once logits pass ~88; here every prefix is a running-max
/// scan, stable for any logits), O(N*D) for a sequence and O(H*D) per token
/// when decoding. It is causal (output t never depends on tokens after t) but
/// it is *not* the non-causal module applied to each truncated sequence
/// [0..t]: that would re-score every earlier key against q̄_t, O(N^2).
/// q̄_t alone does equal the non-causal q̄ of the truncated sequence
/// (`additive_prefix_pool`).
struct fastformer_options : additive_pool_options {
  /// k̄ = sum_j β_j K[j, h-slice] instead of the official sum_j β_j P[j, h-slice]
  /// (the scores c still use P). A later version of a popular PyTorch port.
  bool pool_raw_keys = false;
  /// Prefix poolings, see above.
  bool causal = false;
  /// With a transform: add Q to Y, as the official module does (Q even when
  /// a separate V is given). Ignored without a transform.
  bool residual = true;
};

namespace detail {

// Backends provide `additive_pool_impl(tag, params)` and
// `fastformer_impl(tag, params)` in streamattn::detail, found by
// argument-dependent lookup (so simd falls back to scalar where it has none).
template <class Backend, class = void>
struct has_additive : std::false_type {};
template <class Backend>
struct has_additive<Backend,
                    std::void_t<decltype(fastformer_impl(std::declval<const Backend&>(),
                                                         std::declval<const fastformer_params<float, float, float>&>())),
                                decltype(additive_pool_impl(
                                    std::declval<const Backend&>(),
                                    std::declval<const additive_pool_params<float, float, float>&>()))>>
    : std::true_type {};

template <class Backend>
constexpr void check_additive_backend() {
  static_assert(has_additive<Backend>::value,
                "streamattn: this backend has no Fastformer / additive pooling implementation. Use "
                "streamattn::naive, streamattn::scalar or streamattn::simd.");
}

template <class X, class O>
constexpr void check_additive_tensor_types() {
  static_assert(is_element_v<std::remove_const_t<X>>,
                "streamattn: inputs must hold float, double, Eigen::half or Eigen::bfloat16");
  static_assert(is_element_v<O>,
                "streamattn: out must be a writable view of float, double, Eigen::half or Eigen::bfloat16");
}

template <class T, class W>
constexpr void check_additive_weight_type() {
  static_assert(std::is_same_v<std::remove_const_t<W>, accum_t<T>>,
                "streamattn: Fastformer weights are given in the precision the kernels compute in: float "
                "weights for float, Eigen::half and Eigen::bfloat16 inputs, double weights for double inputs");
}

/// The compile-time checks of `additive_pool` and `additive_prefix_pool`.
template <class Backend, class X, class Wt, class Wb, class O>
constexpr void check_additive_pool_types() {
  check_additive_tensor_types<X, O>();
  check_additive_weight_type<std::remove_const_t<X>, Wt>();
  check_additive_weight_type<std::remove_const_t<X>, Wb>();
  check_additive_backend<Backend>();
}

inline additive_settings settings_of(const additive_pool_options& o) {
  additive_settings s;
  s.scale = o.scale;
  s.mask = o.mask;
  s.exclude_masked = o.mask_mode == additive_mask_mode::exclude;
  s.per_head = o.weight_layout == score_weight_layout::per_head;
  s.threads = o.threads;
  return s;
}

inline additive_settings settings_of(const fastformer_options& o) {
  additive_settings s = settings_of(static_cast<const additive_pool_options&>(o));
  s.pool_raw_keys = o.pool_raw_keys;
  s.causal = o.causal;
  s.residual = o.residual;
  return s;
}

}  // namespace detail

/// Additive (attention) pooling, the building block of Fastformer:
///
///     out[b, h-slice] = sum_j softmax_j( scale * (x[b,j,:] . w[h,:] + w_bias[h]) + mask term ) x[b, j, h-slice]
///
/// x (B, N, D); w (H, D) dense (or (H, D/H) with `weight_layout = per_head`:
/// head h's score then reads only its own slice); w_bias (H) or an empty view;
/// out (B, D). D must be a multiple of H. Weights are float for float, half
/// and bfloat16 inputs and double for double inputs. An empty sequence
/// (N = 0), or one whose tokens are all excluded, pools to zeros.
/// Throws std::invalid_argument on inconsistent input.
template <class Backend, class X, class Wt, class Wb, class O>
void additive_pool(const Backend& backend, view<X, 3> x, view<Wt, 2> w, view<Wb, 1> w_bias, view<O, 2> out,
                   const additive_pool_options& opts = {}) {
  using T = std::remove_const_t<X>;
  using W = std::remove_const_t<Wt>;
  detail::check_additive_pool_types<Backend, X, Wt, Wb, O>();
  const auto params = detail::make_additive_pool_params<T, W, O>(
      "streamattn::additive_pool", x, w, w_bias, false, view<O, 3>{}, out, detail::settings_of(opts));
  additive_pool_impl(backend, params);
}

/// `additive_pool` without a score bias (it cancels in the softmax anyway).
template <class Backend, class X, class Wt, class O>
void additive_pool(const Backend& backend, view<X, 3> x, view<Wt, 2> w, view<O, 2> out,
                   const additive_pool_options& opts = {}) {
  additive_pool(backend, x, w, view<const std::remove_const_t<Wt>, 1>{}, out, opts);
}

/// Prefix (causal) additive pooling: out[b, t, :] is `additive_pool` of the
/// first t + 1 tokens x[b, 0..t], for every t, in one O(N * D) scan with a
/// running max (stable for any logits). out is (B, N, D). Each prefix equals
/// the non-causal pooling of the truncated sequence, up to rounding.
template <class Backend, class X, class Wt, class Wb, class O>
void additive_prefix_pool(const Backend& backend, view<X, 3> x, view<Wt, 2> w, view<Wb, 1> w_bias,
                          view<O, 3> out, const additive_pool_options& opts = {}) {
  using T = std::remove_const_t<X>;
  using W = std::remove_const_t<Wt>;
  detail::check_additive_pool_types<Backend, X, Wt, Wb, O>();
  const auto params = detail::make_additive_pool_params<T, W, O>(
      "streamattn::additive_prefix_pool", x, w, w_bias, true, out, view<O, 2>{}, detail::settings_of(opts));
  additive_pool_impl(backend, params);
}

/// Fastformer attention with the official V = Q: q, k (B, N, D), out (B, N, D).
/// Returns Y = U W_tᵀ + b_t (+ Q when `opts.residual`) when
/// `weights.transform` is set, U = Q ⊙ k̄ otherwise. See the top of this
/// header for the equations and `fastformer_options` for the variants
/// (masks, raw-key pooling, per-head weights, causal). Throws
/// std::invalid_argument on inconsistent input.
template <class Backend, class Qt, class Kt, class W, class O>
void fastformer_attention(const Backend& backend, view<Qt, 3> q, view<Kt, 3> k, const fastformer_weights<W>& weights,
                          view<O, 3> out, const fastformer_options& opts = {}) {
  using T = std::remove_const_t<Qt>;
  static_assert(std::is_same_v<T, std::remove_const_t<Kt>>,
                "streamattn::fastformer_attention: q and k must have the same element type");
  detail::check_additive_tensor_types<Qt, O>();
  detail::check_additive_weight_type<T, W>();
  detail::check_additive_backend<Backend>();
  const view<const T, 3> qc = q;
  const auto params =
      detail::make_fastformer_params<T, W, O>("streamattn::fastformer_attention", qc, k, qc, false,
                                              weights, out, detail::settings_of(opts));
  fastformer_impl(backend, params);
}

/// Fastformer attention with a separate value tensor v (B, N, D): U = V ⊙ k̄
/// (the paper's form with its own value projection). The residual, when
/// enabled, still adds Q, as the official module does.
template <class Backend, class Qt, class Kt, class Vt, class W, class O>
void fastformer_attention(const Backend& backend, view<Qt, 3> q, view<Kt, 3> k, view<Vt, 3> v,
                          const fastformer_weights<W>& weights, view<O, 3> out, const fastformer_options& opts = {}) {
  using T = std::remove_const_t<Qt>;
  static_assert(std::is_same_v<T, std::remove_const_t<Kt>> && std::is_same_v<T, std::remove_const_t<Vt>>,
                "streamattn::fastformer_attention: q, k and v must have the same element type");
  detail::check_additive_tensor_types<Qt, O>();
  detail::check_additive_weight_type<T, W>();
  detail::check_additive_backend<Backend>();
  const auto params =
      detail::make_fastformer_params<T, W, O>("streamattn::fastformer_attention", q, k, v, true,
                                              weights, out, detail::settings_of(opts));
  fastformer_impl(backend, params);
}

// ---- The same entry points on the default backend (simd). ----

template <class X, class Wt, class Wb, class O>
void additive_pool(view<X, 3> x, view<Wt, 2> w, view<Wb, 1> w_bias, view<O, 2> out,
                   const additive_pool_options& opts = {}) {
  additive_pool(default_backend, x, w, w_bias, out, opts);
}

template <class X, class Wt, class O>
void additive_pool(view<X, 3> x, view<Wt, 2> w, view<O, 2> out, const additive_pool_options& opts = {}) {
  additive_pool(default_backend, x, w, out, opts);
}

template <class X, class Wt, class Wb, class O>
void additive_prefix_pool(view<X, 3> x, view<Wt, 2> w, view<Wb, 1> w_bias, view<O, 3> out,
                          const additive_pool_options& opts = {}) {
  additive_prefix_pool(default_backend, x, w, w_bias, out, opts);
}

template <class Qt, class Kt, class W, class O>
void fastformer_attention(view<Qt, 3> q, view<Kt, 3> k, const fastformer_weights<W>& weights, view<O, 3> out,
                          const fastformer_options& opts = {}) {
  fastformer_attention(default_backend, q, k, weights, out, opts);
}

template <class Qt, class Kt, class Vt, class W, class O>
void fastformer_attention(view<Qt, 3> q, view<Kt, 3> k, view<Vt, 3> v, const fastformer_weights<W>& weights,
                          view<O, 3> out, const fastformer_options& opts = {}) {
  fastformer_attention(default_backend, q, k, v, weights, out, opts);
}

}  // namespace streamattn
