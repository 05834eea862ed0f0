// The block programs of additive pooling and Fastformer on the GPU, and the
// order they run in. Every program is a function of (args, block index,
// shared memory) built from the phases of additive_tile.cuh, so it runs the
// same on the GPU (additive_kernel.cuh) and on the test suite's SIMT
// emulator (test_cuda_emulated_fastformer.cpp).
//
// Non-causal (per sequence: the three passes of the scalar backend, each
// pooling split into chunks whose states merge in a fixed order):
//   pool_queries     chunk (b, c) -> state of Q's pooling over the chunk
//   combine_queries  sequence b   -> q̄ (merge of the chunk states, in order)
//   pool_keys        chunk (b, c) -> state of pooling P = K ⊙ q̄ (or K) scored by P
//   combine_keys     sequence b   -> k̄
//   outputs          chunk (b, c) -> U = V ⊙ k̄, then W_t U + b_t (+ Q)
//
// With an output transform, a first step copies W_tᵀ into the workspace:
//   transpose_transform  row f of W_tᵀ  (additive_transform.cuh)
//
// Causal (the merge is associative, so the prefix states are a scan over
// chunks: totals per chunk, an exclusive scan of them, then every chunk
// rescans its tokens from its carry-in):
//   pool_queries       chunk totals of Q's pooling
//   scan_queries       carry-in of every chunk
//   causal_key_totals  chunk rescan of q̄_t, and chunk totals of pooling P_t = K_t ⊙ q̄_t
//   scan_keys          carry-in of the key pooling
//   causal_outputs     chunk rescan of q̄_t and k̄_t, U_t = V_t ⊙ k̄_t, outputs
// additive_prefix_pool stops after scan_queries with causal_prefix_pool.
// Where the causal rescans stream (causal_rescans_stream), the chunk totals
// also keep the state of each warp's span of the chunk, and the rescans
// run as warps streaming their spans (additive_stream_causal.cuh). With a
// transform, causal_outputs then writes U = V ⊙ k̄_t to `out` where that is
// float (else it stays a block program), and one more step applies it:
//   transform_outputs  chunk (b, c) -> W_t U + b_t (+ Q), in place
#pragma once

#include "additive_args.cuh"
#include "additive_tile.cuh"
#include "additive_transform.cuh"

namespace streamattn::detail::gpu {

enum class additive_step : unsigned char {
  pool_queries,
  combine_queries,
  pool_keys,
  combine_keys,
  outputs,
  scan_queries,
  scan_keys,
  causal_key_totals,
  causal_outputs,
  causal_prefix_pool,
  transpose_transform,
  transform_outputs,
};

/// True for steps with one block per chunk; the others have one per
/// sequence, except transpose_transform (one per feature).
STREAMATTN_HOST_DEVICE bool is_chunk_step(additive_step step) {
  return step != additive_step::combine_queries && step != additive_step::combine_keys &&
         step != additive_step::scan_queries && step != additive_step::scan_keys &&
         step != additive_step::transpose_transform;
}

/// Whether a causal call with a transform streams its rescans' outputs U
/// into `out` and transforms them there (transform_outputs): where the
/// rescans stream and `out` holds U exactly (float, the accumulation type).
template <class S>
STREAMATTN_HOST_DEVICE bool transforms_in_place(const additive_args<S>& a) {
  return a.streaming && a.causal_streaming && a.has_transform() && a.out_kind == element_kind::f32 &&
         sizeof(device_accum_t<S>) == 4;
}

/// True for the steps additive_stream.cuh runs instead of a block program:
/// the chunk poolings of pool_queries and pool_keys where pooling_streams,
/// the outputs without a transform (U = V ⊙ k̄), and the causal rescans
/// where they stream (causal_rescans_stream; the outputs without a
/// transform or, where transforms_in_place, with one).
template <class S>
STREAMATTN_HOST_DEVICE bool streams(const additive_args<S>& a, additive_step step) {
  if (!a.streaming) return false;
  switch (step) {
    case additive_step::pool_queries:
    case additive_step::pool_keys: return a.stream_pooling;
    case additive_step::outputs: return !a.has_transform();
    case additive_step::causal_key_totals:
    case additive_step::causal_prefix_pool: return a.causal_streaming;
    case additive_step::causal_outputs: return a.causal_streaming && (!a.has_transform() || transforms_in_place(a));
    default: return false;
  }
}

/// Calls launch(step, blocks) for every step of the call, in order.
template <class S, class Launch>
void for_each_additive_step(const additive_args<S>& a, Launch&& launch) {
  const index_t chunk_blocks = a.shape.batch * a.chunks, sequence_blocks = a.shape.batch;
  auto run = [&](additive_step step) { launch(step, is_chunk_step(step) ? chunk_blocks : sequence_blocks); };
  if (a.has_transform()) launch(additive_step::transpose_transform, a.shape.dim);
  run(additive_step::pool_queries);
  if (a.job == additive_job::pool) {
    run(additive_step::combine_queries);
  } else if (a.job == additive_job::prefix_pool) {
    run(additive_step::scan_queries);
    run(additive_step::causal_prefix_pool);
  } else if (!a.causal) {
    run(additive_step::combine_queries);
    run(additive_step::pool_keys);
    run(additive_step::combine_keys);
    run(additive_step::outputs);
  } else {
    run(additive_step::scan_queries);
    run(additive_step::causal_key_totals);
    run(additive_step::scan_keys);
    run(additive_step::causal_outputs);
    if (transforms_in_place(a)) run(additive_step::transform_outputs);
  }
}

/// One block's view of its shared memory and of the workspace.
template <class S>
struct additive_block {
  using Acc = device_accum_t<S>;

