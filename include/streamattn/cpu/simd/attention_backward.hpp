// The simd backend's backward pass: the scalar backend's two passes over
// tiles, with the five tile products done by Eigen's vectorised GEMM and the
// exponentials by its vectorised exp, on worker threads.
//
//   pass 1, one work item per (batch item, key/value head, key block):
//     for every query tile that sees the block, of every head of the group:
//       P = exp(S - lse), dS = P * (dO V^T - delta); dV += P^T dO, dK += dS^T Q
//   pass 2, one work item per (batch item, head, query tile):
//     for every key block the tile sees: dQ += dS K (and the bias gradient)
//
// Each gradient element is owned by one work item and summed in a fixed
// order, so the result does not depend on the thread count. The bias
// gradient is added by whichever pass keeps more items once the items that
// would add into the same elements (along the axes a broadcast bias sums
// over) are merged into one: pass 2 for most biases, pass 1 for a bias that
// sums over queries but not keys, like (1, 1, 1, Nk), which would leave pass 2
// a single item.
#pragma once

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../../backend.hpp"
#include "../../detail/attention_backward_params.hpp"
#include "../../detail/blocked_dot.hpp"
#include "../../detail/element.hpp"
#include "../../detail/head_rows.hpp"
#include "../../detail/math.hpp"
#include "../../detail/parallel.hpp"
#include "../../detail/score_terms.hpp"
#include "../../detail/validate_attention.hpp"
#include "softcap.hpp"

