// Warp-streaming causal rescans: causal_key_totals, causal_outputs (with a
// transform, only into float outputs, which transform_outputs then
// transforms in place) and causal_prefix_pool (additive_programs.cuh has
// the order of the steps). The block programs rescan a chunk a tile at a time in
// phases separated by block barriers, one of them each head's softmax on a
// single thread; here, as in additive_stream.cuh, every warp streams its
// own tokens with everything in registers.
//
// A prefix needs every token before it, so a warp takes a contiguous span
// of the chunk (stream_warp_span) rather than batches dealt in turn; the
// chunk poolings (pool_queries, and causal_key_totals below) keep the
// state of every warp's span in the workspace beside the chunk's, and a
// warp starts from the chunk's carry-in (the scan over chunks) merged with
// the spans of the warps before it. Per batch of two tokens a warp
//   1. scores the tokens' queries (stream_scores: partial dots and the
//      butterfly; lanes 0-15 end with token 0's head lane, 16-31 token 1's),
//   2. runs each head's softmax over the two tokens in order, as scan_heads
//      does token by token (stream_prefix_softmax), and each feature's
//      accumulator, so that its lane holds q̄_t of both tokens,
//   3. for the keys, forms P_t = K_t ⊙ q̄_t in the same lanes and pools it
//      the same way: as one batch for the chunk totals, or as prefixes k̄_t
//      for the outputs U_t = V_t ⊙ k̄_t.
// q̄_t changes with t, so the keys' weights cannot fold it in as pool_keys
// does; the tokens are scaled instead (one multiply per feature).
#pragma once

#include "additive_stream.cuh"

namespace streamattn::detail::gpu {

/// The state before warp `warp`'s span of chunk (b, c) in one pooling, in
/// this lane's registers: the chunk's carry-in (region `carries`) merged, in
/// warp order, with the states of the spans of the warps before it (region
/// `spans`). Head lane % 16's max in log2 units, sum and kept flag (lanes
/// past H keep the empty state), and the accumulators of its features.
template <int F, class S>
__device__ void load_span_carry(const additive_block<S>& blk, index_t carries, index_t spans, index_t b, index_t c,
                                int warp, const stream_lane<F>& me, stream_head_state<device_accum_t<S>>& st,
                                device_accum_t<S> (&acc)[F]) {
  using Acc = device_accum_t<S>;
  constexpr Acc log2e = stream_log2e<Acc>;
  const additive_shape& s = blk.shape();
  const additive_state_layout layout = blk.a.stream.state();
  Acc* const first_span = blk.span_states(spans, b, c);
  // State v of the chain: the carry-in for v = -1, else warp v's span.
  const auto state = [&](int v) -> state_ref<Acc> {
    return {v < 0 ? blk.chunk_state(carries, b, c) : first_span + v * layout.length(), layout};
  };
  const index_t row_head = me.lane % static_cast<int>(stream_max_heads);
  if (row_head < s.heads) {
    Acc m = neg_inf<Acc>(), l = 0, kept = 0;
    for (int v = -1; v < warp; ++v) {
      const state_ref<Acc> other = state(v);
      merge_head(m, l, kept, other.row_max(row_head), other.row_sum(row_head), other.saw_kept(row_head));
    }
    st.row_max = m == neg_inf<Acc>() ? m : m * log2e;
    st.row_sum = l;
    st.kept = kept != Acc(0);
  }
  // Each feature follows its head's chain itself for the merge factors.
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) {
    acc[j] = 0;
    if ((me.in_dim >> j & 1u) == 0) continue;
    const index_t f = me.lane + 32 * j, h = me.feature_head[j];
    Acc m = neg_inf<Acc>(), l = 0, kept = 0, total = 0;
    for (int v = -1; v < warp; ++v) {
      const state_ref<Acc> other = state(v);
      const merge_scales<Acc> scales = merge_head(m, l, kept, other.row_max(h), other.row_sum(h), other.saw_kept(h));
      total = total * scales.mine + other.acc(f) * scales.theirs;
    }
    acc[j] = total;
  }
}

