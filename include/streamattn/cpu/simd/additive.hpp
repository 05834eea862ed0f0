// The simd backend of additive pooling and Fastformer: the scalar backend's
// passes (see cpu/scalar_additive.hpp), vectorised with Eigen packets and
// multithreaded.
//
// Work distribution, with no effect on the result:
//  - many sequences (or short ones): whole sequences run in parallel;
//  - few long sequences: each pooling pass splits one sequence into subtrees
//    of the fixed leaf tree (detail/additive_tree.hpp), computed on any
//    thread and combined in the tree's order, and the output pass splits the
//    rows. One 1M-token sequence thus uses every core.
//  - causal: whole sequences run in parallel where there are enough of them
//    to keep the threads busy; otherwise each sequence's scan is split by
//    leaves across the threads (additive_causal_split.hpp), which costs about
//    a third more work and gives the same bits.
// Results are bitwise identical for every thread count. Extra memory per
// thread: a tile of rows and scores, the packed weights (H x D), one tree
// state per level (log2 of the number of leaves), one output tile; a split
// causal scan holds one leaf of rows and scores (1024 x (D + 2 H') numbers,
// H' = H rounded up to whole packets) in place of the tree states; nothing
// grows with N.
#pragma once

#include <algorithm>
#include <memory>
#include <type_traits>
#include <vector>

#include "../../backend.hpp"
#include "../../detail/additive_params.hpp"
#include "../../detail/additive_tree.hpp"
#include "../../detail/element.hpp"
#include "../../detail/parallel.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "additive_causal.hpp"
#include "additive_causal_split.hpp"
#include "additive_rows.hpp"
#include "additive_scores.hpp"
#include "additive_state.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd_additive {

/// Rough flop-equivalents per token of one pooling pass, to decide threads.
inline double pooling_work_per_token(const additive_shape& s) {
  return 2.0 * static_cast<double>(s.heads * s.weight_length()) + 4.0 * static_cast<double>(s.dim);
}

/// Everything one thread needs to pool leaves of one operand.
template <class Acc, class T>
struct pooling_worker {
  row_reader<Acc, T> reader;
  std::vector<Acc> scores;  // tile_tokens x lane_heads
  tile_scratch<Acc> tile;
  bool keep[tile_tokens] = {};
  std::vector<pool_state<Acc>> levels;  // tree states, one per level
  std::vector<pool_state<Acc>*> level_pointers;

  void reshape(const token_operand<const T>& x, const additive_shape& s) {
    reader.reshape(x, s.dim, tile_tokens, true);
    scores.resize(static_cast<std::size_t>(tile_tokens * round_up_to_packets<Acc>(s.heads)));
    tile.reshape(s);
    const std::size_t depth = static_cast<std::size_t>(tree_depth(leaf_count(s.tokens)) + 1);
    if (levels.size() != depth) {
      levels.resize(depth);
      level_pointers.resize(depth);
      for (std::size_t d = 0; d < depth; ++d) level_pointers[d] = &levels[d];
    }
    for (auto& l : levels) l.reshape(s);
  }
};

