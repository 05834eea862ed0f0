// Score micro-kernels of the simd additive kernels: scores[r, h] =
// x_r . w'[h] for a tile of token rows, where w' already carries the scale
// (and, for Fastformer's second pooling, q̄).
//
// With dense (H, D) weights this is a skinny GEMM, (tile x D) by (D x H),
// and it is the bulk of the arithmetic (2 H D multiply-adds per token for
// the two poolings). Two forms, chosen from the weight shape:
//  - head lanes (dense weights, H at least half a packet): a register holds
//    one score per head, the weights are stored transposed (D x H, padded to
//    whole packets), and each feature adds x_r[f] * w'[:, f] to every head at
//    once, for a block of rows sharing each weight load: an outer product,
//    no horizontal sums, the row element an embedded broadcast. The rows of
//    a tile are addressed from one base pointer and a stride (tiles are laid
//    out so), which keeps the integer registers free: a table of row
//    pointers would spill and cost a third of the speed.
//  - dots (per-head weights, or dense weights with few heads): one dot
//    product per (row, head) along the features.
// A row's score never depends on which other rows share its tile (the same
// chain of multiply-adds over the features), so the batch scan and the
// one-token decoder produce identical scores.
#pragma once

#include <algorithm>
#include <vector>

#include "../../config.hpp"
#include "../../detail/additive_params.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "packet.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd_additive {

namespace ei = Eigen::internal;
using simd::packet;
using simd::packet_size;

/// Tokens per tile: the rows that share every weight load of the score
/// micro-kernel and whose pooling sums meet in registers first. A leaf
/// (additive_leaf_tokens) is a whole number of tiles.
inline constexpr index_t tile_tokens = 32;

/// `n` rounded up to whole packets.
template <class Acc>
constexpr index_t round_up_to_packets(index_t n) {
  return (n + packet_size<Acc> - 1) / packet_size<Acc> * packet_size<Acc>;
}

/// Up to tile_tokens rows of D contiguous features: row r at base + r * stride.
template <class Acc>
struct row_tile {
  const Acc* base = nullptr;
  index_t stride = 0;
  index_t count = 0;
  /// Where the rows after this tile start (same stride), or null: a hint
  /// for prefetching while this tile is scored.
  const Acc* next = nullptr;
  const Acc* row(index_t r) const { return base + r * stride; }
};

/// One stage's score weights, laid out for the micro-kernels. `lane_heads`
/// is H rounded up to whole packets: every per-head array of the simd kernels
/// has that length, lanes >= H being inert.
template <class Acc>
struct score_weights_packed {
  index_t heads = 0, lane_heads = 0, length = 0, head_dim = 0;
  bool per_head = false;
  bool head_lanes = false;
  std::vector<Acc> transposed;  // head lanes: length x lane_heads, zero in lanes >= heads
  std::vector<Acc> rows;        // dots: heads x length

  void reshape(const additive_shape& s) {
    heads = s.heads;
    lane_heads = round_up_to_packets<Acc>(s.heads);
    length = s.weight_length();
    head_dim = s.head_dim;
    per_head = s.per_head;
    // The outer-product form computes the padded lanes too: use it once at
    // least half of them carry a head.
    head_lanes = !per_head && 2 * heads >= packet_size<Acc>;
    if (head_lanes)
      transposed.assign(static_cast<std::size_t>(length * lane_heads), Acc(0));
    else
      rows.assign(static_cast<std::size_t>(heads * length), Acc(0));
  }

  /// w'[h, f] = scale * w[h, f]: the scale folded in once.
  template <class W>
  void fill(const score_weights_ref<W>& w, Acc scale) {
    for (index_t h = 0; h < heads; ++h)
      for (index_t f = 0; f < length; ++f) at(h, f) = scale * static_cast<Acc>(w.at(h, f));
  }

