// What the two simd paths share about one work item: which rows it owns, its
// slice of the worker's slab, K/V chunk staging, per-element masking, and
// writing the finished rows out.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "../../detail/attention_params.hpp"
#include "../../detail/element.hpp"
#include "../../detail/math.hpp"
#include "../../detail/score_terms.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "micro_kernel.hpp"
#include "plan.hpp"
#include "softcap.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd {

/// A block of rows of one (batch, key/value head). Row r of the head is
/// query r / group of query head kv_head * group + r % group, so a block
/// covers consecutive queries (keeping causal tiles skippable) and every query
/// head that shares the K/V it streams. A work item is one block, or on the
/// decode path the blocks of every K/V head of a batch (see `for_kv_head`),
/// restricted to one key segment with split-KV.
template <class Acc, class T, class Tout, class Tkv>
struct block {
  const attention_params<T, Tout, Tkv>& p;
  const simd_plan<Acc>& plan;
  index_t batch = 0, kv_head = 0, row_block = 0;
  index_t row_begin = 0, rows = 0;  // head rows [row_begin, row_begin + rows)
  index_t split = 0;                // key segment (split-KV), 0 without splitting
  visibility visible;               // causal/window ranges of this batch item (its own key count)
  std::byte* slab;
  Acc* partials = nullptr;          // split-KV: every block's partial states, else null

  /// Work item `item` (on the decode path: its first K/V head).
  block(const attention_params<T, Tout, Tkv>& params, const simd_plan<Acc>& pl, index_t item, std::byte* worker_slab,
        Acc* all_partials = nullptr)
      : p(params), plan(pl), slab(worker_slab), partials(plan.splits > 1 ? all_partials : nullptr) {
    split = item % plan.splits;
    const index_t unit = item / plan.splits;
    const index_t heads = p.hk / plan.heads_per_item;  // K/V heads split over items
    batch = unit / (heads * plan.row_blocks);
    kv_head = (unit % (heads * plan.row_blocks)) / plan.row_blocks;
    row_block = unit % plan.row_blocks;
    row_begin = row_block * plan.block_rows;
    visible = p.visible_in(batch);
    // Blocks past a shorter packed item's rows own none.
    rows = std::max<index_t>(0, std::min(plan.block_rows, visible.nq * plan.group - row_begin));
  }

  /// The same rows and key segment for another K/V head of a decode item.
  block for_kv_head(index_t head) const {
    block b = *this;
    b.kv_head = head;
    return b;
  }

  index_t query_of(index_t row) const { return (row_begin + row) / plan.group; }
  index_t head_of(index_t row) const { return kv_head * plan.group + (row_begin + row) % plan.group; }
  index_t first_query() const { return query_of(0); }
  index_t last_query() const { return query_of(rows - 1); }

  /// Scratch shared by the heads of an item (scores, staged K/V).
  template <class U>
  U* buffer(std::size_t offset) const {
    return reinterpret_cast<U*>(slab + offset);
  }
  /// Scratch of this block's K/V head (queries, accumulators, softmax state).
  template <class U>
  U* head_buffer(std::size_t offset) const {
    const index_t part = plan.heads_per_item > 1 ? kv_head : 0;
    return reinterpret_cast<U*>(slab + plan.shared_bytes + static_cast<std::size_t>(part) * plan.head_bytes + offset);
  }
  /// The score tile: one per item on the wide path, one per K/V head on the decode path.
  Acc* scores() const { return plan.decode ? head_buffer<Acc>(plan.s_off) : buffer<Acc>(plan.s_off); }
  Acc* row_max() const { return head_buffer<Acc>(plan.stats_off); }
  Acc* row_sum() const { return row_max() + (plan.decode ? plan.block_rows : plan.cols); }
  Acc* rescale() const { return row_sum() + (plan.decode ? plan.block_rows : plan.cols); }
  score_row<Acc>* terms() const { return head_buffer<score_row<Acc>>(plan.terms_off); }

  const T* q_row(index_t row) const {
    return p.query_head(p.q, p.q_stride, batch, head_of(row)) + query_of(row) * p.q_stride.seq;
  }

  /// Keys any row of the block may see: a contiguous range, so the chunks
  /// outside it (above the causal diagonal, beyond a window) are never touched.
  /// With split-KV, only this item's segment of that range.
  key_range keys() const {
    key_range r = visible.keys_of_rows(first_query(), last_query());
    r.begin = std::max(r.begin, split * plan.segment);
    r.end = std::min(r.end, (split + 1) * plan.segment);
    return r;
  }