/// Accumulates leaf `leaf` of sequence b (of the operand `w.reader` reads)
/// into `state`, after resetting it.
template <class Acc, class T>
void pool_leaf(index_t b, index_t leaf, const additive_shape& s, const keep_mask_ref& mask,
               const score_weights_packed<Acc>& weights, pool_state<Acc>& state, pooling_worker<Acc, T>& w) {
  state.reset();
  const index_t lanes = weights.lane_heads;
  const index_t first = leaf * additive_leaf_tokens;
  const index_t end = std::min(s.tokens, first + additive_leaf_tokens);
  for (index_t t0 = first; t0 < end; t0 += tile_tokens) {
    // Excluded tokens are never read: NaN padding cannot leak in.
    row_tile<Acc> rows =
        w.reader.tile(b, t0, std::min(end, t0 + tile_tokens), [&](index_t j) { return mask.keep(b, j); },
                      mask.exclude, w.keep);
    if (rows.count == 0) continue;
    if (rows.base == w.reader.in_place_row(b, t0) && t0 + 2 * tile_tokens <= s.tokens)
      rows.next = w.reader.in_place_row(b, t0 + tile_tokens);
    score_rows(weights, rows, w.scores.data(), lanes);
    if (mask.any() && !mask.exclude) {
      // The official additive mask, exactly (see detail/additive_state.hpp).
      bool any_kept = false;
      for (index_t r = 0; r < rows.count; ++r) any_kept = any_kept || w.keep[r];
      if (any_kept && !state.saw_kept) state.shift_to_common_scale();
      if (state.saw_kept)
        for (index_t r = 0; r < rows.count; ++r)
          if (!w.keep[r])
            for (index_t h = 0; h < lanes; ++h)
              w.scores[static_cast<std::size_t>(r * lanes + h)] += static_cast<Acc>(additive_mask_penalty);
    }
    accumulate_tile(state, w.scores.data(), rows, w.tile);
  }
}

/// Pools sequence b (of the operand `w` reads) on one thread into `pooled` (D).
template <class Acc, class T>
void pool_sequence(index_t b, const additive_shape& s, const keep_mask_ref& mask,
                   const score_weights_packed<Acc>& weights, pooling_worker<Acc, T>& w, Acc* pooled) {
  pool_state<Acc>& result = w.levels[0];
  result.reset();
  if (s.tokens > 0)
    reduce_tree(leaf_range{0, leaf_count(s.tokens)}, result, w.level_pointers.data() + 1,
                [&](index_t leaf, pool_state<Acc>& st) { pool_leaf(b, leaf, s, mask, weights, st, w); });
  result.finalize(pooled);
}

/// Pools sequence b with `threads` threads splitting its leaf tree; the
/// result is bitwise the one of `pool_sequence`. `worker_of(t)` is thread
/// t's pooling_worker.
template <class Acc, class WorkerOf>
void pool_sequence_split(index_t b, const additive_shape& s, const keep_mask_ref& mask,
                         const score_weights_packed<Acc>& weights, WorkerOf&& worker_of, int threads,
                         std::vector<pool_state<Acc>>& slots, Acc* pooled) {
  const leaf_range all{0, leaf_count(s.tokens)};
  const int levels = split_levels(all.size(), threads);
  std::vector<leaf_range> subtrees;
  list_subtrees(all, levels, subtrees);
  if (slots.size() < subtrees.size()) slots.resize(subtrees.size());
  std::vector<pool_state<Acc>*> slot_pointers(subtrees.size());
  for (std::size_t i = 0; i < subtrees.size(); ++i) slot_pointers[i] = &slots[i];
  parallel_for(static_cast<index_t>(subtrees.size()), threads, [&](index_t item, int worker) {
    auto& w = worker_of(worker);
    pool_state<Acc>& slot = slots[static_cast<std::size_t>(item)];
    slot.reshape(s);
    reduce_tree(subtrees[static_cast<std::size_t>(item)], slot, w.level_pointers.data() + 1,
                [&](index_t leaf, pool_state<Acc>& st) { pool_leaf(b, leaf, s, mask, weights, st, w); });
  });
  std::size_t next = 0;
  const std::size_t root = combine_subtrees(all, levels, slot_pointers.data(), next);
  slots[root].finalize(pooled);
}

/// Whether to split single sequences across threads rather than run whole
/// sequences in parallel.
inline bool split_sequences(const additive_shape& s, int threads) {
  return threads > 1 && s.batch < 2 * static_cast<index_t>(threads) && leaf_count(s.tokens) >= 4;
}

