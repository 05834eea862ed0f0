// The pooling state of the simd additive kernels, laid out for packets: the
// running max and sum of every head side by side (H padded to whole
// packets) and the D accumulators. It is the online-softmax state of
// online_softmax.hpp for all heads at once, with the same update and merge
// rules, plus the exact bookkeeping of the official additive mask (see
// detail/additive_state.hpp for why a state that has seen only padded tokens
// keeps their scores unshifted).
#pragma once

#include <algorithm>
#include <limits>
#include <vector>

#include "../../config.hpp"
#include "../../detail/additive_params.hpp"
#include "../../detail/element.hpp"
#include "../../detail/math.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "additive_scores.hpp"
#include "packet.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd_additive {

/// Where the weight of a stage's running maximum would give NaN
/// ((-inf) - (-inf): no token yet), use 0 as the reference instead; every
/// exponent is then -inf and gives weight 0.
template <class P>
EIGEN_STRONG_INLINE P finite_reference(const P& row_max) {
  using Acc = typename ei::unpacket_traits<P>::type;
  const P none = ei::pcmp_eq(row_max, ei::pset1<P>(neg_inf<Acc>()));
  return ei::pselect(none, ei::pset1<P>(Acc(0)), row_max);
}

template <class Acc>
struct pool_state {
  index_t lane_heads = 0, heads = 0, head_dim = 0, dim = 0;
  std::vector<Acc> row_max, row_sum, acc;  // lane_heads, lane_heads, dim
  bool saw_kept = false;

  void reshape(const additive_shape& s) {
    heads = s.heads;
    lane_heads = round_up_to_packets<Acc>(s.heads);
    head_dim = s.head_dim;
    dim = s.dim;
    row_max.resize(static_cast<std::size_t>(lane_heads));
    row_sum.resize(static_cast<std::size_t>(lane_heads));
    acc.resize(static_cast<std::size_t>(dim));
    reset();
  }

  void reset() {
    std::fill(row_max.begin(), row_max.end(), neg_inf<Acc>());
    std::fill(row_sum.begin(), row_sum.end(), Acc(0));
    std::fill(acc.begin(), acc.end(), Acc(0));
    saw_kept = false;
  }

  void assign(const pool_state& other) {
    row_max = other.row_max;
    row_sum = other.row_sum;
    acc = other.acc;
    saw_kept = other.saw_kept;
  }

  /// Moves scores seen while only padded tokens had arrived to the common
  /// scale (a kept token is about to join). -inf stays -inf.
  void shift_to_common_scale() {
    for (Acc& m : row_max) m += static_cast<Acc>(additive_mask_penalty);
    saw_kept = true;
  }

  /// The level shift `other`'s maxima need to be compared with this state's.
  Acc shift_of(const pool_state& other) const {
    return (saw_kept && !other.saw_kept) ? static_cast<Acc>(additive_mask_penalty) : Acc(0);
  }

  /// Adds the tokens of `other` (disjoint from this state's): online_softmax::merge per head.
  void merge(const pool_state& other) {
    if (other.saw_kept && !saw_kept) shift_to_common_scale();
    const Acc shift = shift_of(other);
    for (index_t h = 0; h < heads; ++h) {
      const std::size_t hs = static_cast<std::size_t>(h);
      if (other.row_sum[hs] == Acc(0)) continue;
      const Acc theirs_max = other.row_max[hs] + shift;
      Acc* a = acc.data() + h * head_dim;
      const Acc* b = other.acc.data() + h * head_dim;
      if (row_sum[hs] == Acc(0)) {
        row_max[hs] = theirs_max;
        row_sum[hs] = other.row_sum[hs];
        for (index_t e = 0; e < head_dim; ++e) a[e] = b[e];
        continue;
      }
      const Acc merged = row_max[hs] > theirs_max ? row_max[hs] : theirs_max;
      const Acc mine = exp_(row_max[hs] - merged), theirs = exp_(theirs_max - merged);
      row_sum[hs] = row_sum[hs] * mine + other.row_sum[hs] * theirs;
      for (index_t e = 0; e < head_dim; ++e) a[e] = a[e] * mine + b[e] * theirs;
      row_max[hs] = merged;
    }
  }