  const additive_args<S>& a;
  Acc* smem;
  block_team team;

  STREAMATTN_HOST_DEVICE const additive_shape& shape() const { return a.shape; }
  STREAMATTN_HOST_DEVICE index_t state_length() const { return a.smem.state().length(); }
  STREAMATTN_HOST_DEVICE Acc* first_tile() const { return smem + a.smem.first_tile(); }
  STREAMATTN_HOST_DEVICE Acc* second_tile() const { return smem + a.smem.second_tile(); }
  STREAMATTN_HOST_DEVICE Acc* weights() const { return smem + a.smem.weights(); }
  STREAMATTN_HOST_DEVICE Acc* rescales() const { return smem + a.smem.rescales(); }
  STREAMATTN_HOST_DEVICE Acc* sums() const { return smem + a.smem.sums(); }
  STREAMATTN_HOST_DEVICE Acc* keeps() const { return smem + a.smem.keeps(); }
  STREAMATTN_HOST_DEVICE Acc* vector() const { return smem + a.smem.vector(); }
  STREAMATTN_HOST_DEVICE state_ref<Acc> first_state() const { return {smem + a.smem.first_state(), a.smem.state()}; }
  STREAMATTN_HOST_DEVICE state_ref<Acc> second_state() const { return {smem + a.smem.second_state(), a.smem.state()}; }

  /// The workspace state of chunk (b, c) in the region starting at `region`.
  STREAMATTN_HOST_DEVICE Acc* chunk_state(index_t region, index_t b, index_t c) const {
    return a.workspace + region + (b * a.chunks + c) * state_length();
  }
  /// The states of the warps' spans of chunk (b, c) in the region starting
  /// at `region` (additive_plan::causal_streaming), warp w's at + w * state
  /// length.
  STREAMATTN_HOST_DEVICE Acc* span_states(index_t region, index_t b, index_t c) const {
    return a.workspace + region + (b * a.chunks + c) * stream_warps * state_length();
  }
  /// q̄ or k̄ of sequence b.
  STREAMATTN_HOST_DEVICE Acc* pooled(index_t region, index_t b) const {
    return a.workspace + region + b * shape().dim;
  }

  STREAMATTN_HOST_DEVICE void set_empty(const state_ref<Acc>& s) const {
    team.for_each(state_length(), [&](index_t i) { s.base[i] = empty_state_value<Acc>(s.layout, i); });
  }
  STREAMATTN_HOST_DEVICE void copy(Acc* to, const Acc* from, index_t n) const {
    team.for_each(n, [&](index_t i) { to[i] = from[i]; });
  }

  /// Feeds tile [t0, t0 + n) of operand x, already in `tile` (keeps set),
  /// through one pooling: scores (tokens scaled by `mult` first when given),
  /// the values pooled (`tile` itself, or tile ⊙ mult when `pool_scaled`),
  /// and the head and feature scans. `prefix` (may be `tile`) receives every
  /// prefix pooling.
  STREAMATTN_HOST_DEVICE void pool_tile(Acc* tile, index_t n, const score_weights_ref<Acc>& w, const Acc* mult,
                                        index_t mult_pitch, bool pool_scaled, const state_ref<Acc>& state,
                                        Acc* prefix) const {
    const additive_shape& s = shape();
    const index_t pitch = a.smem.pitch;
    score_tokens(team, tile, pitch, mult, mult_pitch, w, s, a.scale, keeps(), a.mask.exclude, n, weights());
    if (pool_scaled)
      team.for_each_pair(n, s.dim, [&](index_t t, index_t f) {
        tile[t * pitch + f] *= mult[t * mult_pitch + f];
      });
    scan_heads(team, weights(), rescales(), prefix != nullptr ? sums() : nullptr, keeps(), state, s.heads, n);
    scan_features(team, tile, pitch, weights(), rescales(), sums(), prefix, state, s, n);
  }