/// The same choice for the causal scan, whose split costs about a third
/// more work than scanning whole sequences (measured on 2 cores: one
/// 1M-token sequence split over 2 threads ran at 1.2-1.7x one thread, two
/// sequences side by side at about 1.8x). Split only where the split scans
/// finish first: B sequences, each ceil(L / T) rounds of its L leaves at
/// 4/3 the work, against ceil(B / T) rounds of whole sequences.
inline bool split_causal_sequences(const additive_shape& s, int threads) {
  const index_t leaves = leaf_count(s.tokens), t = threads;
  if (t <= 1 || leaves < 4) return false;
  const index_t whole_rounds = (s.batch + t - 1) / t, leaf_rounds = (leaves + t - 1) / t;
  return 3 * whole_rounds * leaves > 4 * s.batch * leaf_rounds;
}

/// Threads of a split causal scan: never more than a sequence has leaves.
inline int causal_split_threads(const additive_shape& s, int threads) {
  return static_cast<int>(std::min<index_t>(threads, leaf_count(s.tokens)));
}

template <class Acc, class T, class W, class Tout>
void additive_pool_simd(const additive_pool_params<T, W, Tout>& p) {
  const additive_shape& s = p.shape;
  const Acc scale = static_cast<Acc>(p.scale);
  const double work = pooling_work_per_token(s) * static_cast<double>(s.batch * s.tokens);

  const int most = plan_threads(p.threads, std::max(s.batch, leaf_count(s.tokens)), work);
  const bool split = split_sequences(s, most);

  if (p.causal && !split_causal_sequences(s, most)) {
    const int threads = plan_threads(p.threads, s.batch, work);
    struct scan_worker {
      causal_engine<Acc> engine;
      row_reader<Acc, T> reader;
      std::vector<Acc> results;
    };
    std::vector<std::unique_ptr<scan_worker>> workers(static_cast<std::size_t>(threads));
    parallel_for(s.batch, threads, [&](index_t b, int worker) {
      auto& w = workers[static_cast<std::size_t>(worker)];
      if (!w) {
        w.reset(new scan_worker{causal_engine<Acc>(s, p.w, static_cast<const score_weights_ref<W>*>(nullptr), scale,
                                                   p.mask.exclude, false),
                                row_reader<Acc, T>(p.x, s.dim, tile_tokens), {}});
        w->results.resize(static_cast<std::size_t>(tile_tokens * s.dim));
      }
      w->engine.reset();
      bool keep[tile_tokens];
      for (index_t t0 = 0; t0 < s.tokens; t0 += tile_tokens) {
        const index_t count = std::min(tile_tokens, s.tokens - t0);
        const row_tile<Acc> rows =
            w->reader.tile(b, t0, t0 + count, [&](index_t j) { return p.mask.keep(b, j); }, false, keep);
        w->engine.push(rows, rows, keep, w->results.data());
        for (index_t r = 0; r < count; ++r)
          for (index_t f = 0; f < s.dim; ++f)
            p.prefix.at(b, t0 + r, f) = convert<Tout>(w->results[static_cast<std::size_t>(r * s.dim + f)]);
      }
    });
    return;
  }

  score_weights_packed<Acc> weights;
  weights.reshape(s);
  weights.fill(p.w, scale);
  if (p.causal) {
    split_causal_scan<Acc, T> scan({s, &weights, nullptr, p.mask, false}, p.x, p.x, causal_split_threads(s, most));
    for (index_t b = 0; b < s.batch; ++b)
      scan.run(b, [&](int, index_t first, index_t count, const Acc* rows) {
        for (index_t r = 0; r < count; ++r)
          for (index_t f = 0; f < s.dim; ++f) p.prefix.at(b, first + r, f) = convert<Tout>(rows[r * s.dim + f]);
      });
    return;
  }
  const int threads = split ? most : plan_threads(p.threads, s.batch, work);
  std::vector<pooling_worker<Acc, T>> workers(static_cast<std::size_t>(threads));
  for (auto& w : workers) w.reshape(p.x, s);
  std::vector<Acc> pooled(static_cast<std::size_t>(threads * s.dim));
  auto store = [&](index_t b, const Acc* v) {
    for (index_t f = 0; f < s.dim; ++f) p.out[b * p.out_batch_stride + f * p.out_feature_stride] = convert<Tout>(v[f]);
  };
  if (split) {
    std::vector<pool_state<Acc>> slots;
    for (index_t b = 0; b < s.batch; ++b) {
      pool_sequence_split(
          b, s, p.mask, weights, [&](int t) -> auto& { return workers[static_cast<std::size_t>(t)]; }, threads, slots,
          pooled.data());
      store(b, pooled.data());
    }
    return;
  }
  parallel_for(s.batch, threads, [&](index_t b, int worker) {
    Acc* out = pooled.data() + worker * s.dim;
    pool_sequence(b, s, p.mask, weights, workers[static_cast<std::size_t>(worker)], out);
    store(b, out);
  });
}