namespace streamattn::detail {
namespace simd_backward {

/// Queries per tile and keys per block unless the options set them. Pass 1
/// reloads a query tile for every key block and pass 2 a key block for
/// every query tile, and Eigen's GEMM runs faster on larger tiles: at
/// N = 4096, H = 8 on one AVX-512 core, 128 x 128 tiles ran the backward at
/// 40-41 GFLOP/s (D = 64) and 49 (D = 128) against 31 and 34 for 64 x 64;
/// 256 x 256 was no faster than 128 x 128.
inline constexpr index_t default_tile = 128;

template <class Acc>
using tile = Eigen::Map<Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
template <class Acc>
using column = Eigen::Map<Eigen::Matrix<Acc, Eigen::Dynamic, 1>>;

/// Storage of a tile, aligned to Eigen's largest packet: Eigen computes an
/// unaligned head of an expression with scalar code and the rest with
/// packets (whose exp rounds differently), so every worker's tiles must be
/// aligned alike for the result not to depend on which worker ran an item.
template <class Acc>
using tile_storage = std::vector<Acc, Eigen::aligned_allocator<Acc>>;

/// One worker's tiles, allocated once per call: O(tile sizes), not O(N).
template <class Acc>
struct worker_tiles {
  index_t q_tile, kv_block;
  tile_storage<Acc> q, dout, k, v, weights, d_dot, slopes, lse, delta, dk, dv, dq;
  worker_tiles(index_t q_rows, index_t kv_rows, index_t dim, index_t dim_v)
      : q_tile(q_rows),
        kv_block(kv_rows),
        q(static_cast<std::size_t>(q_rows * dim)),
        dout(static_cast<std::size_t>(q_rows * dim_v)),
        k(static_cast<std::size_t>(kv_rows * dim)),
        v(static_cast<std::size_t>(kv_rows * dim_v)),
        weights(static_cast<std::size_t>(q_rows * kv_rows)),
        d_dot(weights.size()),
        slopes(weights.size()),
        lse(static_cast<std::size_t>(q_rows)),
        delta(lse.size()),
        dk(k.size()),
        dv(v.size()),
        dq(q.size()) {}
};

/// The query-side tiles of rows [i0, i0 + rows) of head h: q, dout, and each
/// row's lse and delta = dout.out (0 and lse = -inf for a row that saw no key).
template <class Acc, class T, class To, class G>
void load_query_tile(const attention_backward_params<T, To, G>& g, worker_tiles<Acc>& w, index_t b, index_t h,
                     index_t i0, index_t rows) {
  const auto& p = g.fwd;
  load_rows(w.q.data(), p.query_head(p.q, p.q_stride, b, h), p.q_stride, i0, rows, p.dim);
  load_rows(w.dout.data(), g.dout + g.dout_offset(b, 0, h), g.dout_stride, i0, rows, p.dim_v);
  for (index_t r = 0; r < rows; ++r) {
    const index_t i = i0 + r;
    w.lse[static_cast<std::size_t>(r)] = static_cast<Acc>(*lse_at(p, b, h, i));
    const To* out_row = p.query_head(p.out, p.out_stride, b, h) + i * p.out_stride.seq;
    const Acc* dout_row = w.dout.data() + r * p.dim_v;
    Acc& delta = w.delta[static_cast<std::size_t>(r)];
    // Pass 1 reloads a query tile for every key block, so this dot product
    // runs once per key block for every row: as Eigen's packet dot where out
    // is a dense Acc row (the latency-bound scalar chain was most of the 20%
    // of the backward pass that loading query tiles took).
    if constexpr (std::is_same_v<To, Acc>) {
      if (p.out_stride.dim == 1) {
        using row_map = Eigen::Map<const Eigen::Matrix<Acc, 1, Eigen::Dynamic>>;
        delta = row_map(dout_row, p.dim_v).dot(row_map(out_row, p.dim_v));
        continue;
      }
    }
    delta = blocked_dot<Acc>(dout_row, 1, out_row, p.out_stride.dim, p.dim_v);
  }
}

/// Weights from a row's final scores: e^(s - lse) for s[0, n) in place,
/// exactly 0 where a score is -inf (a key a term hid; Eigen's exp clamps its
/// argument and would leave a tiny weight there). Whole packets, the tail
/// through one padded packet, so that a weight never depends on where its key
/// falls in a tile. One pass: the subtraction, the exp and the hiding were
/// three passes over the tile.
template <class Acc>
void weights_from_scores(Acc* s, index_t n, Acc lse) {
  namespace ei = Eigen::internal;
  using P = simd::packet<Acc>;
  constexpr index_t W = simd::packet_size<Acc>;
  const P row_lse = ei::pset1<P>(lse), lowest = ei::pset1<P>(Acc(-1000)), minus_inf = ei::pset1<P>(neg_inf<Acc>());
  const auto weight = [&](const P& score) {
    const P x = ei::psub(score, row_lse);  // -inf stays -inf (lse is finite)
    return ei::pandnot(ei::pexp(ei::pmax(x, lowest)), ei::pcmp_eq(x, minus_inf));
  };
  index_t j = 0;
  for (; j + W <= n; j += W) ei::pstoreu(s + j, weight(ei::ploadu<P>(s + j)));
  if (j == n) return;
  Acc lanes[W] = {};
  std::copy(s + j, s + n, lanes);
  ei::pstoreu(lanes, weight(ei::ploadu<P>(lanes)));
  std::copy(lanes, lanes + (n - j), s + j);
}

/// For the loaded query tile (rows i0..) and key block (keys j0..): the
/// weights P and dL/d(q.k) of every pair, 0 where a key is hidden; adds the
/// score gradients into the bias gradient when `with_bias` (in one of the
/// two passes, so that each is added once).
template <class Acc, class T, class To, class G>
void pair_gradients(const attention_backward_params<T, To, G>& g, worker_tiles<Acc>& w, index_t b, index_t h,
                    index_t i0, index_t rows, index_t j0, index_t cols, bool with_bias) {
  const auto& p = g.fwd;
  tile<Acc> q(w.q.data(), rows, p.dim), k(w.k.data(), cols, p.dim), dout(w.dout.data(), rows, p.dim_v),
      v(w.v.data(), cols, p.dim_v), weights(w.weights.data(), rows, cols), d_dot(w.d_dot.data(), rows, cols),
      slopes(w.slopes.data(), rows, cols);
  const visibility visible = p.visible_in(b);
  const bool softcap = p.softcap > 0.0f, terms_needed = p.has_score_terms();

  weights.noalias() = q * k.transpose();
  weights *= static_cast<Acc>(p.scale);
  const column<Acc> lse(w.lse.data(), rows);
  // Row by row over the keys each row sees (a row with no visible key has
  // lse = -inf and sees none): softcap exactly as the forward computed it
  // (simd::softcap_scores), then the other terms (a mask's hidden keys
  // become -inf), then the weights; 0 for the keys the row does not see.
  for (index_t r = 0; r < rows; ++r) {
    const index_t i = i0 + r;
    const Acc row_lse = lse(r);
    const key_range keys = visible.keys_of(i);
    const index_t lo = row_lse == neg_inf<Acc>() ? cols : std::clamp<index_t>(keys.begin - j0, 0, cols);
    const index_t hi = row_lse == neg_inf<Acc>() ? cols : std::clamp<index_t>(keys.end - j0, lo, cols);
    Acc* s = &weights(r, 0);
    std::fill(s, s + lo, Acc(0));
    std::fill(s + hi, s + cols, Acc(0));
    if (softcap) simd::softcap_scores(s + lo, hi - lo, static_cast<Acc>(p.softcap), &slopes(r, lo));
    if (terms_needed) make_score_row<Acc>(p, b, h, i).add_terms_to_keys(s + lo, j0 + lo, hi - lo);
    weights_from_scores(s + lo, hi - lo, row_lse);
  }

  d_dot.noalias() = dout * v.transpose();  // dP
  const column<Acc> delta(w.delta.data(), rows);
  for (index_t r = 0; r < rows; ++r)  // dS: the score gradients
    d_dot.row(r).array() = weights.row(r).array() * (d_dot.row(r).array() - delta(r));
  if (with_bias && g.dbias.data)
    for (index_t r = 0; r < rows; ++r) {
      // Hidden pairs add -0, which leaves every value as it was.
      float* row = &g.dbias_at(b, h, i0 + r, j0);
      const Acc *d = &d_dot(r, 0), *weight = &weights(r, 0);
      const index_t stride = g.dbias_stride.key;
      if (stride == 1)
        for (index_t c = 0; c < cols; ++c) row[c] += weight[c] != Acc(0) ? static_cast<float>(d[c]) : -0.0f;
      else
        for (index_t c = 0; c < cols; ++c) row[c * stride] += weight[c] != Acc(0) ? static_cast<float>(d[c]) : -0.0f;
    }
  if (softcap) d_dot.array() *= slopes.array();
  d_dot *= static_cast<Acc>(p.scale);
}

/// Keys of the block at j0 that the passes load: pass 2 walks pass 1's
/// blocks, so that both compute every pair's weight and score gradient
/// from the same tiles, bit for bit, and the bias gradient does not depend
/// on which of them adds it.
inline index_t keys_of_block(const visibility& visible, index_t j0, index_t kv_block) {
  return std::max<index_t>(0, std::min(j0 + kv_block, visible.nk) - j0);
}

template <class Acc, class T, class To, class G>
void key_block_item(const attention_backward_params<T, To, G>& g, worker_tiles<Acc>& w, index_t b, index_t kvh,
                    index_t j0, bool with_bias) {
  const auto& p = g.fwd;
  const index_t j1 = std::min(j0 + w.kv_block, p.key_rows_in(b));
  if (j1 <= j0) return;  // past a shorter packed item's key rows
  tile<Acc> dk(w.dk.data(), j1 - j0, p.dim), dv(w.dv.data(), j1 - j0, p.dim_v);
  dk.setZero();
  dv.setZero();
  // Keys past the item's length are never loaded; their gradients stay 0.
  const visibility visible = p.visible_in(b);
  const index_t cols = keys_of_block(visible, j0, w.kv_block);
  if (cols > 0) {
    load_rows(w.k.data(), p.key_head(p.k, p.k_stride, b, kvh), p.k_stride, j0, cols, p.dim);
    load_rows(w.v.data(), p.key_head(p.v, p.v_stride, b, kvh), p.v_stride, j0, cols, p.dim_v);
    for (index_t h = kvh * p.group_size(); h < (kvh + 1) * p.group_size(); ++h)
      for (index_t i0 = 0; i0 < visible.nq; i0 += w.q_tile) {
        const index_t rows = std::min(w.q_tile, visible.nq - i0);
        const key_range seen = visible.keys_of_rows(i0, i0 + rows - 1);
        if (seen.end <= j0 || seen.begin >= j0 + cols || seen.empty()) continue;
        load_query_tile(g, w, b, h, i0, rows);
        pair_gradients(g, w, b, h, i0, rows, j0, cols, with_bias);
        const tile<Acc> weights(w.weights.data(), rows, cols), d_dot(w.d_dot.data(), rows, cols),
            q(w.q.data(), rows, p.dim), dout(w.dout.data(), rows, p.dim_v);
        dv.topRows(cols).noalias() += weights.transpose() * dout;
        dk.topRows(cols).noalias() += d_dot.transpose() * q;
      }
  }
  store_rows(p.key_head(g.dk, g.dk_stride, b, kvh), g.dk_stride, w.dk.data(), j0, j1 - j0, p.dim);
  store_rows(p.key_head(g.dv, g.dv_stride, b, kvh), g.dv_stride, w.dv.data(), j0, j1 - j0, p.dim_v);
}

template <class Acc, class T, class To, class G>
void query_tile_item(const attention_backward_params<T, To, G>& g, worker_tiles<Acc>& w, index_t b, index_t h,
                     index_t i0, bool with_bias) {
  const auto& p = g.fwd;
  const index_t rows = std::min(w.q_tile, p.queries_in(b) - i0);
  if (rows <= 0) return;  // past a shorter packed item's queries
  tile<Acc> dq(w.dq.data(), rows, p.dim);
  dq.setZero();
  load_query_tile(g, w, b, h, i0, rows);
  const index_t kvh = p.kv_head_of(h);
  const visibility visible = p.visible_in(b);
  const key_range seen = visible.keys_of_rows(i0, i0 + rows - 1);
  const index_t first_block = seen.empty() ? seen.end : seen.begin - seen.begin % w.kv_block;
  for (index_t j0 = first_block; j0 < seen.end; j0 += w.kv_block) {
    const index_t cols = keys_of_block(visible, j0, w.kv_block);
    load_rows(w.k.data(), p.key_head(p.k, p.k_stride, b, kvh), p.k_stride, j0, cols, p.dim);
    load_rows(w.v.data(), p.key_head(p.v, p.v_stride, b, kvh), p.v_stride, j0, cols, p.dim_v);
    pair_gradients(g, w, b, h, i0, rows, j0, cols, with_bias);
    const tile<Acc> d_dot(w.d_dot.data(), rows, cols), k(w.k.data(), cols, p.dim);
    dq.noalias() += d_dot * k;
  }
  store_rows(p.query_head(g.dq, g.dq_stride, b, h), g.dq_stride, w.dq.data(), i0, rows, p.dim);
}

/// A pass's work items: its grid of (batch item, head, tile) with each axis
/// the bias gradient sums over folded into the items, so that one item owns
/// every dbias element it adds into and adds in the grid's order.
struct item_grid {
  std::array<index_t, 3> extent;  // batch items, heads, tiles
  std::array<bool, 3> folded{};