/// Where stream_prefix_softmax leaves factor `which` (0: the rescale of what
/// came before, 1: the token's weight, 2: 1 / the running sum) of token t
/// of a batch for head 0; head h's is h further.
STREAMATTN_HOST_DEVICE constexpr int prefix_factor_index(int t, int which) {
  return (3 * t + which) * static_cast<int>(stream_max_heads);
}

/// The prefix softmax of head lane % 16 over a batch's two tokens in order,
/// `my_score` being this lane's (stream_scores: token 0 in lanes 0-15,
/// token 1 in 16-31): scan_heads' steps token by token, additive-mask
/// bookkeeping included, in log2 units. Leaves each token's factors in the
/// exchange (prefix_factor_index); 1 / sum is 0 while nothing is counted,
/// so that a prefix pooling is 0 there, as scan_features writes it.
template <class Acc>
__device__ __forceinline__ void stream_prefix_softmax(Acc my_score, const bool (&valid)[2], const bool (&keep)[2],
                                                      bool exclude, int lane, stream_head_state<Acc>& st,
                                                      Acc* exchange) {
  constexpr Acc log2e = stream_log2e<Acc>;
  const Acc penalty = static_cast<Acc>(additive_mask_penalty) * log2e;
  const Acc other = __shfl_xor_sync(0xffffffffu, my_score, 16);
  const bool upper_half = lane >= 16;
  const Acc scores[2] = {upper_half ? other : my_score, upper_half ? my_score : other};
  STREAMATTN_UNROLL
  for (int t = 0; t < 2; ++t) {
    Acc score = scores[t], rescale = 1, weight = 0;
    // Tokens past the span and excluded ones are not counted (their
    // features loaded as zeros, so their scores are not -inf here).
    if (valid[t] && !(exclude && !keep[t]) && score != neg_inf<Acc>()) {
      if (keep[t] && !st.kept) {
        st.row_max += penalty;  // the first kept token: earlier padded ones move to the common scale
        st.kept = true;
      } else if (!keep[t] && st.kept) {
        score += penalty;
      }
      if (score > st.row_max) {
        rescale = exp2_(st.row_max - score);
        st.row_max = score;
        weight = 1;
      } else {
        weight = exp2_(score - st.row_max);
      }
      st.row_sum = st.row_sum * rescale + weight;
    }
    if (!upper_half) {
      exchange[prefix_factor_index(t, 0) + lane] = rescale;
      exchange[prefix_factor_index(t, 1) + lane] = weight;
      exchange[prefix_factor_index(t, 2) + lane] = st.row_sum == Acc(0) ? Acc(0) : Acc(1) / st.row_sum;
    }
  }
}

/// Each feature's accumulator takes a batch's two tokens in order with its
/// head's factors (stream_prefix_softmax), and `x` (by slot: lanes 16-31
/// hold token 1 in slot 0) becomes the prefix poolings acc / l_t there.
template <int F, class Acc>
__device__ __forceinline__ void stream_prefix_accumulate(Acc (&acc)[F], Acc (&x)[2][F], const Acc* exchange,
                                                         int groups, const stream_lane<F>& me) {
  const bool upper_half = me.upper_half();
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) {
    if (j >= groups) break;  // warp-uniform
    const Acc* const e = exchange + me.feature_head[j];
    const Acc first = upper_half ? x[1][j] : x[0][j], second = upper_half ? x[0][j] : x[1][j];
    Acc sum = acc[j] * e[prefix_factor_index(0, 0)] + e[prefix_factor_index(0, 1)] * first;
    const Acc y0 = sum * e[prefix_factor_index(0, 2)];
    sum = sum * e[prefix_factor_index(1, 0)] + e[prefix_factor_index(1, 1)] * second;
    const Acc y1 = sum * e[prefix_factor_index(1, 2)];
    acc[j] = sum;
    x[0][j] = upper_half ? y1 : y0;
    x[1][j] = upper_half ? y0 : y1;
  }
}

