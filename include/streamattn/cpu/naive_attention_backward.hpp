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
#include "../detail/head_rows.hpp"
#include "../detail/validate_attention.hpp"
#include "naive_attention.hpp"

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
    // This item's queries and key rows (fewer than nq and nk when packed),
    // and its keys: rows from `keys` on are not its keys: zero, never read.
    const index_t rows = p.queries_in(b), key_rows = p.key_rows_in(b), keys = p.keys_in(b);
    for (index_t kvh = 0; kvh < p.hk; ++kvh) {
      k.setZero();
      v.setZero();
      load_rows(k.data(), p.key_head(p.k, p.k_stride, b, kvh), p.k_stride, 0, keys, p.dim);
      load_rows(v.data(), p.key_head(p.v, p.v_stride, b, kvh), p.v_stride, 0, keys, p.dim_v);
      dk.setZero();
      dv.setZero();
      for (index_t h = kvh * p.group_size(); h < (kvh + 1) * p.group_size(); ++h) {
        // Rows past this item's queries stay zero: no weight, no gradient.
        q.setZero();
        dout.setZero();
        load_rows(q.data(), p.query_head(p.q, p.q_stride, b, h), p.q_stride, 0, rows, p.dim);
        load_rows(dout.data(), g.dout + g.dout_offset(b, 0, h), g.dout_stride, 0, rows, p.dim_v);
        weights.setZero();
        weights.topRows(rows).noalias() = A(p.scale) * (q.topRows(rows) * k.transpose());
        for (index_t i = 0; i < rows; ++i) naive_softmax_row<A>(p, b, h, i, weights, &slopes);
        d_scores.noalias() = dout * v.transpose();  // dP
        for (index_t i = 0; i < rows; ++i) {
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
        store_rows(p.query_head(g.dq, g.dq_stride, b, h), g.dq_stride, dq.data(), 0, rows, p.dim);
      }
      store_rows(p.key_head(g.dk, g.dk_stride, b, kvh), g.dk_stride, dk.data(), 0, key_rows, p.dim);
      store_rows(p.key_head(g.dv, g.dv_stride, b, kvh), g.dv_stride, dv.data(), 0, key_rows, p.dim_v);
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
  check_index_values("streamattn::attention_backward", g.fwd);
  naive_attention_backward<oracle_accum_t<T>>(g);
}

}  // namespace streamattn::detail
