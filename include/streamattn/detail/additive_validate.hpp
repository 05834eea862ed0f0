// Validates the arguments of the additive-pooling and Fastformer entry points
// once and fills the kernel parameters. Works on a plain settings struct so
// that this header needs none of the public option types.
#pragma once

#include <cmath>
#include <optional>

#include "../fastformer_weights.hpp"
#include "../tensor.hpp"
#include "additive_params.hpp"
#include "check.hpp"

namespace streamattn::detail {

/// The public options flattened (see additive.hpp for their meaning).
struct additive_settings {
  std::optional<float> scale;
  view<const bool, 2> mask{};
  bool exclude_masked = false;
  bool per_head = false;
  int threads = 0;
  bool pool_raw_keys = false;
  bool causal = false;
  bool residual = true;
};

template <class T, int R>
bool is_absent(const view<T, R>& v) {
  return v.data == nullptr && v.size() == 0;
}

/// Sizes from the input (B, N, D) and the number of heads H (rows of the
/// score weights); D must be a multiple of H.
template <class T, class W>
additive_shape make_additive_shape(const char* fn, const char* x_name, const view<const T, 3>& x,
                                   const char* w_name, const view<const W, 2>& w, bool per_head) {
  check_view(fn, x_name, x);
  check_view(fn, w_name, w);
  additive_shape s;
  s.batch = x.extent(0);
  s.tokens = x.extent(1);
  s.dim = x.extent(2);
  s.heads = w.extent(0);
  s.per_head = per_head;
  if (s.heads == 0) fail(fn, w_name, " has shape ", shape_string(w), ": at least one head (row) is needed");
  if (s.dim % s.heads != 0)
    fail(fn, x_name, " has D = ", s.dim, " features, which is not a multiple of the ", s.heads, " heads of ", w_name,
         " (shape ", shape_string(w), ")");
  s.head_dim = s.dim / s.heads;
  return s;
}

/// Checks one stage's score weights against the shape and returns them.
template <class W>
score_weights_ref<W> make_score_weights(const char* fn, const char* name, const view<const W, 2>& w,
                                        const char* bias_name, const view<const W, 1>& bias,
                                        const additive_shape& s) {
  check_view(fn, name, w);
  if (w.extent(0) != s.heads)
    fail(fn, name, " has ", w.extent(0), " heads (rows) but the other score weights have ", s.heads);
  if (w.extent(1) != s.weight_length()) {
    if (s.per_head)
      fail(fn, name, " has shape ", shape_string(w), " but per-head weights (heads, D/heads) = (", s.heads, ", ",
           s.head_dim, ") were expected (weight_layout = per_head)");
    fail(fn, name, " has shape ", shape_string(w), " but dense weights (heads, D) = (", s.heads, ", ", s.dim,
         ") were expected (set weight_layout = per_head for (heads, D/heads) weights)");
  }
  score_weights_ref<W> r;
  r.data = w.data;
  r.head_stride = w.stride(0);
  r.feature_stride = w.stride(1);
  if (!is_absent(bias)) {
    check_shape(fn, bias_name, bias, {s.heads}, "(heads) =");
    r.bias = bias.data;
    r.bias_stride = bias.stride(0);
  }
  return r;
}

/// The (B, N) keep-mask; an extent of 1 broadcasts (stride 0).
inline keep_mask_ref make_keep_mask(const char* fn, const additive_settings& s, const additive_shape& shape) {
  keep_mask_ref m;
  m.exclude = s.exclude_masked;
  if (is_absent(s.mask)) return m;
  check_view(fn, "mask", s.mask);
  const index_t expected[2] = {shape.batch, shape.tokens};
  index_t strides[2] = {0, 0};
  for (int a = 0; a < 2; ++a) {
    if (s.mask.extent(a) == expected[a]) {
      strides[a] = expected[a] == 1 ? 0 : s.mask.stride(a);
    } else if (s.mask.extent(a) == 1) {
      strides[a] = 0;
    } else {
      fail(fn, "mask has shape ", shape_string(s.mask), " which neither matches nor broadcasts to (batch, tokens) = (",
           shape.batch, ", ", shape.tokens, ")");
    }
  }
  m.data = s.mask.data;
  m.batch_stride = strides[0];
  m.token_stride = strides[1];
  return m;
}

inline double make_scale(const char* fn, const additive_settings& s, const additive_shape& shape) {
  if (s.scale) {
    check_finite(fn, "scale", *s.scale);
    return static_cast<double>(*s.scale);
  }
  if (shape.head_dim == 0) {
    if (shape.tokens != 0 && shape.batch != 0)
      fail(fn, "the head size D/heads is 0 and no scale is given (the default 1/sqrt(D/heads) is undefined)");
    return 1.0;
  }
  return 1.0 / std::sqrt(static_cast<double>(shape.head_dim));
}

inline int make_threads(const char* fn, const additive_settings& s) {
  if (s.threads < 0) fail(fn, "threads must be >= 0 (0 = all hardware threads), got ", s.threads);
  return s.threads;
}

template <class T>
token_operand<T> make_token_operand(const view<T, 3>& v) {
  return {v.data, v.stride(0), v.stride(1), v.stride(2)};
}

/// `additive_pool` (causal = false, out (B, D)) and `additive_prefix_pool`
/// (causal = true, prefix (B, N, D)).
template <class T, class W, class Tout>
additive_pool_params<T, W, Tout> make_additive_pool_params(const char* fn, const view<const T, 3>& x,
                                                           const view<const W, 2>& w, const view<const W, 1>& w_bias,
                                                           bool causal, const view<Tout, 3>& prefix,
                                                           const view<Tout, 2>& out, const additive_settings& s) {
  additive_pool_params<T, W, Tout> p;
  p.shape = make_additive_shape(fn, "x", x, "w", w, s.per_head);
  p.x = make_token_operand(x);
  p.w = make_score_weights(fn, "w", w, "w_bias", w_bias, p.shape);
  p.scale = make_scale(fn, s, p.shape);
  p.mask = make_keep_mask(fn, s, p.shape);
  p.threads = make_threads(fn, s);
  p.causal = causal;
  if (causal) {
    check_shape(fn, "out", prefix, {p.shape.batch, p.shape.tokens, p.shape.dim}, "(batch, tokens, D) =");
    check_no_alias(fn, "out", prefix, "x", x);
    check_no_alias(fn, "out", prefix, "w", w);
    check_no_alias(fn, "out", prefix, "w_bias", w_bias);
    check_no_alias(fn, "out", prefix, "mask", s.mask);
    p.prefix = make_token_operand(prefix);
  } else {
    check_shape(fn, "out", out, {p.shape.batch, p.shape.dim}, "(batch, D) =");
    check_no_alias(fn, "out", out, "x", x);
    check_no_alias(fn, "out", out, "w", w);
    check_no_alias(fn, "out", out, "w_bias", w_bias);
    check_no_alias(fn, "out", out, "mask", s.mask);
    p.out = out.data;
    p.out_batch_stride = out.stride(0);
    p.out_feature_stride = out.stride(1);
  }
  return p;
}

template <class T, class W, class Tout>
fastformer_params<T, W, Tout> make_fastformer_params(const char* fn, const view<const T, 3>& q,
                                                     const view<const T, 3>& k, const view<const T, 3>& v,
                                                     bool separate_v, const fastformer_weights<W>& wv,
                                                     const view<Tout, 3>& out, const additive_settings& s) {
  fastformer_params<T, W, Tout> p;
  p.shape = make_additive_shape(fn, "q", q, "query_att", wv.query_att, s.per_head);
  const std::array<index_t, 3> bnd{p.shape.batch, p.shape.tokens, p.shape.dim};
  check_shape(fn, "k", k, bnd, "q's shape (batch, tokens, D) =");
  if (separate_v) check_shape(fn, "v", v, bnd, "q's shape (batch, tokens, D) =");
  check_shape(fn, "out", out, bnd, "q's shape (batch, tokens, D) =");
  p.q = make_token_operand(q);
  p.k = make_token_operand(k);
  p.v = make_token_operand(separate_v ? v : q);
  p.out = make_token_operand(out);

  p.query_att = make_score_weights(fn, "query_att", wv.query_att, "query_att_bias", wv.query_att_bias, p.shape);
  p.key_att = make_score_weights(fn, "key_att", wv.key_att, "key_att_bias", wv.key_att_bias, p.shape);
  if (!is_absent(wv.transform)) {
    check_shape(fn, "transform", wv.transform, {p.shape.dim, p.shape.dim}, "(D, D) =");
    p.transform = wv.transform.data;
    p.transform_row_stride = wv.transform.stride(0);
    p.transform_col_stride = wv.transform.stride(1);
    if (!is_absent(wv.transform_bias)) {
      check_shape(fn, "transform_bias", wv.transform_bias, {p.shape.dim}, "(D) =");
      p.transform_bias = wv.transform_bias.data;
      p.transform_bias_stride = wv.transform_bias.stride(0);
    }
  } else if (!is_absent(wv.transform_bias)) {
    fail(fn, "transform_bias is set (shape ", shape_string(wv.transform_bias), ") but transform is not");
  }

  p.scale = make_scale(fn, s, p.shape);
  p.mask = make_keep_mask(fn, s, p.shape);
  p.threads = make_threads(fn, s);
  p.pool_raw_keys = s.pool_raw_keys;
  p.causal = s.causal;
  p.residual = s.residual;

  check_no_alias(fn, "out", out, "q", q);
  check_no_alias(fn, "out", out, "k", k);
  if (separate_v) check_no_alias(fn, "out", out, "v", v);
  check_no_alias(fn, "out", out, "query_att", wv.query_att);
  check_no_alias(fn, "out", out, "query_att_bias", wv.query_att_bias);
  check_no_alias(fn, "out", out, "key_att", wv.key_att);
  check_no_alias(fn, "out", out, "key_att_bias", wv.key_att_bias);
  check_no_alias(fn, "out", out, "transform", wv.transform);
  check_no_alias(fn, "out", out, "transform_bias", wv.transform_bias);
  check_no_alias(fn, "out", out, "mask", s.mask);
  return p;
}

}  // namespace streamattn::detail
