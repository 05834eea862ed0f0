// The combine step of split-KV decoding: each row's partial states over
// consecutive key segments are merged in segment order (the same associative
// merge as online_softmax::merge and merge_partials) and written out.
#pragma once

#include "../../detail/math.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "block.hpp"
#include "plan.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd {

template <class Acc, class T, class Tout, class Tkv>
void merge_split_kv(const attention_params<T, Tout, Tkv>& p, const simd_plan<Acc>& plan, Acc* partials) {
  const index_t items_per_split = plan.items / plan.splits;
  for (index_t unit = 0; unit < items_per_split; ++unit) {
    const block<Acc, T, Tout, Tkv> first(p, plan, unit * plan.splits, nullptr, partials);
    for (index_t h = 0; h < plan.heads_per_item; ++h) {
      const block<Acc, T, Tout, Tkv> blk = first.for_kv_head(first.kv_head + h);
      for (index_t r = 0; r < blk.rows; ++r) {
        Acc max = neg_inf<Acc>();
        for (index_t s = 0; s < plan.splits; ++s) max = std::max(max, blk.partial_state(s, r)[0]);
        // Accumulate into segment 0's slot, rescaling each segment to the
        // common max; segments that saw no key have sum 0 and are skipped.
        Acc* merged = blk.partial_state(0, r);
        const Acc first_scale = merged[1] > Acc(0) ? exp_(merged[0] - max) : Acc(0);
        Acc sum = merged[1] * first_scale;
        for (index_t d = 0; d < p.dim_v; ++d) merged[2 + d] *= first_scale;
        for (index_t s = 1; s < plan.splits; ++s) {
          const Acc* part = blk.partial_state(s, r);
          if (!(part[1] > Acc(0))) continue;
          const Acc scale = exp_(part[0] - max);
          sum += part[1] * scale;
          for (index_t d = 0; d < p.dim_v; ++d) merged[2 + d] += part[2 + d] * scale;
        }
        blk.write_row(r, merged + 2, 1, max, sum);
      }
    }
  }
}

}  // namespace streamattn::detail::simd

STREAMATTN_SIMD_DIAGNOSTICS_END
