// The scalar backend's backward pass: the streaming algorithm's gradients in
// plain loops, in two passes that each recompute the weights from the
// forward's lse, so nothing grows with the sequence length and no gradient
// element is ever summed into by two loops (deterministic, and ready to be
// split across threads without atomics):
//
//   1. per key/value head and block of keys: dK and dV of the block, summed
//      over every query (and every query head of the group) that sees it;
//   2. per query row: dQ, and the bias gradient.
//
// Each pass recomputes q.k and dout.v, so this costs seven (Nq x Nk x D)
// products where FlashAttention-2's single pass costs five, and saves its
// (Nq x Hq x D) float accumulator for dQ.
#pragma once

#include <algorithm>
#include <vector>

#include "../backend.hpp"
#include "../detail/attention_backward_params.hpp"
#include "../detail/element.hpp"
#include "../detail/head_rows.hpp"
#include "../detail/softmax_gradient_row.hpp"
#include "../detail/validate_attention.hpp"

namespace streamattn::detail {

/// Pass 1: dK and dV of keys [first, last) of key/value head `kvh` of batch
/// item b, summed in `dk` (rows of D) and `dv` (rows of Dv), then written.
template <class Acc, class T, class To, class G>
void key_block_gradients(const attention_backward_params<T, To, G>& g, index_t b, index_t kvh, index_t first,
                         index_t last, std::vector<Acc>& dk, std::vector<Acc>& dv) {
  const auto& p = g.fwd;
  std::fill(dk.begin(), dk.end(), Acc(0));
  std::fill(dv.begin(), dv.end(), Acc(0));
  const visibility visible = p.visible_in(b);
  for (index_t h = kvh * p.group_size(); h < (kvh + 1) * p.group_size(); ++h)
    for (index_t i = 0; i < visible.nq; ++i) {
      const key_range keys = visible.keys_of(i);
      const index_t begin = std::max(keys.begin, first), end = std::min(keys.end, last);
      if (begin >= end) continue;
      const softmax_gradient_row<Acc, T, To, G> row(g, b, h, i);
      if (!row.sees_keys()) continue;
      for (index_t j = begin; j < end; ++j) {
        const pair_gradient<Acc> pair = row.at(j);
        if (pair.weight == Acc(0)) continue;
        Acc* dk_row = dk.data() + (j - first) * p.dim;
        Acc* dv_row = dv.data() + (j - first) * p.dim_v;
        for (index_t d = 0; d < p.dim_v; ++d) dv_row[d] += pair.weight * row.dout(d);
        for (index_t d = 0; d < p.dim; ++d) dk_row[d] += pair.d_dot * row.q(d);
      }
    }
  store_rows(p.key_head(g.dk, g.dk_stride, b, kvh), g.dk_stride, dk.data(), first, last - first, p.dim);
  store_rows(p.key_head(g.dv, g.dv_stride, b, kvh), g.dv_stride, dv.data(), first, last - first, p.dim_v);
}

/// Pass 2: dQ of query row i of head h of batch item b, and its bias gradient.
template <class Acc, class T, class To, class G>
void query_row_gradients(const attention_backward_params<T, To, G>& g, index_t b, index_t h, index_t i,
                         std::vector<Acc>& dq) {
  const auto& p = g.fwd;
  std::fill(dq.begin(), dq.end(), Acc(0));
  const softmax_gradient_row<Acc, T, To, G> row(g, b, h, i);
  if (row.sees_keys()) {
    const key_range keys = p.visible_in(b).keys_of(i);
    for (index_t j = keys.begin; j < keys.end; ++j) {
      const pair_gradient<Acc> pair = row.at(j);
      if (pair.weight == Acc(0)) continue;
      for (index_t d = 0; d < p.dim; ++d) dq[d] += pair.d_dot * row.k(j, d);
      if (g.dbias.data) g.dbias_at(b, h, i, j) += static_cast<float>(pair.d_score);
    }
  }
  store_rows(p.query_head(g.dq, g.dq_stride, b, h), g.dq_stride, dq.data(), i, 1, p.dim);
}

template <class T, class To, class G>
void attention_backward_impl(scalar_t, const attention_backward_params<T, To, G>& g) {
  using Acc = accum_t<T>;
  const auto& p = g.fwd;
  check_index_values("streamattn::attention_backward", p);
  g.zero_dbias();

  const index_t block = g.key_block();
  std::vector<Acc> dk(static_cast<std::size_t>(block * p.dim)), dv(static_cast<std::size_t>(block * p.dim_v));
  for (index_t b = 0; b < p.batch; ++b)
    for (index_t kvh = 0; kvh < p.hk; ++kvh)
      for (index_t first = 0, rows = p.key_rows_in(b); first < rows; first += block)
        key_block_gradients(g, b, kvh, first, std::min(first + block, rows), dk, dv);

  std::vector<Acc> dq(static_cast<std::size_t>(p.dim));
  for (index_t b = 0; b < p.batch; ++b)
    for (index_t h = 0; h < p.hq; ++h)
      for (index_t i = 0; i < p.queries_in(b); ++i) query_row_gradients(g, b, h, i, dq);
}

}  // namespace streamattn::detail