  /// The pooled D-vector; zeros for heads that saw no token.
  template <class Out>
  void finalize(Out* out, index_t out_stride = 1) const {
    for (index_t h = 0; h < heads; ++h) {
      const std::size_t hs = static_cast<std::size_t>(h);
      const Acc inv = row_sum[hs] == Acc(0) ? Acc(0) : Acc(1) / row_sum[hs];
      for (index_t e = 0; e < head_dim; ++e)
        out[(h * head_dim + e) * out_stride] = convert<Out>(acc[static_cast<std::size_t>(h * head_dim + e)] * inv);
    }
  }
};

/// Per-tile scratch of `accumulate_tile`.
template <class Acc>
struct tile_scratch {
  std::vector<Acc> weights;   // tile_tokens x lane_heads
  std::vector<Acc> expanded;  // tile_tokens x dim, only when head slices are not whole packets
  std::vector<Acc> factor;    // lane_heads

  void reshape(const additive_shape& s) {
    const index_t lanes = round_up_to_packets<Acc>(s.heads);
    weights.resize(static_cast<std::size_t>(tile_tokens * lanes));
    factor.resize(static_cast<std::size_t>(lanes));
    if (s.head_dim % packet_size<Acc> != 0) expanded.resize(static_cast<std::size_t>(tile_tokens * s.dim));
  }
};

/// acc[f0 .. f0 + G*L) += sum_r weight_r(f) * x_r(f), with G packets summed
/// over the tile in registers first (a second level of blocked summation).
/// `weight_of(r, g)` gives the weight packet of row r for packet g.
template <class Acc, int G, class WeightOf>
EIGEN_STRONG_INLINE void accumulate_features(Acc* acc, index_t f0, const row_tile<Acc>& tile, WeightOf&& weight_of) {
  using P = packet<Acc>;
  constexpr int L = packet_size<Acc>;
  P t[G];
  STREAMATTN_UNROLL_REGISTER_TILE
  for (int g = 0; g < G; ++g) t[g] = ei::pset1<P>(Acc(0));
  for (index_t r = 0; r < tile.count; ++r) {
    const Acc* x = tile.row(r) + f0;
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int g = 0; g < G; ++g) t[g] = ei::pmadd(weight_of(r, g), ei::ploadu<P>(x + g * L), t[g]);
  }
  STREAMATTN_UNROLL_REGISTER_TILE
  for (int g = 0; g < G; ++g) ei::pstoreu(acc + f0 + g * L, ei::padd(ei::ploadu<P>(acc + f0 + g * L), t[g]));
}