  /// Tokens [first, last) of chunk c of sequence b.
  STREAMATTN_HOST_DEVICE index_t chunk_first(index_t c) const { return c * a.chunk_tokens; }
  STREAMATTN_HOST_DEVICE index_t chunk_last(index_t c) const {
    const index_t end = chunk_first(c) + a.chunk_tokens;
    return end < shape().tokens ? end : shape().tokens;
  }

  /// Output rows [t0, t0 + n) of sequence b: U = V ⊙ k̄ (k̄ the rows of
  /// `kbar` with pitch `kbar_pitch`, 0 for one vector), and with a transform
  /// Y = W_t U + b_t (+ Q). U is staged in `staging`, which may be `kbar`.
  STREAMATTN_HOST_DEVICE void write_outputs(index_t b, index_t t0, index_t n, const Acc* kbar, index_t kbar_pitch,
                                            Acc* staging) const {
    const index_t dim = shape().dim, pitch = a.smem.pitch;
    auto u_of = [&](index_t t, index_t f) {
      return load_as<Acc>(a.v.row(b, t0 + t) + f * a.v.feature_stride) * kbar[t * kbar_pitch + f];
    };
    if (!a.has_transform()) {
      team.copy_pairs<tile_copy_batch>(n, dim, u_of, [&](index_t t, index_t f, Acc u) {
        store_as(a.out, a.out_offset(b, t0 + t, f), a.out_kind, u);
      });
      return;
    }
    team.copy_pairs<tile_copy_batch>(n, dim, u_of, [&](index_t t, index_t f, Acc u) { staging[t * pitch + f] = u; });
    transform_staged(b, t0, n, staging);
  }

  /// Output rows [t0, t0 + n) of sequence b from U staged in `staging`:
  /// Y = W_t U + b_t (+ Q).
  STREAMATTN_HOST_DEVICE void transform_staged(index_t b, index_t t0, index_t n, const Acc* staging) const {
    const auto bias = [&](index_t o) {
      return a.transform_bias != nullptr ? a.transform_bias[o * a.transform_bias_stride] : Acc(0);
    };
    transform_rows(team, staging, a.smem.pitch, n, a.workspace + a.transposed_transform, shape().dim, bias,
                   [&](index_t t, index_t o, Acc y) {
                     if (a.residual) y += load_as<Acc>(a.q.row(b, t0 + t) + o * a.q.feature_stride);
                     store_as(a.out, a.out_offset(b, t0 + t, o), a.out_kind, y);
                   });
  }

  /// transform_outputs: the rows of chunk (b, c), U in `out` (float, as
  /// causal_outputs streamed it), replaced by W_t U + b_t (+ Q). A tile's
  /// rows are read into shared memory before any is written, and no other
  /// block touches them.
  STREAMATTN_HOST_DEVICE void transform_outputs(index_t b, index_t c) const {
    const index_t dim = shape().dim, pitch = a.smem.pitch;
    const auto* const out = static_cast<const float*>(a.out);
    for (index_t t0 = chunk_first(c); t0 < chunk_last(c); t0 += a.smem.tile_tokens) {
      const index_t n = min_(a.smem.tile_tokens, chunk_last(c) - t0);
      team.copy_pairs<tile_copy_batch>(
          n, dim, [&](index_t t, index_t f) { return static_cast<Acc>(out[a.out_offset(b, t0 + t, f)]); },
          [&](index_t t, index_t f, Acc u) { first_tile()[t * pitch + f] = u; });
      transform_staged(b, t0, n, first_tile());
    }
  }

  // ---- the programs ----

  /// pool_queries / pool_keys: the chunk's total state of one pooling.
  STREAMATTN_HOST_DEVICE void pool_chunk(index_t b, index_t c, bool keys) const {
    const additive_shape& s = shape();
    const state_ref<Acc> state = first_state();
    set_empty(state);
    if (keys) copy(vector(), pooled(a.pooled_query, b), s.dim);
    const token_operand<const S>& x = keys ? a.k : a.q;
    for (index_t t0 = chunk_first(c); t0 < chunk_last(c); t0 += a.smem.tile_tokens) {
      const index_t n = min_(a.smem.tile_tokens, chunk_last(c) - t0);
      load_tokens(team, x, b, t0, n, s.dim, a.smem.pitch, a.mask, first_tile(), keeps());
      if (keys)
        pool_tile(first_tile(), n, a.key_att, vector(), 0, !a.pool_raw_keys, state, nullptr);
      else
        pool_tile(first_tile(), n, a.query_att, nullptr, 0, false, state, nullptr);
    }
    copy(chunk_state(keys ? a.key_totals : a.query_totals, b, c), state.base, state_length());
  }

