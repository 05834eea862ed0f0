// The wide path of the simd backend: a block of many query rows streams over
// K/V chunks with queries in the vector lanes.
//
//   S^T = K_chunk . (scale Q)^T          (keys x queries, micro-kernel)
//   per query column: m' = max(m, max_j S), a = e^(m - m'), P = e^(S - m'),
//                     l = a l + sum_j P                        (vertical ops only)
//   O^T = a O^T + V_chunk^T . P^T        (dims x queries, micro-kernel)
//
// and finally out = O / l. Everything lives in the worker's slab, whose size
// is bounded by the tile sizes: it never grows with Nq or Nk.
#pragma once

#include <limits>

#include "../../detail/math.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "block.hpp"
#include "micro_kernel.hpp"
#include "packet.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd {

/// Sets to -inf the scores of keys [first, first + s.rows) that a row may not
/// see (causal and window ranges), a packet of queries at a time: each
/// query's visible range becomes a pair of lane bounds, so the pass is
/// vertical compares and selects over the panels in memory order. Row by
/// row, it was scalar stores a cache line apart, 12% of a causal call.
/// Only the keys of each panel's span (`panel_keys`) are visited: the
/// steps after read no others.
template <class Acc, class T, class Tout, class Tkv, class PanelKeys>
void hide_keys_outside_ranges(const block<Acc, T, Tout, Tkv>& blk, const panels<Acc>& s, index_t first,
                              const PanelKeys& panel_keys) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  const index_t n = s.rows;
  // Key offsets are compared as Acc values: exact, as the plan keeps chunks
  // within the float mantissa's range.
  static_assert(max_kv_chunk <= (index_t(1) << std::numeric_limits<float>::digits));
  const P minus_inf = ei::pset1<P>(neg_inf<Acc>());
  Acc lo[W], hi[W];
  for (index_t c = 0; c < s.cols; c += W) {
    for (index_t i = 0; i < W; ++i) {
      // Padding columns (past the block's rows) are hidden whole.
      const key_range keys = c + i < blk.rows ? blk.visible_keys(c + i, first, n) : key_range{0, 0};
      lo[i] = static_cast<Acc>(keys.begin);
      hi[i] = static_cast<Acc>(keys.end);
    }
    const P lo_p = ei::ploadu<P>(lo), hi_p = ei::ploadu<P>(hi);
    Acc* column = s.at(0, c);
    const index_t step = s.panel_width(c);
    const key_range span = panel_keys(c, n);
    for (index_t j = span.begin; j < span.end; ++j) {
      const P key = ei::pset1<P>(static_cast<Acc>(j));
      const P hidden = ei::por(ei::pcmp_lt(key, lo_p), ei::pcmp_le(hi_p, key));
      ei::pstoreu(column + j * step, ei::pselect(hidden, minus_inf, ei::ploadu<P>(column + j * step)));
    }
  }
}

/// Keys per strip that `add_terms_by_packets` transposes at a time: a
/// multiple of every packet size, and small enough for the strip's row-major
/// copy to sit on the stack (4 KiB for 16 floats a packet).
inline constexpr index_t terms_strip = 64;

/// The score terms after softcap (bias, ALiBi, mask) over a chunk's panels.
/// A bias or mask row is contiguous in keys while a panel holds a packet of
/// queries per key, so each packet of queries is transposed, a strip of
/// keys at a time, into a row-major copy; `add_terms_to_keys` runs its
/// vectorised loops over each row there (the decode path's code, so both
/// paths give a score the same terms) and the strip is transposed back.
/// Row by row over the strided panels it was a scalar call per score, and a
/// bias, ALiBi or mask cost 1.4-1.6x a plain call.
///
/// Keys of the span that a row may not see get the terms too (they are in
/// the item's range, so every read is in bounds): `hide_keys_outside_ranges`
/// overwrites them after.
template <class Acc, class T, class Tout, class Tkv, class PanelKeys>
void add_terms_by_packets(const block<Acc, T, Tout, Tkv>& blk, const panels<Acc>& s, index_t first,
                          const PanelKeys& panel_keys) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  static_assert(terms_strip % W == 0);
  alignas(64) Acc rows[W * terms_strip];  // rows[i * terms_strip + t]: query c + i, key j0 + t
  P tile[W];
  for (index_t c = 0; c < blk.rows; c += W) {
    Acc* column = s.at(0, c);
    const index_t step = s.panel_width(c);
    const index_t live = std::min(W, blk.rows - c);  // the rest are padding columns
    const key_range span = panel_keys(c, s.rows);
    for (index_t j0 = span.begin; j0 < span.end; j0 += terms_strip) {
      const index_t count = std::min(terms_strip, span.end - j0);
      for (index_t t = 0; t < count; t += W) {
        for (index_t k = 0; k < W; ++k)
          tile[k] = t + k < count ? ei::ploadu<P>(column + (j0 + t + k) * step) : ei::pzero(P());
        transpose_packets(tile);
        for (index_t i = 0; i < W; ++i) ei::pstoreu(rows + i * terms_strip + t, tile[i]);
      }
      for (index_t i = 0; i < live; ++i) blk.terms()[c + i].add_terms_to_keys(rows + i * terms_strip, first + j0, count);
      for (index_t t = 0; t < count; t += W) {
        for (index_t i = 0; i < W; ++i) tile[i] = ei::ploadu<P>(rows + i * terms_strip + t);
        transpose_packets(tile);
        for (index_t k = 0; k < W && t + k < count; ++k) ei::pstoreu(column + (j0 + t + k) * step, tile[k]);
      }
    }
  }
}

