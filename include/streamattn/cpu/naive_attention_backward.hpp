// The naive backend's backward pass: the test oracle for gradients. Per
// (batch item, head) it materialises the score, weight and gradient matrices
// one precision wider than the fast paths and differentiates the forward
// exactly as written:
//
//     P  = softmax(S),  dV = P^T dO,  dP = dO V^T,
//     dS = P * (dP - rowsum(P * dP)),  dQ = scale (dS * slope) K,  dK = scale (dS * slope)^T Q
//
// It recomputes the softmax from scratch and ignores the forward's out and
// lse (it only validates them), so it is the gradient of the function itself,
// not of whatever a forward kernel wrote.
#pragma once

#include <vector>

#include <Eigen/Core>

#include "../backend.hpp"
#include "../detail/attention_backward_params.hpp"
#include "../detail/element.hpp"
#include "../detail/math.hpp"
#include "../detail/score_terms.hpp"
#include "../detail/validate_attention.hpp"

namespace streamattn::detail {

template <class A, class T, class To, class G>
void naive_attention_backward(const attention_backward_params<T, To, G>& g) {
  using matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto& p = g.fwd;
  matrix q(p.nq, p.dim), k(p.nk, p.dim), v(p.nk, p.dim_v), dout(p.nq, p.dim_v);
  matrix weights(p.nq, p.nk), slopes(p.nq, p.nk), d_scores(p.nq, p.nk), dq(p.nq, p.dim), dk(p.nk, p.dim),
      dv(p.nk, p.dim_v);
  // The bias gradient in precision A, indexed like the caller's dbias.
  const view<float, 4>& dbias = g.dbias;
  std::vector<A> dbias_sum(dbias.data ? static_cast<std::size_t>(dbias.size()) : 0, A(0));
  auto dbias_index = [&](index_t b, index_t h, index_t i, index_t j) {
    const index_t at[] = {b, h, i, j};
    index_t flat = 0;
    for (int a = 0; a < 4; ++a) flat = flat * dbias.extent(a) + (dbias.extent(a) == 1 ? 0 : at[a]);
    return static_cast<std::size_t>(flat);
  };

  for (index_t b = 0; b < p.batch; ++b) {
    const visibility visible_keys = p.visible_in(b);
    const index_t keys = visible_keys.nk;  // rows from here on are not this item's: zero, never read
    for (index_t kvh = 0; kvh < p.hk; ++kvh) {
      k.setZero();
      v.setZero();
      for (index_t j = 0; j < keys; ++j) {
        for (index_t d = 0; d < p.dim; ++d)
          k(j, d) =
              convert<A>(p.k[b * p.k_stride.batch + j * p.k_stride.seq + kvh * p.k_stride.head + d * p.k_stride.dim]);
        for (index_t d = 0; d < p.dim_v; ++d)
          v(j, d) =
              convert<A>(p.v[b * p.v_stride.batch + j * p.v_stride.seq + kvh * p.v_stride.head + d * p.v_stride.dim]);
      }
      dk.setZero();
      dv.setZero();
      for (index_t h = kvh * p.group_size(); h < (kvh + 1) * p.group_size(); ++h) {
        for (index_t i = 0; i < p.nq; ++i) {
          for (index_t d = 0; d < p.dim; ++d)
            q(i, d) =
                convert<A>(p.q[b * p.q_stride.batch + i * p.q_stride.seq + h * p.q_stride.head + d * p.q_stride.dim]);
          for (index_t d = 0; d < p.dim_v; ++d)
            dout(i, d) = convert<A>(g.dout[g.dout_offset(b, i, h) + d * g.dout_stride.dim]);
        }
        weights.noalias() = A(p.scale) * (q * k.transpose());
        for (index_t i = 0; i < p.nq; ++i) {
          const score_row<A> terms = make_score_row<A>(p, b, h, i);
          const key_range visible = visible_keys.keys_of(i);
          A row_max = neg_inf<A>();
          for (index_t j = 0; j < p.nk; ++j) {
            A s = neg_inf<A>(), slope = A(1);
            if (j >= visible.begin && j < visible.end) s = terms.apply(weights(i, j), j, slope);
            weights(i, j) = s;
            slopes(i, j) = slope;
            if (s > row_max) row_max = s;
          }
          A row_sum = 0;
          for (index_t j = 0; j < p.nk; ++j) {
            weights(i, j) = row_max == neg_inf<A>() ? A(0) : exp_(weights(i, j) - row_max);
            row_sum += weights(i, j);
          }
          if (row_sum > A(0)) weights.row(i) /= row_sum;
        }
        d_scores.noalias() = dout * v.transpose();  // dP
        for (index_t i = 0; i < p.nq; ++i) {
          const A delta = weights.row(i).dot(d_scores.row(i));
          for (index_t j = 0; j < p.nk; ++j) {
            const A d_score = weights(i, j) * (d_scores(i, j) - delta);
            if (dbias.data) dbias_sum[dbias_index(b, h, i, j)] += d_score;
            d_scores(i, j) = d_score * slopes(i, j) * A(p.scale);  // now dL/d(q.k)
          }
        }
        dq.noalias() = d_scores * k;
        dk.noalias() += d_scores.transpose() * q;
        dv.noalias() += weights.transpose() * dout;
        for (index_t i = 0; i < p.nq; ++i)
          for (index_t d = 0; d < p.dim; ++d)
            g.dq[b * g.dq_stride.batch + i * g.dq_stride.seq + h * g.dq_stride.head + d * g.dq_stride.dim] =
                convert<G>(dq(i, d));
      }
      for (index_t j = 0; j < p.nk; ++j) {
        for (index_t d = 0; d < p.dim; ++d)
          g.dk[b * g.dk_stride.batch + j * g.dk_stride.seq + kvh * g.dk_stride.head + d * g.dk_stride.dim] =
              convert<G>(dk(j, d));
        for (index_t d = 0; d < p.dim_v; ++d)
          g.dv[b * g.dv_stride.batch + j * g.dv_stride.seq + kvh * g.dv_stride.head + d * g.dv_stride.dim] =
              convert<G>(dv(j, d));
      }
    }
  }
  if (dbias.data)
    for (index_t b = 0; b < dbias.extent(0); ++b)
      for (index_t h = 0; h < dbias.extent(1); ++h)
        for (index_t i = 0; i < dbias.extent(2); ++i)
          for (index_t j = 0; j < dbias.extent(3); ++j)
            dbias(b, h, i, j) = static_cast<float>(dbias_sum[dbias_index(b, h, i, j)]);
}

template <class T, class To, class G>
void attention_backward_impl(naive_t, const attention_backward_params<T, To, G>& g) {
  check_key_length_values("streamattn::attention_backward", g.fwd);
  naive_attention_backward<oracle_accum_t<T>>(g);
}

}  // namespace streamattn::detail