  void prepare_terms() const {
    if (!p.has_score_terms()) return;
    for (index_t r = 0; r < rows; ++r) {
      terms()[r] = make_score_row<Acc>(p, batch, head_of(r), query_of(r));
      terms()[r].softcap = Acc(0);  // applied by packets (`softcap_scores`, `softcap_packet`)
    }
  }

  /// Whether the keep-mask hides every key of [first, first + n) from every
  /// row of the block: the chunk then changes nothing (its weights are all
  /// 0 and the running max stays), so a caller skips it without reading its
  /// K/V. A padded batch's padding and a causal pattern passed as a mask
  /// come out as such chunks. Rows sharing a mask row (a broadcast mask)
  /// are checked once.
  bool mask_hides_chunk(index_t first, index_t n) const {
    if (!p.mask) return false;
    const bool* checked = nullptr;
    for (index_t r = 0; r < rows; ++r) {
      const score_row<Acc>& row = terms()[r];
      if (row.mask == checked) continue;
      checked = row.mask;
      if (row.keeps_any_key(first, n)) return false;
    }
    return true;
  }

  /// Whether a score term other than softcap applies.
  bool has_terms_after_softcap() const { return p.bias || p.mask || p.alibi_slopes; }

  /// K rows [first, first + n) as an (n x D) Acc matrix: the caller's
  /// memory as it is when the plan allows and the rows lie in one page (of
  /// a paged cache), else a converted (or dequantised) row-major copy in the slab.
  strided_operand<Acc> k_rows(index_t first, index_t n) const { return stage<Acc>(false, first, n); }
  strided_operand<Acc> v_rows(index_t first, index_t n) const { return stage<Acc>(true, first, n); }

  /// What the decode kernels read K and V as: an int8 cache's codes as they
  /// are (their scales: `scale_by_keys`), else Acc values.
  using decode_element = std::conditional_t<is_quantised_v<Tkv>, Tkv, Acc>;
  strided_operand<decode_element> decode_k_rows(index_t first, index_t n) const {
    return stage<decode_element>(false, first, n);
  }
  strided_operand<decode_element> decode_v_rows(index_t first, index_t n) const {
    return stage<decode_element>(true, first, n);
  }

  /// s[r * ld + j] *= the scale of key first + j of k (or of v), for
  /// `count_rows` rows and n keys: what decode_k_rows (decode_v_rows) left
  /// out. Nothing unless the cache holds int8.
  void scale_by_keys(Acc* s, index_t ld, int count_rows, index_t first, index_t n, bool values) const {
    if constexpr (is_quantised_v<Tkv>) {
      const float* scale = values ? p.v_scale : p.k_scale;
      const bshd_strides& scale_s = values ? p.v_scale_stride : p.k_scale_stride;
      for (index_t j = 0; j < n; ++j) {
        const Acc sc = static_cast<Acc>(p.key_scale(scale, scale_s, batch, kv_head, first + j));
        for (int r = 0; r < count_rows; ++r) s[r * ld + j] *= sc;
      }
    }
  }

  /// Whether chunk [first, first + n) needs per-element work: a mask edge
  /// crosses it, or a score term applies.
  bool needs_element_pass(index_t first, index_t n) const {
    return p.has_score_terms() || !visible.tile_fully_visible(first_query(), last_query(), first, first + n);
  }

  /// The keys of chunk [first, first + n) that row r may see (causal and
  /// window ranges), as offsets in [0, n] from `first`.
  key_range visible_keys(index_t r, index_t first, index_t n) const {
    const key_range keys = visible.keys_of(query_of(r));
    const index_t lo = std::clamp<index_t>(keys.begin - first, 0, n);
    return {lo, std::clamp<index_t>(keys.end - first, lo, n)};
  }

  /// Row r's final scores against the chunk, s[j] for key first + j (the
  /// decode path's rows are contiguous in keys): softcap, the terms after it
  /// (bias, ALiBi, mask), then `hide_keys`, over the row's visible keys. The
  /// range is resolved once per row, not per key: on the wide path's causal
  /// diagonal tiles the per-key test cost a quarter of a whole call's time.
  void finish_scores(index_t r, index_t first, index_t n, Acc* s) const {
    const key_range keys = visible_keys(r, first, n);
    if (p.softcap > 0.0f) softcap_scores(s + keys.begin, keys.end - keys.begin, static_cast<Acc>(p.softcap));
    if (has_terms_after_softcap())
      terms()[r].add_terms_to_keys(s + keys.begin, first + keys.begin, keys.end - keys.begin);
    hide_keys(r, first, n, s, 1);
  }