template <class Acc, class T, class Tout, class Tkv>
void run_wide_block(const block<Acc, T, Tout, Tkv>& blk) {
  using P = packet<Acc>;
  constexpr index_t W = packet_size<Acc>;
  const auto& p = blk.p;
  // Query columns, padded to whole packets: this block's rows, which are
  // fewer than the plan's in a head's last block or a short packed item.
  const index_t cols = round_up(blk.rows, W);
  const panels<Acc> qt{blk.template head_buffer<Acc>(blk.plan.q_off), p.dim, cols};
  const panels<Acc> ot{blk.template head_buffer<Acc>(blk.plan.o_off), p.dim_v, cols};
  Acc* const s_data = blk.scores();
  Acc* row_max = blk.row_max();
  Acc* row_sum = blk.row_sum();
  Acc* rescale = blk.rescale();

  // Q^T with the scale folded in (one multiply per query element instead of
  // one per score); padding columns are zero and never written out.
  const Acc scale = static_cast<Acc>(p.scale);
  for (index_t r = 0; r < cols; ++r) {
    const T* q = r < blk.rows ? blk.q_row(r) : nullptr;
    for (index_t d = 0; d < p.dim; ++d) *qt.at(d, r) = q ? scale * convert<Acc>(q[d * p.q_stride.dim]) : Acc(0);
    row_max[r] = neg_inf<Acc>();
    row_sum[r] = Acc(0);
  }
  for (index_t i = 0; i < p.dim_v * cols; ++i) ot.data[i] = Acc(0);
  blk.prepare_terms();

  const key_range keys = blk.keys();
  for (index_t first = keys.begin; first < keys.end; first += blk.plan.kv_chunk) {
    const index_t n = std::min(blk.plan.kv_chunk, keys.end - first);
    if (blk.mask_hides_chunk(first, n)) continue;
    const panels<Acc> s{s_data, n, cols};

    // On a tile that the causal diagonal or a window edge crosses, each
    // column panel (its span) computes only the keys its queries see: with
    // 384-row blocks and 256-key chunks the rest was about a tenth of a
    // causal call's arithmetic at N = 4096 (7-8% of its time). Every step
    // below reads and writes within the spans only.
    const bool masked = !blk.visible.tile_fully_visible(blk.first_query(), blk.last_query(), first, first + n);
    const auto panel_keys = [&](index_t col, index_t extent) -> key_range {
      if (!masked) return {0, extent};
      const index_t start = col / panels<Acc>::width * panels<Acc>::width;
      const index_t last = std::min(start + s.panel_width(col), blk.rows) - 1;
      return {blk.visible_keys(start, first, n).begin, blk.visible_keys(last, first, n).end};
    };

    gemm_tiles<Acc>(n, blk.k_rows(first, n), qt, s, nullptr, false, panel_keys);

    if (p.softcap > 0.0f) {
      // Softcap a packet of queries at a time (the other terms differ per
      // row and go row by row).
      const P cap = ei::pset1<P>(static_cast<Acc>(p.softcap));
      for (index_t c = 0; c < cols; c += W) {
        Acc* column = s.at(0, c);
        const index_t step = s.panel_width(c);
        const key_range span = panel_keys(c, n);
        for (index_t j = span.begin; j < span.end; ++j)
          ei::pstoreu(column + j * step, softcap_packet(ei::ploadu<P>(column + j * step), cap));
      }
    }
    if (blk.has_terms_after_softcap()) add_terms_by_packets(blk, s, first, panel_keys);
    if (masked) hide_keys_outside_ranges(blk, s, first, panel_keys);

    // Online softmax down each query column, a packet of queries at a time.
    const P minus_inf = ei::pset1<P>(neg_inf<Acc>());
    for (index_t c = 0; c < cols; c += W) {
      Acc* column = s.at(0, c);
      const index_t step = s.panel_width(c);
      const key_range span = panel_keys(c, n);
      P chunk_max = minus_inf;
      for (index_t j = span.begin; j < span.end; ++j) chunk_max = ei::pmax(chunk_max, ei::ploadu<P>(column + j * step));
      const P old_max = ei::ploadu<P>(row_max + c);
      const P new_max = ei::pmax(old_max, chunk_max);
      // A column that has seen only masked keys keeps max = -inf; subtracting
      // 0 instead keeps its weights at exactly 0 rather than NaN.
      const P safe_max = ei::pandnot(new_max, ei::pcmp_eq(new_max, minus_inf));
      const P alpha = exp_nonpositive(ei::psub(old_max, safe_max));
      P sum = ei::pzero(P());
      for (index_t j = span.begin; j < span.end; ++j) {
        const P w = exp_nonpositive(ei::psub(ei::ploadu<P>(column + j * step), safe_max));
        ei::pstoreu(column + j * step, w);
        sum = ei::padd(sum, w);
      }
      ei::pstoreu(row_sum + c, ei::pmadd(ei::ploadu<P>(row_sum + c), alpha, sum));
      ei::pstoreu(row_max + c, new_max);
      ei::pstoreu(rescale + c, alpha);
    }

    // O^T rows are value dims: V^T(d, j) = V[j][d], read in place.
    const strided_operand<Acc> v = blk.v_rows(first, n);
    gemm_tiles<Acc>(p.dim_v, {v.data, v.depth_stride, v.row_stride}, s, ot, rescale, true, whole_span{}, panel_keys);
  }

  for (index_t r = 0; r < blk.rows; ++r) blk.write_row(r, ot.at(0, r), ot.panel_width(r), row_max[r], row_sum[r]);
}

}  // namespace streamattn::detail::simd

STREAMATTN_SIMD_DIAGNOSTICS_END