  /// Merges the chunk states of sequence b in `totals` into the empty state,
  /// in chunk order, leaving the result in `state` and, when `carries` is not
  /// null, the state before chunk c in carries' slot c (the exclusive scan).
  ///
  /// One phase, no barrier per chunk: the thread of feature f follows the
  /// max, sum and kept flag of f's head itself (every thread of that head
  /// does the same operations on the same numbers, so they agree) and the
  /// first feature's thread writes them. Each thread keeps `merge_batch`
  /// chunk states' loads in flight before it merges them and stores carries
  /// (a load cannot move above a store that may alias it). A chain of merges
  /// with a barrier and a memory latency each measured 0.6 ms for 525 chunks
  /// on an H200.
  STREAMATTN_HOST_DEVICE void merge_chunks(index_t b, index_t totals, const index_t* carries,
                                           const state_ref<Acc>& state) const {
    constexpr int merge_batch = 4;
    const additive_shape& s = shape();
    const additive_state_layout& layout = state.layout;
    team.for_each(s.dim, [&](index_t f) {
      const index_t h = f / s.head_dim;
      const bool writes_head = f % s.head_dim == 0;
      Acc m = neg_inf<Acc>(), l = 0, kept = 0, acc = 0;  // the empty state (empty_state_value)
      // Chunk c's max, sum and kept flag of head h and its accumulator of f.
      const auto load = [&](index_t c, Acc* to) {
        const state_ref<Acc> other{chunk_state(totals, b, c), layout};
        to[0] = other.row_max(h), to[1] = other.row_sum(h), to[2] = other.saw_kept(h), to[3] = other.acc(f);
      };
      const auto merge = [&](index_t c, const Acc* other) {
        if (carries != nullptr) {
          const state_ref<Acc> carry{chunk_state(*carries, b, c), layout};
          carry.acc(f) = acc;
          if (writes_head) carry.row_max(h) = m, carry.row_sum(h) = l, carry.saw_kept(h) = kept;
        }
        const merge_scales<Acc> scales = merge_head(m, l, kept, other[0], other[1], other[2]);
        acc = acc * scales.mine + other[3] * scales.theirs;
      };
      index_t c = 0;
      for (; c + merge_batch <= a.chunks; c += merge_batch) {
        // (Constant trip counts: nvcc unrolls these and keeps `batch` in
        // registers. No #pragma unroll: the host compiler sees this code too.)
        Acc batch[merge_batch][4];
        for (int k = 0; k < merge_batch; ++k) load(c + k, batch[k]);
        for (int k = 0; k < merge_batch; ++k) merge(c + k, batch[k]);
      }
      for (; c < a.chunks; ++c) {
        Acc other[4];
        load(c, other);
        merge(c, other);
      }
      state.acc(f) = acc;
      if (writes_head) state.row_max(h) = m, state.row_sum(h) = l, state.saw_kept(h) = kept;
    });
  }

  /// combine_queries / combine_keys: q̄ or k̄ of sequence b (and the output
  /// of additive_pool).
  STREAMATTN_HOST_DEVICE void combine(index_t b, bool keys) const {
    const state_ref<Acc> state = first_state();
    merge_chunks(b, keys ? a.key_totals : a.query_totals, nullptr, state);
    Acc* result = pooled(keys ? a.pooled_key : a.pooled_query, b);
    const bool write_out = a.job == additive_job::pool;
    team.for_each(shape().dim, [&](index_t f) {
      const Acc l = state.row_sum(f / shape().head_dim);
      const Acc value = l == Acc(0) ? Acc(0) : state.acc(f) / l;
      result[f] = value;
      if (write_out) store_as(a.out, a.out_offset(b, 0, f), a.out_kind, value);
    });
  }

  /// scan_queries / scan_keys: the state before every chunk of sequence b.
  STREAMATTN_HOST_DEVICE void scan(index_t b, bool keys) const {
    const index_t carries = keys ? a.key_carries : a.query_carries;
    merge_chunks(b, keys ? a.key_totals : a.query_totals, &carries, first_state());
  }

