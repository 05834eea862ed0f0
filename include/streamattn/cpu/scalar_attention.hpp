// The scalar backend: the streaming algorithm in plain loops. One query row at
// a time walks its visible keys, feeding each score into an online softmax
// state, so nothing grows with the sequence length. Single-threaded.
#pragma once

#include <vector>

#include "../backend.hpp"
#include "../detail/attention_params.hpp"
#include "../detail/blocked_dot.hpp"
#include "../detail/element.hpp"
#include "../detail/score_terms.hpp"
#include "../detail/validate_attention.hpp"
#include "../online_softmax.hpp"

namespace streamattn::detail {

template <class T, class Tout>
void attention_impl(scalar_t, const attention_params<T, Tout>& p) {
  using Acc = accum_t<T>;
  check_index_values("streamattn::attention", p);
  std::vector<Acc> accumulator(static_cast<std::size_t>(p.dim_v));

  for (index_t b = 0; b < p.batch; ++b) {
    const visibility visible = p.visible_in(b);  // aligned to this item's queries and keys
    for (index_t h = 0; h < p.hq; ++h) {
      const index_t kvh = p.kv_head_of(h);
      for (index_t i = 0; i < visible.nq; ++i) {
        const T* q_row = p.query_head(p.q, p.q_stride, b, h) + i * p.q_stride.seq;
        const score_row<Acc> terms = make_score_row<Acc>(p, b, h, i);
        const bool plain = !p.has_score_terms();
        online_softmax<Acc> state(accumulator.data(), p.dim_v);

        const key_range keys = visible.keys_of(i);
        for (index_t j = keys.begin; j < keys.end; ++j) {
          const T* k_row = p.key_row(p.k, p.k_stride, b, kvh, j);
          const Acc dot = blocked_dot<Acc>(q_row, p.q_stride.dim, k_row, p.k_stride.dim, p.dim);
          const Acc score = static_cast<Acc>(p.scale) * dot;
          state.update(plain ? score : terms.apply(score, j), p.key_row(p.v, p.v_stride, b, kvh, j), p.v_stride.dim);
        }

        Tout* out_row = p.query_head(p.out, p.out_stride, b, h) + i * p.out_stride.seq;
        const Acc lse = state.finalize(out_row, p.out_stride.dim);
        if (p.lse) *lse_at(p, b, h, i) = static_cast<float>(lse);
      }
    }
  }
}

}  // namespace streamattn::detail