  /// w'[h, f] = base[h, f] * fold[offset(h) + f]: the per-sequence copy of
  /// W_ka with q̄ folded in (c_j = P_j . W_ka[h] = K_j . (W_ka[h] ⊙ q̄)).
  void fold_from(const score_weights_packed& base, const Acc* fold) {
    if (head_lanes) {
      for (index_t f = 0; f < length; ++f) {
        const Acc* from = base.transposed.data() + f * lane_heads;
        Acc* to = transposed.data() + f * lane_heads;
        for (index_t h = 0; h < lane_heads; ++h) to[h] = from[h] * fold[f];
      }
    } else {
      for (index_t h = 0; h < heads; ++h) {
        const index_t offset = per_head ? h * head_dim : 0;
        for (index_t f = 0; f < length; ++f)
          rows[static_cast<std::size_t>(h * length + f)] =
              base.rows[static_cast<std::size_t>(h * length + f)] * fold[offset + f];
      }
    }
  }

 private:
  Acc& at(index_t h, index_t f) {
    return head_lanes ? transposed[static_cast<std::size_t>(f * lane_heads + h)]
                      : rows[static_cast<std::size_t>(h * length + f)];
  }
};

/// Rows x Packs accumulators live in registers; every feature loads Packs
/// weight packets once and reuses them for all Rows rows (pinned in
/// registers: GCC would reload them for every row, and at two loads per FMA
/// the load ports set the pace; pinning made the N = 16K benchmark 1.2x
/// faster on an AVX2 EPYC).
/// `ahead`, when set, is the first of the next Rows rows (same stride): the
/// loop prefetches them, one cache line per feature. The rows of a block are
/// read side by side, a pattern the hardware prefetchers follow poorly;
/// without this the kernel runs at half speed on rows coming from memory.
template <class Acc, int Rows, int Packs>
EIGEN_STRONG_INLINE void head_lanes_block(const Acc* base, index_t stride, const Acc* weights, index_t length,
                                          index_t weight_stride, Acc* scores, index_t score_stride,
                                          const Acc* ahead) {
  constexpr index_t line = 64 / static_cast<index_t>(sizeof(Acc));
  using P = packet<Acc>;
  constexpr int L = packet_size<Acc>;
  P acc[Rows][Packs];
  STREAMATTN_UNROLL_REGISTER_TILE
  for (int r = 0; r < Rows; ++r) {
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int k = 0; k < Packs; ++k) acc[r][k] = ei::pset1<P>(Acc(0));
  }
  for (index_t f = 0; f < length; ++f) {
    if (ahead) {
      const index_t at = f / Rows * line;
      if (at < length) simd::prefetch_line(ahead + (f % Rows) * stride + at);
    }
    P w[Packs];
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int k = 0; k < Packs; ++k) {
      w[k] = ei::ploadu<P>(weights + f * weight_stride + k * L);
      if constexpr (Rows > 1) simd::keep_in_register(w[k]);
    }
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int r = 0; r < Rows; ++r) {
      const P x = ei::pset1<P>(base[r * stride + f]);
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int k = 0; k < Packs; ++k) acc[r][k] = ei::pmadd(x, w[k], acc[r][k]);
    }
  }
  STREAMATTN_UNROLL_REGISTER_TILE
  for (int r = 0; r < Rows; ++r) {
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int k = 0; k < Packs; ++k) ei::pstoreu(scores + r * score_stride + k * L, acc[r][k]);
  }
}