  /// outputs: the non-causal output rows of chunk (b, c).
  STREAMATTN_HOST_DEVICE void outputs(index_t b, index_t c) const {
    copy(vector(), pooled(a.pooled_key, b), shape().dim);
    // Without the transform nothing is staged, so the rows go in spans far
    // longer than a tile (fewer barriers), short enough that a span's
    // elements keep 32-bit indices (block_team::copy_pairs).
    const index_t span =
        a.has_transform() ? a.smem.tile_tokens : max_(a.smem.tile_tokens, (index_t{1} << 24) / shape().dim);
    for (index_t t0 = chunk_first(c); t0 < chunk_last(c); t0 += span) {
      const index_t n = min_(span, chunk_last(c) - t0);
      write_outputs(b, t0, n, vector(), 0, first_tile());
    }
  }

  /// causal_prefix_pool / causal_key_totals / causal_outputs: rescans chunk
  /// (b, c) from its carry-in states.
  STREAMATTN_HOST_DEVICE void causal_chunk(index_t b, index_t c, additive_step step) const {
    const additive_shape& s = shape();
    const index_t pitch = a.smem.pitch;
    const state_ref<Acc> queries = first_state(), keys = second_state();
    copy(queries.base, chunk_state(a.query_carries, b, c), state_length());
    if (step == additive_step::causal_outputs)
      copy(keys.base, chunk_state(a.key_carries, b, c), state_length());
    else
      set_empty(keys);
    Acc* const qbar = first_tile();  // Q, then q̄_t of every token
    Acc* const kbar = second_tile();  // K, then the pooled P_t (or K_t), then k̄_t
    for (index_t t0 = chunk_first(c); t0 < chunk_last(c); t0 += a.smem.tile_tokens) {
      const index_t n = min_(a.smem.tile_tokens, chunk_last(c) - t0);
      load_tokens(team, a.q, b, t0, n, s.dim, pitch, a.mask, qbar, keeps());
      pool_tile(qbar, n, a.query_att, nullptr, 0, false, queries, qbar);
      if (step == additive_step::causal_prefix_pool) {
        team.for_each_pair(n, s.dim, [&](index_t t, index_t f) {
          store_as(a.out, a.out_offset(b, t0 + t, f), a.out_kind, qbar[t * pitch + f]);
        });
        continue;
      }
      load_tokens(team, a.k, b, t0, n, s.dim, pitch, a.mask, kbar, static_cast<Acc*>(nullptr));
      const bool outputs = step == additive_step::causal_outputs;
      pool_tile(kbar, n, a.key_att, qbar, pitch, !a.pool_raw_keys, keys, outputs ? kbar : nullptr);
      if (outputs) write_outputs(b, t0, n, kbar, pitch, kbar);
    }
    if (step == additive_step::causal_key_totals) copy(chunk_state(a.key_totals, b, c), keys.base, state_length());
  }

  STREAMATTN_HOST_DEVICE static index_t min_(index_t x, index_t y) { return x < y ? x : y; }
  STREAMATTN_HOST_DEVICE static index_t max_(index_t x, index_t y) { return x > y ? x : y; }
};

/// Runs block `block` of `step`.
template <class S>
STREAMATTN_HOST_DEVICE void run_additive_block(const additive_args<S>& a, additive_step step, index_t block,
                                               device_accum_t<S>* smem) {
  const additive_block<S> blk{a, smem, block_team{}};
  const index_t b = is_chunk_step(step) ? block / a.chunks : block, c = block % a.chunks;
  switch (step) {
    case additive_step::pool_queries: blk.pool_chunk(b, c, false); break;
    case additive_step::pool_keys: blk.pool_chunk(b, c, true); break;
    case additive_step::combine_queries: blk.combine(b, false); break;
    case additive_step::combine_keys: blk.combine(b, true); break;
    case additive_step::outputs: blk.outputs(b, c); break;
    case additive_step::scan_queries: blk.scan(b, false); break;
    case additive_step::scan_keys: blk.scan(b, true); break;
    case additive_step::causal_key_totals:
    case additive_step::causal_outputs:
    case additive_step::causal_prefix_pool: blk.causal_chunk(b, c, step); break;
    case additive_step::transform_outputs:
      // transforms_in_place: float only. (Compiled in double, a second copy
      // of the transform took additive_kernel<double> from 128 registers
      // to 192.)
      if constexpr (sizeof(device_accum_t<S>) == 4) blk.transform_outputs(b, c);
      break;
    case additive_step::transpose_transform:
      transpose_transform_row(blk.team, a.transform, a.transform_row_stride, a.transform_col_stride, a.shape.dim,
                              block, a.workspace + a.transposed_transform);
      break;
  }
}

}  // namespace streamattn::detail::gpu
