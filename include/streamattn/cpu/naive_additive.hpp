// The naive backend of additive pooling and Fastformer: the module written
// out literally, one precision wider than the fast paths. Every intermediate
// of the official forward pass (scores, softmax weights, P = K ⊙ q̄, U, Y) is
// materialised as an (N x D) or (N x H) matrix, the score bias and the
// -10000 mask term are added as written, and the causal variant builds the
// (N x N) prefix-softmax weight matrix of every head from its definition.
// The test oracle, and the "what users would write" baseline in benchmarks.
#pragma once

#include <cmath>
#include <vector>

#include <Eigen/Core>

#include "../backend.hpp"
#include "../detail/additive_params.hpp"
#include "../detail/element.hpp"
#include "../detail/math.hpp"

namespace streamattn::detail::naive_additive {

template <class A>
using matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class A>
using row_vector = Eigen::Matrix<A, 1, Eigen::Dynamic>;

/// The tokens of sequence b as an (N x D) matrix in precision A.
template <class A, class T>
matrix<A> load(const token_operand<const T>& x, const additive_shape& s, index_t b) {
  matrix<A> m(s.tokens, s.dim);
  for (index_t j = 0; j < s.tokens; ++j)
    for (index_t f = 0; f < s.dim; ++f) m(j, f) = convert<A>(x.at(b, j, f));
  return m;
}

/// The score weights as a dense (H x D) matrix: per-head rows are placed on
/// their own slice with zeros elsewhere, which is exactly what they mean.
template <class A, class W>
matrix<A> dense_weights(const score_weights_ref<W>& w, const additive_shape& s) {
  matrix<A> m = matrix<A>::Zero(s.heads, s.dim);
  for (index_t h = 0; h < s.heads; ++h)
    for (index_t f = 0; f < s.weight_length(); ++f) m(h, s.weight_offset(h) + f) = static_cast<A>(w.at(h, f));
  return m;
}

/// scores (N x H) = scale * (X W^T + b) + mask term: -10000 for a padded
/// token in additive mode, -inf (weight 0) in exclude mode.
template <class A, class W>
matrix<A> scores(const matrix<A>& x, const score_weights_ref<W>& w, const additive_shape& s, double scale,
                 const keep_mask_ref& mask, index_t b) {
  const matrix<A> wd = dense_weights<A>(w, s);
  matrix<A> sc = x * wd.transpose();
  for (index_t j = 0; j < s.tokens; ++j) {
    for (index_t h = 0; h < s.heads; ++h) {
      A v = (sc(j, h) + static_cast<A>(w.bias_of(h))) * static_cast<A>(scale);
      if (!mask.keep(b, j)) v = mask.exclude ? neg_inf<A>() : v + static_cast<A>(additive_mask_penalty);
      sc(j, h) = v;
    }
  }
  return sc;
}

/// Softmax over tokens (each column of `sc`) of the tokens [0, end);
/// a column with no finite score gets all-zero weights.
template <class A>
row_vector<A> softmax_weights(const matrix<A>& sc, index_t h, index_t end) {
  row_vector<A> weights = row_vector<A>::Zero(sc.rows());
  A top = neg_inf<A>();
  for (index_t j = 0; j < end; ++j) top = sc(j, h) > top ? sc(j, h) : top;
  if (top == neg_inf<A>()) return weights;
  A total = 0;
  for (index_t j = 0; j < end; ++j) {
    weights(j) = exp_(sc(j, h) - top);
    total += weights(j);
  }
  return weights / total;
}

/// Global pooling: pooled[h-slice] = softmax_j(sc[:, h]) . values[:, h-slice].
template <class A>
row_vector<A> pool(const matrix<A>& sc, const matrix<A>& values, const additive_shape& s) {
  row_vector<A> pooled(s.dim);
  for (index_t h = 0; h < s.heads; ++h) {
    const row_vector<A> weights = softmax_weights(sc, h, s.tokens);
    pooled.segment(h * s.head_dim, s.head_dim) = weights * values.middleCols(h * s.head_dim, s.head_dim);
  }
  return pooled;
}

/// Prefix pooling from the definition: row t of the (N x N) weight matrix of
/// head h is the softmax over tokens j <= t; pooled = weights * values.
template <class A>
matrix<A> prefix_pool(const matrix<A>& sc, const matrix<A>& values, const additive_shape& s) {
  matrix<A> pooled(s.tokens, s.dim);
  matrix<A> weights(s.tokens, s.tokens);
  for (index_t h = 0; h < s.heads; ++h) {
    for (index_t t = 0; t < s.tokens; ++t) weights.row(t) = softmax_weights(sc, h, t + 1);
    pooled.middleCols(h * s.head_dim, s.head_dim) = weights * values.middleCols(h * s.head_dim, s.head_dim);
  }
  return pooled;
}

}  // namespace streamattn::detail::naive_additive