template <class Acc, int Packs>
void head_lanes_rows(const row_tile<Acc>& tile, const Acc* weights, index_t length, index_t weight_stride,
                     Acc* scores, index_t score_stride) {
  // Enough independent FMA chains to hide the FMA latency, few enough to
  // stay in registers (32 on AVX-512 and NEON, 16 on AVX2 and SSE). 12 on
  // AVX2 (6 rows x 2 packs, 15 registers) ran about 8% slower than 8.
  constexpr int budget = simd::vector_registers >= 32 ? 16 : 8;
  constexpr int Rows = budget / Packs > 0 ? budget / Packs : 1;
  index_t r = 0;
  for (; r + Rows <= tile.count; r += Rows) {
    const Acc* ahead = r + 2 * Rows <= tile.count ? tile.row(r + Rows) : r + Rows == tile.count ? tile.next : nullptr;
    head_lanes_block<Acc, Rows, Packs>(tile.row(r), tile.stride, weights, length, weight_stride,
                                       scores + r * score_stride, score_stride, ahead);
  }
  for (; r < tile.count; ++r)
    head_lanes_block<Acc, 1, Packs>(tile.row(r), tile.stride, weights, length, weight_stride,
                                    scores + r * score_stride, score_stride, nullptr);
}

/// x . w over n elements: four packet accumulators, then the scalar tail.
template <class Acc>
EIGEN_STRONG_INLINE Acc dot(const Acc* x, const Acc* w, index_t n) {
  using P = packet<Acc>;
  constexpr index_t L = packet_size<Acc>;
  index_t f = 0;
  Acc total = 0;
  if (n >= L) {
    P a0 = ei::pset1<P>(Acc(0)), a1 = a0, a2 = a0, a3 = a0;
    for (; f + 4 * L <= n; f += 4 * L) {
      a0 = ei::pmadd(ei::ploadu<P>(x + f), ei::ploadu<P>(w + f), a0);
      a1 = ei::pmadd(ei::ploadu<P>(x + f + L), ei::ploadu<P>(w + f + L), a1);
      a2 = ei::pmadd(ei::ploadu<P>(x + f + 2 * L), ei::ploadu<P>(w + f + 2 * L), a2);
      a3 = ei::pmadd(ei::ploadu<P>(x + f + 3 * L), ei::ploadu<P>(w + f + 3 * L), a3);
    }
    for (; f + L <= n; f += L) a0 = ei::pmadd(ei::ploadu<P>(x + f), ei::ploadu<P>(w + f), a0);
    total = ei::predux(ei::padd(ei::padd(a0, a1), ei::padd(a2, a3)));
  }
  for (; f < n; ++f) total += x[f] * w[f];
  return total;
}

/// scores (tile.count x lane_heads, row stride `score_stride`) of a tile.
/// Lanes >= heads are set to 0.
template <class Acc>
void score_rows(const score_weights_packed<Acc>& w, const row_tile<Acc>& tile, Acc* scores, index_t score_stride) {
  constexpr index_t L = packet_size<Acc>;
  if (w.head_lanes) {
    const index_t packs = w.lane_heads / L;
    for (index_t k = 0; k < packs;) {
      const Acc* wk = w.transposed.data() + k * L;
      Acc* sk = scores + k * L;
      switch (std::min<index_t>(packs - k, 4)) {
        case 4: head_lanes_rows<Acc, 4>(tile, wk, w.length, w.lane_heads, sk, score_stride); k += 4; break;
        case 3: head_lanes_rows<Acc, 3>(tile, wk, w.length, w.lane_heads, sk, score_stride); k += 3; break;
        case 2: head_lanes_rows<Acc, 2>(tile, wk, w.length, w.lane_heads, sk, score_stride); k += 2; break;
        default: head_lanes_rows<Acc, 1>(tile, wk, w.length, w.lane_heads, sk, score_stride); k += 1; break;
      }
    }
    return;
  }
  for (index_t r = 0; r < tile.count; ++r) {
    Acc* out = scores + r * score_stride;
    for (index_t h = 0; h < w.heads; ++h) {
      const index_t offset = w.per_head ? h * w.head_dim : 0;
      out[h] = dot(tile.row(r) + offset, w.rows.data() + h * w.length, w.length);
    }
    for (index_t h = w.heads; h < w.lane_heads; ++h) out[h] = Acc(0);
  }
}

}  // namespace streamattn::detail::simd_additive

STREAMATTN_SIMD_DIAGNOSTICS_END