/// causal_prefix_pool, causal_key_totals or causal_outputs of chunk (b, c),
/// every warp streaming its span (accumulating in float, D <= 256, H <= 16:
/// causal_rescans_stream). PerHead: per-head weight rows. AllGroups: D >
/// 224, every lane's 8 features in use, and dense weights. (Where fewer
/// are in use, the warp-uniform exits of the loops over features cost a
/// copy of every partial score at each exit: in the sm_90 SASS, the loop
/// of causal_outputs into float outputs takes 2,415 instructions a batch
/// with them and 2,078 without. With per-head weights, which select each
/// head's slot, it took 2,912 with them and 3,187 without.)
template <bool PerHead, bool AllGroups, class S>
__device__ void stream_causal_chunk(const additive_args<S>& a, index_t b, index_t c, additive_step step,
                                    device_accum_t<S>* smem) {
  using Acc = device_accum_t<S>;
  constexpr int T = stream_causal_batch_tokens, F = static_cast<int>(stream_lane_features);
  static_assert(T == 2, "stream_prefix_softmax takes two tokens a batch");
  const additive_block<S> blk{a, smem, block_team{}};
  const additive_stream_layout& lay = a.stream;
  const int groups = AllGroups ? F : static_cast<int>(lay.pitch() / 32);
  const bool keys = step != additive_step::causal_prefix_pool, outputs = step == additive_step::causal_outputs;
  Acc* const query_weights = smem + lay.weights();
  Acc* const key_weights = smem + lay.key_weights();
  stage_stream_weights(blk, query_weights, a.query_att, nullptr);
  if (keys) stage_stream_weights(blk, key_weights, a.key_att, nullptr);

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const stream_lane<F> me(a.shape, static_cast<int>(threadIdx.x) % 32);
  const stream_warp_tokens range = warp_tokens(blk, c, warp, T);
  stream_head_state<Acc> query_state, key_state;
  Acc query_acc[F], key_acc[F];
  load_span_carry(blk, a.query_carries, a.query_warp_totals, b, c, warp, me, query_state, query_acc);
  if (outputs) {
    load_span_carry(blk, a.key_carries, a.key_warp_totals, b, c, warp, me, key_state, key_acc);
  } else {
    STREAMATTN_UNROLL
    for (int j = 0; j < F; ++j) key_acc[j] = 0;
  }
  Acc* const exchange = smem + lay.exchange(warp);
  const int token_swap = me.upper_half() ? 1 : 0;
  // Row t0 + (slot ^ token_swap)'s feature lane + 32 j of the output, where
  // that token is in the span and the feature below D.
  const auto store_slots = [&](index_t t0, const Acc (&y)[T][F]) {
    STREAMATTN_UNROLL
    for (int t = 0; t < T; ++t) {
      const index_t token = t0 + (t ^ token_swap);
      if (token >= range.last) continue;
      const index_t row = a.out_offset(b, token, 0);
      STREAMATTN_UNROLL
      for (int j = 0; j < F; ++j)
        if ((me.in_dim >> j & 1u) != 0)
          store_as(a.out, row + (me.lane + 32 * j) * a.out_feature_stride, a.out_kind, y[t][j]);
    }
  };

  stream_batch<Acc, T, F> q_now, q_next, k_now;
  load_stream_batch(a, a.q, b, range.first, range.last, me, q_now);
  for (index_t t0 = range.first; t0 < range.last; t0 += T) {
    // The next batch's queries and this batch's keys are in flight while
    // the queries are worked on. (Loading the next batch's keys too took
    // the kernel past 255 registers.)
    load_stream_batch(a, a.q, b, t0 + T, range.last, me, q_next);
    if (keys) {  // the same tokens as q_now: its mask bits
      STREAMATTN_UNROLL
      for (int t = 0; t < T; ++t) k_now.valid[t] = q_now.valid[t], k_now.keep[t] = q_now.keep[t];
      load_stream_features(a, a.k, b, t0, me, k_now);
    }

    Acc part[T * stream_max_heads];
    stream_scores<T, F, PerHead>(q_now.x, query_weights, groups, me, part);
    stream_prefix_softmax(part[0], q_now.valid, q_now.keep, a.mask.exclude, me.lane, query_state, exchange);
    __syncwarp();
    stream_prefix_accumulate(query_acc, q_now.x, exchange, groups, me);  // q_now.x: q̄_t
    __syncwarp();  // every lane has read the exchange before it is written again
    if (!keys) {
      store_slots(t0, q_now.x);
    } else {
      Acc pooled[T][F];  // P_t = K_t ⊙ q̄_t, scored; then the values pooled
      STREAMATTN_UNROLL
      for (int t = 0; t < T; ++t) {
        STREAMATTN_UNROLL
        for (int j = 0; j < F; ++j) pooled[t][j] = k_now.x[t][j] * q_now.x[t][j];
      }
      stream_scores<T, F, PerHead>(pooled, key_weights, groups, me, part);
      if (a.pool_raw_keys) {
        STREAMATTN_UNROLL
        for (int t = 0; t < T; ++t) {
          STREAMATTN_UNROLL
          for (int j = 0; j < F; ++j) pooled[t][j] = k_now.x[t][j];
        }
      }
      if (!outputs) {
        stream_batch_softmax<T>(part, k_now.valid, k_now.keep, a.mask.exclude, me.lane, key_state, exchange);
        __syncwarp();
        stream_accumulate<T>(key_acc, pooled, exchange, groups, me);
        __syncwarp();
      } else {
        stream_prefix_softmax(part[0], k_now.valid, k_now.keep, a.mask.exclude, me.lane, key_state, exchange);
        __syncwarp();
        stream_prefix_accumulate(key_acc, pooled, exchange, groups, me);  // pooled: k̄_t
        __syncwarp();
        // U_t = V_t ⊙ k̄_t: every load before the first store (a load
        // cannot move above a store that may alias it).
        Acc u[T][F];
        STREAMATTN_UNROLL
        for (int t = 0; t < T; ++t) {
          const index_t token = t0 + (t ^ token_swap);
          const S* const row = a.v.row(b, token < range.last ? token : t0);
          STREAMATTN_UNROLL
          for (int j = 0; j < F; ++j)
            u[t][j] = token < range.last && (me.in_dim >> j & 1u) != 0
                          ? load_as<Acc>(row + (me.lane + 32 * j) * a.v.feature_stride) * pooled[t][j]
                          : Acc(0);
        }
        store_slots(t0, u);
      }
    }
    q_now = q_next;
  }

  if (step == additive_step::causal_key_totals) {
    const state_ref<Acc> chunk{blk.chunk_state(a.key_totals, b, c), lay.state()};
    finish_stream_chunk(blk, lane_state_writer(a.shape, me, key_state, key_acc),
                        blk.span_states(a.key_warp_totals, b, c), chunk, nullptr);
  }
}

/// Runs block `block` of a causal rescan that streams (streams()).
template <class S>
__device__ void run_stream_causal_block(const additive_args<S>& a, additive_step step, index_t block,
                                        device_accum_t<S>* smem) {
  const index_t b = block / a.chunks, c = block % a.chunks;
  if constexpr (sizeof(device_accum_t<S>) == 4) {  // causal_rescans_stream: float only
    if (a.shape.per_head)
      stream_causal_chunk<true, false>(a, b, c, step, smem);
    else if (a.stream.pitch() == 32 * stream_lane_features)
      stream_causal_chunk<false, true>(a, b, c, step, smem);
    else
      stream_causal_chunk<false, false>(a, b, c, step, smem);
  }
}

}  // namespace streamattn::detail::gpu