namespace streamattn::detail {

template <class A, class T, class W, class Tout>
void naive_additive_pool(const additive_pool_params<T, W, Tout>& p) {
  using namespace naive_additive;
  const additive_shape& s = p.shape;
  for (index_t b = 0; b < s.batch; ++b) {
    const matrix<A> x = load<A>(p.x, s, b);
    const matrix<A> sc = scores(x, p.w, s, p.scale, p.mask, b);
    if (p.causal) {
      const matrix<A> pooled = prefix_pool(sc, x, s);
      for (index_t t = 0; t < s.tokens; ++t)
        for (index_t f = 0; f < s.dim; ++f) p.prefix.at(b, t, f) = convert<Tout>(pooled(t, f));
    } else {
      const row_vector<A> pooled = pool(sc, x, s);
      for (index_t f = 0; f < s.dim; ++f)
        p.out[b * p.out_batch_stride + f * p.out_feature_stride] = convert<Tout>(pooled(f));
    }
  }
}

/// The official forward pass in precision A (and its causal recurrence).
template <class A, class T, class W, class Tout>
void naive_fastformer(const fastformer_params<T, W, Tout>& p) {
  using namespace naive_additive;
  const additive_shape& s = p.shape;
  for (index_t b = 0; b < s.batch; ++b) {
    const matrix<A> q = load<A>(p.q, s, b);
    const matrix<A> k = load<A>(p.k, s, b);
    const matrix<A> v = load<A>(p.v, s, b);
    const matrix<A> query_scores = scores(q, p.query_att, s, p.scale, p.mask, b);

    // P = K ⊙ q̄, with q̄ of the whole sequence, or of prefix j for row j.
    matrix<A> global_query(s.tokens, s.dim);
    if (p.causal) {
      global_query = prefix_pool(query_scores, q, s);
    } else {
      const row_vector<A> qbar = pool(query_scores, q, s);
      for (index_t j = 0; j < s.tokens; ++j) global_query.row(j) = qbar;
    }
    const matrix<A> pk = k.cwiseProduct(global_query);
    const matrix<A> key_scores = scores(pk, p.key_att, s, p.scale, p.mask, b);
    const matrix<A>& pooled_values = p.pool_raw_keys ? k : pk;

    matrix<A> global_key(s.tokens, s.dim);
    if (p.causal) {
      global_key = prefix_pool(key_scores, pooled_values, s);
    } else {
      const row_vector<A> kbar = pool(key_scores, pooled_values, s);
      for (index_t j = 0; j < s.tokens; ++j) global_key.row(j) = kbar;
    }
    matrix<A> y = v.cwiseProduct(global_key);  // U
    if (p.has_transform()) {
      matrix<A> wt(s.dim, s.dim);
      row_vector<A> bt(s.dim);
      for (index_t o = 0; o < s.dim; ++o) {
        bt(o) = static_cast<A>(p.transform_bias_of(o));
        for (index_t i = 0; i < s.dim; ++i) wt(o, i) = static_cast<A>(p.transform_at(o, i));
      }
      matrix<A> transformed = y * wt.transpose();
      transformed.rowwise() += bt;
      if (p.residual) transformed += q;
      y = transformed;
    }
    for (index_t j = 0; j < s.tokens; ++j)
      for (index_t f = 0; f < s.dim; ++f) p.out.at(b, j, f) = convert<Tout>(y(j, f));
  }
}

template <class T, class W, class Tout>
void additive_pool_impl(naive_t, const additive_pool_params<T, W, Tout>& p) {
  naive_additive_pool<oracle_accum_t<T>>(p);
}

template <class T, class W, class Tout>
void fastformer_impl(naive_t, const fastformer_params<T, W, Tout>& p) {
  naive_fastformer<oracle_accum_t<T>>(p);
}

}  // namespace streamattn::detail