  /// -inf for the keys of the chunk that row r may not see.
  void hide_keys(index_t r, index_t first, index_t n, Acc* s, index_t step) const {
    const key_range keys = visible_keys(r, first, n);
    for (index_t j = 0; j < keys.begin; ++j) s[j * step] = neg_inf<Acc>();
    for (index_t j = keys.end; j < n; ++j) s[j * step] = neg_inf<Acc>();
  }

  /// Split-KV state of row r over key segment `segment`: (max, sum, acc...).
  Acc* partial_state(index_t segment, index_t r) const {
    const index_t id = (batch * p.hk + kv_head) * plan.row_blocks + row_block;
    return partials + static_cast<std::size_t>((id * plan.splits + segment) * plan.block_rows + r) *
                          plan.partial_row_elems;
  }

  /// Finishes row r: writes it out, or with split-KV keeps its partial state
  /// (max, sum, unnormalised accumulator) for the merge.
  void finish_row(index_t r, const Acc* acc, index_t acc_stride, Acc max, Acc sum) const {
    if (!partials) return write_row(r, acc, acc_stride, max, sum);
    Acc* slot = partial_state(split, r);
    slot[0] = max;
    slot[1] = sum;
    for (index_t d = 0; d < p.dim_v; ++d) slot[2 + d] = acc[d * acc_stride];
  }

  /// Writes row r: acc[d * acc_stride] / row_sum (zeros when no key was
  /// visible), and its log-sum-exp.
  void write_row(index_t r, const Acc* acc, index_t acc_stride, Acc max, Acc sum) const {
    Tout* out = p.query_head(p.out, p.out_stride, batch, head_of(r)) + query_of(r) * p.out_stride.seq;
    const Acc inv = sum > Acc(0) ? Acc(1) / sum : Acc(0);
    for (index_t d = 0; d < p.dim_v; ++d) out[d * p.out_stride.dim] = convert<Tout>(acc[d * acc_stride] * inv);
    if (p.lse) *lse_at(p, batch, head_of(r), query_of(r)) = sum > Acc(0) ? static_cast<float>(max + log_(sum)) : neg_inf<float>();
  }

 private:
  /// Rows [first, first + n) of k (or of v) as Out: Tkv as it is (in place
  /// when the plan allows and the rows lie in one page, else copied), or
  /// converted and dequantised to Acc (always copied, unless Tkv is Acc).
  /// The slab has room for a copy whenever one is made: the plan reserves
  /// it for staged rows (stage_k / stage_v) and for paged caches.
  template <class Out>
  strided_operand<Out> stage(bool values, index_t first, index_t n) const {
    const Tkv* data = values ? p.v : p.k;
    const bshd_strides& s = values ? p.v_stride : p.k_stride;
    const index_t dim = values ? p.dim_v : p.dim;
    constexpr bool as_is = std::is_same_v<Out, Tkv>;
    const bool one_page = p.keys_in_one_page(first, n);
    const Tkv* src = p.key_row(data, s, batch, kv_head, first);
    if constexpr (as_is) {
      if (!(values ? plan.stage_v : plan.stage_k) && one_page) return {src, s.seq, s.dim};
    }
    Out* dst = buffer<Out>(values ? plan.v_off : plan.k_off);
    for (index_t j = 0; j < n; ++j) {
      const Tkv* row = one_page ? src + j * s.seq : p.key_row(data, s, batch, kv_head, first + j);
      Out* out = dst + j * dim;
      if constexpr (as_is) {
        if (s.dim == 1) {  // the common case, a plain copy
          std::memcpy(out, row, static_cast<std::size_t>(dim) * sizeof(Out));
        } else {
          for (index_t d = 0; d < dim; ++d) out[d] = row[d * s.dim];
        }
      } else {
        const float sc = p.key_scale(values ? p.v_scale : p.k_scale, values ? p.v_scale_stride : p.k_scale_stride,
                                     batch, kv_head, first + j);
        if (s.dim == 1) {  // the common case: a contiguous loop the compiler vectorises
          for (index_t d = 0; d < dim; ++d) out[d] = dequantise<Out>(row[d], sc);
        } else {
          for (index_t d = 0; d < dim; ++d) out[d] = dequantise<Out>(row[d * s.dim], sc);
        }
      }
    }
    return {dst, dim, 1};
  }
};

}  // namespace streamattn::detail::simd

STREAMATTN_SIMD_DIAGNOSTICS_END
