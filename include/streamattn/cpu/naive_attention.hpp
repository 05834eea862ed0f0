// The naive backend: the O(N^2)-memory reference every kernel is tested
// against. It materialises the whole (Nq x Nk) score matrix of a head, one
// precision wider than the fast paths, and uses Eigen's GEMM for the two
// products, which is what a user without this library would write.
#pragma once

#include <vector>

#include <Eigen/Core>

#include "../backend.hpp"
#include "../detail/attention_params.hpp"
#include "../detail/element.hpp"
#include "../detail/head_rows.hpp"
#include "../detail/math.hpp"
#include "../detail/score_terms.hpp"
#include "../detail/validate_attention.hpp"

namespace streamattn::detail {

/// Row i of `scores` holds the scaled dot products scale * q_i.k_j; turns it
/// into the row's softmax weights (all zero for a row that sees no key) and
/// returns its log-sum-exp (-inf for such a row). With `slopes`, also stores
/// d(final score)/d(scaled dot product) of each key there (softcap's slope).
/// Shared by the naive forward and backward, so both see the same weights.
template <class A, class Matrix, class T, class Tout, class Tkv>
A naive_softmax_row(const attention_params<T, Tout, Tkv>& p, index_t b, index_t h, index_t i, Matrix& scores,
                    Matrix* slopes = nullptr) {
  const score_row<A> terms = make_score_row<A>(p, b, h, i);
  const key_range visible = p.visible_in(b).keys_of(i);
  A row_max = neg_inf<A>();
  for (index_t j = 0; j < p.nk; ++j) {
    A s = neg_inf<A>(), slope = A(1);
    if (j >= visible.begin && j < visible.end) s = terms.apply(scores(i, j), j, slope);
    scores(i, j) = s;
    if (slopes) (*slopes)(i, j) = slope;
    if (s > row_max) row_max = s;
  }
  A row_sum = 0;
  for (index_t j = 0; j < p.nk; ++j) {
    // exp(-inf - finite) is exactly 0; a row with no finite score keeps
    // all-zero weights instead of computing (-inf) - (-inf) = NaN.
    scores(i, j) = row_max == neg_inf<A>() ? A(0) : exp_(scores(i, j) - row_max);
    row_sum += scores(i, j);
  }
  if (row_sum > A(0)) scores.row(i) /= row_sum;
  return row_sum > A(0) ? row_max + log_(row_sum) : row_max;
}

/// The naive algorithm computing in precision `A`. Tests also run it with
/// A = float as "the float32 computation a user would write".
template <class A, class T, class Tout, class Tkv>
void naive_attention(const attention_params<T, Tout, Tkv>& p) {
  using matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  matrix q(p.nq, p.dim), k(p.nk, p.dim), v(p.nk, p.dim_v), scores(p.nq, p.nk), out(p.nq, p.dim_v);

  for (index_t b = 0; b < p.batch; ++b) {
    // This item's queries (fewer than nq when packed), and its keys: with
    // key_lengths or packing, keys from `keys` on are not this item's; their
    // rows stay zero (never read) and their scores are masked.
    const index_t rows = p.queries_in(b), keys = p.keys_in(b);
    for (index_t h = 0; h < p.hq; ++h) {
      const index_t kvh = p.kv_head_of(h);
      load_rows(q.data(), p.query_head(p.q, p.q_stride, b, h), p.q_stride, 0, rows, p.dim);
      k.setZero();
      v.setZero();
      load_key_rows(k.data(), p, false, b, kvh, 0, keys);
      load_key_rows(v.data(), p, true, b, kvh, 0, keys);
      scores.topRows(rows).noalias() = A(p.scale) * (q.topRows(rows) * k.transpose());
      for (index_t i = 0; i < rows; ++i) {
        const A lse = naive_softmax_row<A>(p, b, h, i, scores);
        if (p.lse) *lse_at(p, b, h, i) = static_cast<float>(lse);
      }
      out.topRows(rows).noalias() = scores.topRows(rows) * v;
      store_rows(p.query_head(p.out, p.out_stride, b, h), p.out_stride, out.data(), 0, rows, p.dim_v);
    }
  }
}

template <class T, class Tout, class Tkv>
void attention_impl(naive_t, const attention_params<T, Tout, Tkv>& p) {
  check_index_values("streamattn::attention", p);
  naive_attention<oracle_accum_t<T>>(p);
}

}  // namespace streamattn::detail
