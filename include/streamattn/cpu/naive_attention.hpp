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
#include "../detail/math.hpp"
#include "../detail/score_terms.hpp"
#include "../detail/validate_attention.hpp"

namespace streamattn::detail {

/// The naive algorithm computing in precision `A`. Tests also run it with
/// A = float as "the float32 computation a user would write".
template <class A, class T, class Tout>
void naive_attention(const attention_params<T, Tout>& p) {
  using matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  matrix q(p.nq, p.dim), k(p.nk, p.dim), v(p.nk, p.dim_v), scores(p.nq, p.nk), out(p.nq, p.dim_v);

  for (index_t b = 0; b < p.batch; ++b) {
    // With key_lengths, keys from `keys` on are not this item's: their rows
    // stay zero (never read) and their scores are masked below.
    const visibility visible_keys = p.visible_in(b);
    const index_t keys = visible_keys.nk;
    for (index_t h = 0; h < p.hq; ++h) {
      const index_t kvh = p.kv_head_of(h);
      for (index_t i = 0; i < p.nq; ++i)
        for (index_t d = 0; d < p.dim; ++d)
          q(i, d) = convert<A>(p.q[b * p.q_stride.batch + i * p.q_stride.seq + h * p.q_stride.head +
                                   d * p.q_stride.dim]);
      k.setZero();
      v.setZero();
      for (index_t j = 0; j < keys; ++j) {
        for (index_t d = 0; d < p.dim; ++d)
          k(j, d) = convert<A>(p.k[b * p.k_stride.batch + j * p.k_stride.seq + kvh * p.k_stride.head +
                                   d * p.k_stride.dim]);
        for (index_t d = 0; d < p.dim_v; ++d)
          v(j, d) = convert<A>(p.v[b * p.v_stride.batch + j * p.v_stride.seq + kvh * p.v_stride.head +
                                   d * p.v_stride.dim]);
      }
      scores.noalias() = A(p.scale) * (q * k.transpose());

      for (index_t i = 0; i < p.nq; ++i) {
        const score_row<A> terms = make_score_row<A>(p, b, h, i);
        const key_range visible = visible_keys.keys_of(i);
        A row_max = neg_inf<A>();
        for (index_t j = 0; j < p.nk; ++j) {
          A s = neg_inf<A>();
          if (j >= visible.begin && j < visible.end) s = terms.apply(scores(i, j), j);
          scores(i, j) = s;
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
        if (p.lse) *lse_at(p, b, h, i) = static_cast<float>(row_sum > A(0) ? row_max + log_(row_sum) : row_max);
      }
      out.noalias() = scores * v;

      for (index_t i = 0; i < p.nq; ++i)
        for (index_t d = 0; d < p.dim_v; ++d)
          p.out[b * p.out_stride.batch + i * p.out_stride.seq + h * p.out_stride.head + d * p.out_stride.dim] =
              convert<Tout>(out(i, d));
    }
  }
}

template <class T, class Tout>
void attention_impl(naive_t, const attention_params<T, Tout>& p) {
  check_key_length_values("streamattn::attention", p);
  naive_attention<oracle_accum_t<T>>(p);
}

}  // namespace streamattn::detail