/// Feeds a tile of token rows with their final scores (tile.count x
/// lane_heads, row-major) into `state`: one online-softmax rescale per tile,
/// the tile's weighted rows summed in registers before they reach the
/// accumulator. Masked-out tokens are simply not in the tile.
template <class Acc>
void accumulate_tile(pool_state<Acc>& state, const Acc* scores, const row_tile<Acc>& tile,
                     tile_scratch<Acc>& scratch) {
  using P = packet<Acc>;
  constexpr index_t L = packet_size<Acc>;
  const index_t count = tile.count;
  if (count == 0) return;
  const index_t lanes = state.lane_heads;
  Acc* weights = scratch.weights.data();
  for (index_t k = 0; k < lanes; k += L) {
    const P old_max = ei::ploadu<P>(state.row_max.data() + k);
    P tile_max = ei::ploadu<P>(scores + k);
    for (index_t r = 1; r < count; ++r) tile_max = ei::pmax(tile_max, ei::ploadu<P>(scores + r * lanes + k));
    const P new_max = ei::pmax(old_max, tile_max);
    const P reference = finite_reference(new_max);
    const P factor = simd::exp_nonpositive(ei::psub(old_max, reference));
    P tile_sum = ei::pset1<P>(Acc(0));
    for (index_t r = 0; r < count; ++r) {
      const P w = simd::exp_nonpositive(ei::psub(ei::ploadu<P>(scores + r * lanes + k), reference));
      ei::pstoreu(weights + r * lanes + k, w);
      tile_sum = ei::padd(tile_sum, w);
    }
    ei::pstoreu(state.row_sum.data() + k, ei::pmadd(ei::ploadu<P>(state.row_sum.data() + k), factor, tile_sum));
    ei::pstoreu(state.row_max.data() + k, new_max);
    ei::pstoreu(scratch.factor.data() + k, factor);
  }
  for (index_t h = 0; h < state.heads; ++h) {
    const Acc f = scratch.factor[static_cast<std::size_t>(h)];
    if (f == Acc(1)) continue;
    Acc* a = state.acc.data() + h * state.head_dim;
    for (index_t e = 0; e < state.head_dim; ++e) a[e] *= f;
  }

  const index_t dim = state.dim, head_dim = state.head_dim;
  Acc* acc = state.acc.data();
  constexpr int G = 4;
  if (head_dim % L == 0) {
    // Every packet lies inside one head: its weight is a broadcast.
    index_t f0 = 0;
    for (; f0 + G * L <= dim; f0 += G * L) {
      index_t head[G];
      for (int g = 0; g < G; ++g) head[g] = (f0 + g * L) / head_dim;
      accumulate_features<Acc, G>(acc, f0, tile, [&](index_t r, int g) { return ei::pset1<P>(weights[r * lanes + head[g]]); });
    }
    for (; f0 < dim; f0 += L) {
      const index_t head = f0 / head_dim;
      accumulate_features<Acc, 1>(acc, f0, tile, [&](index_t r, int) { return ei::pset1<P>(weights[r * lanes + head]); });
    }
    return;
  }
  // Head slices straddle packets: spell the weights out per feature first.
  Acc* expanded = scratch.expanded.data();
  for (index_t r = 0; r < count; ++r)
    for (index_t f = 0; f < dim; ++f) expanded[r * dim + f] = weights[r * lanes + f / head_dim];
  index_t f0 = 0;
  for (; f0 + G * L <= dim; f0 += G * L)
    accumulate_features<Acc, G>(acc, f0, tile, [&](index_t r, int g) { return ei::ploadu<P>(expanded + r * dim + f0 + g * L); });
  for (; f0 + L <= dim; f0 += L)
    accumulate_features<Acc, 1>(acc, f0, tile, [&](index_t r, int) { return ei::ploadu<P>(expanded + r * dim + f0); });
  for (; f0 < dim; ++f0) {
    Acc t = 0;
    for (index_t r = 0; r < count; ++r) t += expanded[r * dim + f0] * tile.row(r)[f0];
    acc[f0] += t;
  }
}

/// out[f] = a[f] * ca[h(f)] + b[f] * cb[h(f)] for every feature, one head
/// slice at a time (b may be null: then out[f] = a[f] * ca[h(f)]).
template <class Acc>
EIGEN_STRONG_INLINE void combine_slices(Acc* out, const Acc* a, const Acc* ca, const Acc* b, const Acc* cb,
                                        index_t heads, index_t head_dim) {
  using P = packet<Acc>;
  constexpr index_t L = packet_size<Acc>;
  for (index_t h = 0; h < heads; ++h) {
    const index_t base = h * head_dim;
    const P pa = ei::pset1<P>(ca[h]);
    index_t e = 0;
    if (b) {
      const P pb = ei::pset1<P>(cb[h]);
      for (; e + L <= head_dim; e += L)
        ei::pstoreu(out + base + e,
                    ei::pmadd(ei::ploadu<P>(a + base + e), pa, ei::pmul(ei::ploadu<P>(b + base + e), pb)));
      for (; e < head_dim; ++e) out[base + e] = a[base + e] * ca[h] + b[base + e] * cb[h];
    } else {
      for (; e + L <= head_dim; e += L) ei::pstoreu(out + base + e, ei::pmul(ei::ploadu<P>(a + base + e), pa));
      for (; e < head_dim; ++e) out[base + e] = a[base + e] * ca[h];
    }
  }
}

/// Scratch of the one-token operations below.
template <class Acc>
struct row_scratch {
  std::vector<Acc> first, second;  // lane_heads each
  void reshape(const additive_shape& s) {
    first.resize(static_cast<std::size_t>(round_up_to_packets<Acc>(s.heads)));
    second.resize(first.size());
  }
};

