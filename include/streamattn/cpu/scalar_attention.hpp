// The scalar backend: the streaming algorithm in plain loops. One query row at
// a time walks its visible keys, feeding each score into an online softmax
// state, so nothing grows with the sequence length. Single-threaded.
#pragma once

#include <vector>

#include "../backend.hpp"
#include "../detail/attention_params.hpp"
#include "../detail/blocked_dot.hpp"
#include "../detail/element.hpp"
#include "../detail/head_rows.hpp"
#include "../detail/score_terms.hpp"
#include "../detail/validate_attention.hpp"
#include "../online_softmax.hpp"

namespace streamattn::detail {

template <class T, class Tout, class Tkv>
void attention_impl(scalar_t, const attention_params<T, Tout, Tkv>& p) {
  using Acc = accum_t<T>;
  check_index_values("streamattn::attention", p);
  std::vector<Acc> accumulator(static_cast<std::size_t>(p.dim_v));
  std::vector<Acc> k_values(is_quantised_v<Tkv> ? static_cast<std::size_t>(p.dim) : 0),
      v_values(is_quantised_v<Tkv> ? static_cast<std::size_t>(p.dim_v) : 0);

  for (index_t b = 0; b < p.batch; ++b) {
    const visibility visible = p.visible_in(b);  // aligned to this item's queries and keys
    for (index_t h = 0; h < p.hq; ++h) {
      const index_t kvh = p.kv_head_of(h);
      for (index_t i = 0; i < visible.nq; ++i) {
        const T* q_row = p.query_head(p.q, p.q_stride, b, h) + i * p.q_stride.seq;
        const score_row<Acc> terms = make_score_row<Acc>(p, b, h, i);
        const bool plain = !p.has_score_terms();
        online_softmax<Acc> state(accumulator.data(), p.dim_v);

        // Feeds key j, whose rows of k and v are k_row and v_row (elements
        // k_step and v_step apart).
        const auto feed = [&](index_t j, const auto* k_row, index_t k_step, const auto* v_row, index_t v_step) {
          const Acc dot = blocked_dot<Acc>(q_row, p.q_stride.dim, k_row, k_step, p.dim);
          const Acc score = static_cast<Acc>(p.scale) * dot;
          state.update(plain ? score : terms.apply(score, j), v_row, v_step);
        };
        const key_range keys = visible.keys_of(i);
        for (index_t j = keys.begin; j < keys.end; ++j) {
          if constexpr (is_quantised_v<Tkv>) {
            // An int8 cache's rows are dequantised first: the same loop
            // then runs on the values they stand for.
            load_key_row(k_values.data(), p, p.k, p.k_stride, p.k_scale, p.k_scale_stride, b, kvh, j, p.dim);
            load_key_row(v_values.data(), p, p.v, p.v_stride, p.v_scale, p.v_scale_stride, b, kvh, j, p.dim_v);
            feed(j, k_values.data(), 1, v_values.data(), 1);
          } else {
            feed(j, p.key_row(p.k, p.k_stride, b, kvh, j), p.k_stride.dim, p.key_row(p.v, p.v_stride, b, kvh, j),
                 p.v_stride.dim);
          }
        }

        Tout* out_row = p.query_head(p.out, p.out_stride, b, h) + i * p.out_stride.seq;
        const Acc lse = state.finalize(out_row, p.out_stride.dim);
        if (p.lse) *lse_at(p, b, h, i) = static_cast<float>(lse);
      }
    }
  }
}

}  // namespace streamattn::detail