  index_t items() const {
    index_t n = 1;
    for (int a = 0; a < 3; ++a) n *= folded[a] ? 1 : extent[a];
    return n;
  }

  /// Calls body(b, h, t) for every grid point of `item`, in grid order.
  template <class Body>
  void for_each_in(index_t item, Body&& body) const {
    std::array<index_t, 3> begin{}, end = extent;
    for (int a = 2; a >= 0; --a) {
      if (folded[a]) continue;
      const index_t e = std::max<index_t>(extent[a], 1);
      begin[a] = item % e;
      end[a] = begin[a] + 1;
      item /= e;
    }
    for (index_t b = begin[0]; b < end[0]; ++b)
      for (index_t h = begin[1]; h < end[1]; ++h)
        for (index_t t = begin[2]; t < end[2]; ++t) body(b, h, t);
  }
};

}  // namespace simd_backward

template <class T, class To, class G>
void attention_backward_impl(simd_t, const attention_backward_params<T, To, G>& g) {
  using Acc = accum_t<T>;
  const auto& p = g.fwd;
  check_index_values("streamattn::attention_backward", p);
  g.zero_dbias();
  const index_t q_tile = g.query_tile(simd_backward::default_tile), kv_block = g.key_block(simd_backward::default_tile);
  const index_t key_blocks = (p.nk + kv_block - 1) / kv_block;
  const index_t query_tiles = (p.nq + q_tile - 1) / q_tile;
  // Seven (Nq x Nk x D)-sized products over both passes.
  const double work = 7.0 * 2.0 * static_cast<double>(p.batch * p.hq) * static_cast<double>(p.nq) *
                      static_cast<double>(p.nk) * static_cast<double>(std::max(p.dim, p.dim_v));

  // Pass 1's items split the keys and pass 2's the queries; with a bias
  // gradient, the pass that keeps more items once the axes dbias sums over
  // are folded adds it (pass 2 on a tie).
  const bool with_bias = g.dbias.data != nullptr;
  const bhqk_strides& ds = g.dbias_stride;
  simd_backward::item_grid pass1{{p.batch, p.hk, key_blocks}}, pass2{{p.batch, p.hq, query_tiles}};
  const simd_backward::item_grid pass1_bias{pass1.extent, {ds.batch == 0, ds.head == 0, ds.key == 0}},
      pass2_bias{pass2.extent, {ds.batch == 0, ds.head == 0, ds.query == 0}};
  const bool bias_in_pass1 = with_bias && pass1_bias.items() > pass2_bias.items();
  const bool bias_in_pass2 = with_bias && !bias_in_pass1;
  if (bias_in_pass1) pass1 = pass1_bias;
  if (bias_in_pass2) pass2 = pass2_bias;

  const int workers1 = plan_threads(p.threads, pass1.items(), work / 2);
  const int workers2 = plan_threads(p.threads, pass2.items(), work / 2);
  std::vector<simd_backward::worker_tiles<Acc>> tiles;
  for (int t = 0; t < std::max(workers1, workers2); ++t) tiles.emplace_back(q_tile, kv_block, p.dim, p.dim_v);
  parallel_for(pass1.items(), workers1, [&](index_t item, int worker) {
    auto& w = tiles[static_cast<std::size_t>(worker)];
    pass1.for_each_in(item, [&](index_t b, index_t kvh, index_t block) {
      simd_backward::key_block_item(g, w, b, kvh, block * kv_block, bias_in_pass1);
    });
  });
  parallel_for(pass2.items(), workers2, [&](index_t item, int worker) {
    auto& w = tiles[static_cast<std::size_t>(worker)];
    pass2.for_each_in(item, [&](index_t b, index_t h, index_t t) {
      simd_backward::query_tile_item(g, w, b, h, t * q_tile, bias_in_pass2);
    });
  });
}

}  // namespace streamattn::detail