/// Feeds one token (its final scores, lane_heads wide, and its D features)
/// into `state`: the single-score online-softmax update for every head.
template <class Acc>
EIGEN_STRONG_INLINE void accumulate_row(pool_state<Acc>& state, const Acc* scores, const Acc* row,
                                        row_scratch<Acc>& scratch) {
  using P = packet<Acc>;
  constexpr index_t L = packet_size<Acc>;
  for (index_t k = 0; k < state.lane_heads; k += L) {
    const P old_max = ei::ploadu<P>(state.row_max.data() + k);
    const P score = ei::ploadu<P>(scores + k);
    const P new_max = ei::pmax(old_max, score);
    const P reference = finite_reference(new_max);
    const P factor = simd::exp_nonpositive(ei::psub(old_max, reference));
    const P weight = simd::exp_nonpositive(ei::psub(score, reference));
    ei::pstoreu(state.row_sum.data() + k, ei::pmadd(ei::ploadu<P>(state.row_sum.data() + k), factor, weight));
    ei::pstoreu(state.row_max.data() + k, new_max);
    ei::pstoreu(scratch.first.data() + k, factor);
    ei::pstoreu(scratch.second.data() + k, weight);
  }
  // acc = acc * factor + weight * row, per head slice.
  combine_slices(state.acc.data(), state.acc.data(), scratch.first.data(), row, scratch.second.data(), state.heads,
                 state.head_dim);
}

/// One token of a causal scan into `state`, with the mask's rules: in
/// exclude mode a padded token is skipped; in the official additive mode it
/// joins with its scores lowered by 10000 once a kept token has been seen
/// (see detail/additive_state.hpp for the level shift). May change `scores`.
template <class Acc>
EIGEN_STRONG_INLINE void take_token(pool_state<Acc>& state, Acc* scores, bool keep, bool exclude, const Acc* row,
                                    row_scratch<Acc>& scratch) {
  if (!keep) {
    if (exclude) return;
    if (state.saw_kept)
      for (index_t h = 0; h < state.lane_heads; ++h) scores[h] += static_cast<Acc>(additive_mask_penalty);
  } else if (!state.saw_kept) {
    state.shift_to_common_scale();
  }
  accumulate_row(state, scores, row, scratch);
}

/// Writes the pooling of carry ⊕ leaf (two states over consecutive token
/// ranges) to `out` (D) without changing either: the prefix result of the
/// causal scan.
template <class Acc>
EIGEN_STRONG_INLINE void finalize_pair(const pool_state<Acc>& carry, const pool_state<Acc>& leaf, Acc* out,
                                       row_scratch<Acc>& scratch) {
  using P = packet<Acc>;
  constexpr index_t L = packet_size<Acc>;
  // A side that has not seen a kept token while the other has sits 10000
  // above the common scale.
  const P shift_carry = ei::pset1<P>(leaf.shift_of(carry));
  const P shift_leaf = ei::pset1<P>(carry.shift_of(leaf));
  for (index_t k = 0; k < carry.lane_heads; k += L) {
    const P carry_max = ei::padd(ei::ploadu<P>(carry.row_max.data() + k), shift_carry);
    const P leaf_max = ei::padd(ei::ploadu<P>(leaf.row_max.data() + k), shift_leaf);
    const P reference = finite_reference(ei::pmax(carry_max, leaf_max));
    const P carry_weight = simd::exp_nonpositive(ei::psub(carry_max, reference));
    const P leaf_weight = simd::exp_nonpositive(ei::psub(leaf_max, reference));
    const P total = ei::pmadd(ei::ploadu<P>(carry.row_sum.data() + k), carry_weight,
                              ei::pmul(ei::ploadu<P>(leaf.row_sum.data() + k), leaf_weight));
    const P zero = ei::pset1<P>(Acc(0));
    const P seen = ei::pcmp_lt(zero, total);
    const P inverse = ei::pselect(seen, ei::pdiv(ei::pset1<P>(Acc(1)), ei::pselect(seen, total, ei::pset1<P>(Acc(1)))), zero);
    ei::pstoreu(scratch.first.data() + k, ei::pmul(carry_weight, inverse));
    ei::pstoreu(scratch.second.data() + k, ei::pmul(leaf_weight, inverse));
  }
  combine_slices(out, carry.acc.data(), scratch.first.data(), leaf.acc.data(), scratch.second.data(), carry.heads,
                 carry.head_dim);
}

}  // namespace streamattn::detail::simd_additive

STREAMATTN_SIMD_DIAGNOSTICS_END