/// Per-thread state of non-causal Fastformer.
template <class Acc, class T, class Tout>
struct fastformer_worker {
  pooling_worker<Acc, T> queries, keys;
  output_writer<Acc, T, Tout> writer;
  score_weights_packed<Acc> key_weights;  // W_ka folded with this sequence's q̄
  std::vector<Acc> qbar, kbar;
};

template <class Acc, class T, class W, class Tout>
void fastformer_simd(const fastformer_params<T, W, Tout>& p) {
  static_assert(std::is_same_v<W, Acc>, "Fastformer weights are in the accumulation type");
  const additive_shape& s = p.shape;
  const Acc scale = static_cast<Acc>(p.scale);
  const transform_matrix<Acc> transform(p);
  const double dense_output = p.has_transform() ? 2.0 * static_cast<double>(s.dim * s.dim) : 1.0 * static_cast<double>(s.dim);
  const double work =
      (2.0 * pooling_work_per_token(s) + dense_output) * static_cast<double>(s.batch * s.tokens);

  const int most = plan_threads(p.threads, std::max(s.batch, leaf_count(s.tokens)), work);
  const bool split = split_sequences(s, most);

  if (p.causal && !split_causal_sequences(s, most)) {
    const int threads = plan_threads(p.threads, s.batch, work);
    struct scan_worker {
      causal_engine<Acc> engine;
      row_reader<Acc, T> queries, keys;
      output_writer<Acc, T, Tout> writer;
      std::vector<Acc> kbar;
    };
    std::vector<std::unique_ptr<scan_worker>> workers(static_cast<std::size_t>(threads));
    parallel_for(s.batch, threads, [&](index_t b, int worker) {
      auto& w = workers[static_cast<std::size_t>(worker)];
      if (!w) {
        w.reset(new scan_worker{causal_engine<Acc>(s, p.query_att, &p.key_att, scale, p.mask.exclude, p.pool_raw_keys),
                                row_reader<Acc, T>(p.q, s.dim, tile_tokens), row_reader<Acc, T>(p.k, s.dim, tile_tokens),
                                {}, {}});
        w->writer.reshape(p);
        w->kbar.resize(static_cast<std::size_t>(output_tile_tokens * s.dim));
      }
      w->engine.reset();
      bool keep[tile_tokens];
      auto keep_of = [&](index_t j) { return p.mask.keep(b, j); };
      for (index_t o0 = 0; o0 < s.tokens; o0 += output_tile_tokens) {
        const index_t o1 = std::min(s.tokens, o0 + output_tile_tokens);
        for (index_t t0 = o0; t0 < o1; t0 += tile_tokens) {
          const index_t t1 = std::min(o1, t0 + tile_tokens);
          const row_tile<Acc> q = w->queries.tile(b, t0, t1, keep_of, false, keep);
          const row_tile<Acc> k = w->keys.tile(b, t0, t1, keep_of, false, keep);
          w->engine.push(q, k, keep, w->kbar.data() + (t0 - o0) * s.dim);
        }
        w->writer.write(transform, b, o0, o1 - o0, w->kbar.data(), s.dim);
      }
    });
    return;
  }

  score_weights_packed<Acc> query_weights, key_weights;
  query_weights.reshape(s);
  query_weights.fill(p.query_att, scale);
  key_weights.reshape(s);
  key_weights.fill(p.key_att, scale);
  if (p.causal) {
    const int threads = causal_split_threads(s, most);
    split_causal_scan<Acc, T> scan({s, &query_weights, &key_weights, p.mask, p.pool_raw_keys}, p.q, p.k, threads);
    std::vector<output_writer<Acc, T, Tout>> writers(static_cast<std::size_t>(threads));
    for (auto& w : writers) w.reshape(p);
    for (index_t b = 0; b < s.batch; ++b)
      scan.run(b, [&](int worker, index_t first, index_t count, const Acc* kbar) {
        writers[static_cast<std::size_t>(worker)].write(transform, b, first, count, kbar, s.dim);
      });
    return;
  }

  const int threads = split ? most : plan_threads(p.threads, s.batch, work);
  std::vector<fastformer_worker<Acc, T, Tout>> workers(static_cast<std::size_t>(threads));
  for (auto& w : workers) {
    w.queries.reshape(p.q, s);
    w.keys.reshape(p.k, s);
    w.writer.reshape(p);
    w.qbar.resize(static_cast<std::size_t>(s.dim));
    w.kbar.resize(static_cast<std::size_t>(s.dim));
    w.key_weights.reshape(s);
  }

  // k̄ from the pooled keys: the official pools P = K ⊙ q̄, which is
  // q̄ ⊙ (pooled K) since q̄ is the same for every token.
  auto global_key = [&](const Acc* qbar, Acc* kbar) {
    if (!p.pool_raw_keys)
      for (index_t f = 0; f < s.dim; ++f) kbar[f] *= qbar[f];
  };

  if (split) {
    std::vector<pool_state<Acc>> slots;
    auto queries_of = [&](int t) -> auto& { return workers[static_cast<std::size_t>(t)].queries; };
    auto keys_of = [&](int t) -> auto& { return workers[static_cast<std::size_t>(t)].keys; };
    std::vector<Acc> qbar(static_cast<std::size_t>(s.dim)), kbar(static_cast<std::size_t>(s.dim));
    score_weights_packed<Acc> folded;
    folded.reshape(s);
    const index_t chunks = (s.tokens + output_tile_tokens - 1) / output_tile_tokens;
    for (index_t b = 0; b < s.batch; ++b) {
      pool_sequence_split(b, s, p.mask, query_weights, queries_of, threads, slots, qbar.data());
      folded.fold_from(key_weights, qbar.data());
      pool_sequence_split(b, s, p.mask, folded, keys_of, threads, slots, kbar.data());
      global_key(qbar.data(), kbar.data());
      parallel_for(chunks, threads, [&](index_t chunk, int worker) {
        const index_t first = chunk * output_tile_tokens;
        workers[static_cast<std::size_t>(worker)].writer.write(transform, b, first,
                                                               std::min(output_tile_tokens, s.tokens - first),
                                                               kbar.data(), 0);
      });
    }
    return;
  }

  parallel_for(s.batch, threads, [&](index_t b, int worker) {
    fastformer_worker<Acc, T, Tout>& w = workers[static_cast<std::size_t>(worker)];
    pool_sequence(b, s, p.mask, query_weights, w.queries, w.qbar.data());
    w.key_weights.fold_from(key_weights, w.qbar.data());
    pool_sequence(b, s, p.mask, w.key_weights, w.keys, w.kbar.data());
    global_key(w.qbar.data(), w.kbar.data());
    w.writer.write(transform, b, 0, s.tokens, w.kbar.data(), 0);
  });
}

}  // namespace streamattn::detail::simd_additive

namespace streamattn::detail {

template <class T, class W, class Tout>
void additive_pool_impl(simd_t, const additive_pool_params<T, W, Tout>& p) {
  simd_additive::additive_pool_simd<accum_t<T>>(p);
}

template <class T, class W, class Tout>
void fastformer_impl(simd_t, const fastformer_params<T, W, Tout>& p) {
  simd_additive::fastformer_simd<accum_t<T>>(p);
}

}  // namespace streamattn::detail

STREAMATTN_SIMD_DIAGNOSTICS_END
