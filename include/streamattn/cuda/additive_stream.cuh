// Warp-streaming programs for the steps that move most of a non-causal
// Fastformer call's bytes: the chunk poolings (pool_queries, pool_keys;
// pool_queries is also the chunk totals of causal calls) and the outputs
// U = V ⊙ k̄; the causal rescans (additive_stream_causal.cuh) are built
// from the same pieces. The block programs (additive_programs.cuh) stage
// a tile, then score, scan and accumulate it in phases separated by block
// barriers, each phase a dependent chain of shared-memory steps; here every
// warp streams its own tokens with everything in registers and no block
// barrier until its last token.
//
// A lane holds features lane + 32 j (j < 8, or 16 where D > 256) of each token,
// so a warp's loads of one token are whole 128-byte lines. Per batch of T
// tokens (stream_batch_tokens) a warp
//   1. loads the next batch's features while it works on this one,
//   2. forms each lane's partial scores of every (token, head) from its
//      features and the score weights in shared memory,
//   3. sums the partials over the warp with a butterfly that halves the
//      values each lane carries at each of its five steps (T x 16 values
//      become T / 2 per lane: lane l ends with head l % 16 of tokens
//      (l / 16) * T / 2 + r), which is about one shuffle per (token, head),
//      and no select: a lane holds its partials in slots permuted by its
//      own lane bits (butterfly_step below), so that the half it keeps at
//      every step is the first,
//   4. updates each head's running max and sum in those lanes,
//   5. and, through a small per-warp exchange in shared memory, scales each
//      feature's accumulator and adds the batch's weighted features.
// At the end the block merges its warps' states in warp order (results do
// not depend on timing) into the chunk's state, as pool_chunk writes it.
// Where the causal rescans stream, each warp pools a contiguous span of the
// chunk instead of every 8th batch, and its span's state goes to the
// workspace too, for the rescans to start from (warp_tokens).
//
// Two identities keep the per-token work to the score itself. Pooling
// P = K ⊙ q̄ scored by P (pool_keys) is pooling K scored with the weights
// w ⊙ q̄ and multiplying the result by q̄ (q̄ is the same for every token);
// and the scale and log2(e) fold into those weights too, so the scores come
// out in log2 units for exp2.
#pragma once

#include "additive_programs.cuh"

namespace streamattn::detail::gpu {

/// log2(e) and ln 2 in the accumulation type: the streaming steps keep
/// scores and maxima in log2 units (exp2), the workspace states in natural
/// ones.
template <class Acc>
inline constexpr Acc stream_log2e = static_cast<Acc>(1.4426950408889634);
template <class Acc>
inline constexpr Acc stream_ln2 = static_cast<Acc>(0.6931471805599453);

/// Where the streaming pooling keeps the score weight of slot `slot` of
/// feature lane + 32 j: slots 4i to 4i + 3 of a (lane, j) side by side, for
/// one 16-byte load.
STREAMATTN_HOST_DEVICE int stream_weight_slot_index(int slot, int lane, int j) {
  return ((j * (static_cast<int>(stream_max_heads) / 4) + slot / 4) * 32 + lane) * 4 + slot % 4;
}
/// The same for head h's weight: lanes keep head h in slot h ^ (lane % 16)
/// (butterfly_step).
STREAMATTN_HOST_DEVICE int stream_weight_index(int h, int lane, int j) {
  return stream_weight_slot_index(h ^ (lane % static_cast<int>(stream_max_heads)), lane, j);
}

/// Four adjacent accumulator values from shared memory, 16-byte aligned.
__device__ __forceinline__ void load_four(const float* p, float (&to)[4]) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  to[0] = v.x, to[1] = v.y, to[2] = v.z, to[3] = v.w;
}
__device__ __forceinline__ void load_four(const double* p, double (&to)[4]) {
  const double2 lo = reinterpret_cast<const double2*>(p)[0], hi = reinterpret_cast<const double2*>(p)[1];
  to[0] = lo.x, to[1] = lo.y, to[2] = hi.x, to[3] = hi.y;
}

/// Step `Step` (0 to 4) of the butterfly that sums N values over a warp:
/// lanes l and l ^ (16 >> Step) each keep the first half of the values they
/// still carry and add the partner's second half to it. That sums like
/// values because of how lanes fill their slots: a lane's slot with index
/// bits (t_high, h) holds token bit t_high ^ (lane bit 4) and head h ^ (lane
/// bits 3..0) (stream_weight_index and the token loads do the permuting),
/// so at the step that splits index bit b, the second half of lane l holds
/// the values whose bit b is the one the first half of lane l ^ (bit b's
/// lane bit) holds. The first N >> (Step + 1) entries hold what the lane
/// carries on.
template <int Step, class Acc, int N>
__device__ __forceinline__ void butterfly_step(Acc (&part)[N]) {
  constexpr int half = N >> (Step + 1), mask = 16 >> Step;
  static_assert(half >= 1, "a lane carries at least one value");
  STREAMATTN_UNROLL
  for (int i = 0; i < half; ++i) part[i] += __shfl_xor_sync(0xffffffffu, part[i + half], mask);
}

/// Stages the score weights of one pooling at `to`, in log2 units:
/// w[h, f] * scale * log2(e) (* mult[f] where given); zeros outside a
/// per-head row, past D and in the rows past H. Stored in the lanes' slot
/// order with four slots of a (lane, j) adjacent (stream_weight_index):
/// one 16-byte shared load instead of four.
template <class S>
__device__ void stage_stream_weights(const additive_block<S>& blk, device_accum_t<S>* to,
                                     const score_weights_ref<device_accum_t<S>>& w, const device_accum_t<S>* mult) {
  using Acc = device_accum_t<S>;
  constexpr Acc log2e = stream_log2e<Acc>;
  const additive_shape& s = blk.shape();
  const Acc weight_scale = blk.a.scale * log2e;
  blk.team.for_each_pair(stream_max_heads, blk.a.stream.pitch(), [&](index_t h, index_t f) {
    Acc value = 0;
    const index_t offset = s.weight_offset(h);
    if (h < s.heads && f < s.dim && f >= offset && f < offset + s.weight_length()) {
      value = w.at(h, f - offset) * weight_scale;
      if (mult != nullptr) value *= mult[f];
    }
    to[stream_weight_index(static_cast<int>(h), static_cast<int>(f % 32), static_cast<int>(f / 32))] = value;
  });
}

/// What a lane needs to know of its features lane + 32 j (j < F): which are
/// below D (bit j of in_dim), their heads and the slots it keeps their
/// heads' partial scores in (head ^ (lane % 16), butterfly_step).
template <int F>
struct stream_lane {
  int lane = 0;
  unsigned in_dim = 0;
  int feature_head[F] = {};
  int head_slot[F] = {};

  __device__ stream_lane(const additive_shape& s, int lane_) : lane(lane_) {
    STREAMATTN_UNROLL
    for (int j = 0; j < F; ++j) {
      const index_t f = lane + 32 * j;
      in_dim |= (f < s.dim ? 1u : 0u) << j;
      feature_head[j] = f < s.dim ? static_cast<int>(f / s.head_dim) : 0;
      head_slot[j] = feature_head[j] ^ (lane % static_cast<int>(stream_max_heads));
    }
  }
  /// The lanes 16..31 hold the second half of a batch's tokens.
  __device__ bool upper_half() const { return lane >= 16; }
};

/// A batch: the features of tokens t0 .. t0 + T - 1 (zeros past the span,
/// past D and for excluded tokens, so nothing from those, NaN padding
/// included, reaches a score or a sum), slot t holding token t ^ token_swap
/// (token_swap = T / 2 in lanes 16..31, butterfly_step), and the tokens'
/// mask bits, in token order.
template <class Acc, int T, int F>
struct stream_batch {
  Acc x[T][F];
  bool valid[T], keep[T];
};

/// Loads the features of the batch of tokens [t0, t0 + T) of operand x whose
/// mask bits are already in `to`.
template <class S, class Acc, int T, int F>
__device__ __forceinline__ void load_stream_features(const additive_args<S>& a, const token_operand<const S>& x,
                                                     index_t b, index_t t0, const stream_lane<F>& me,
                                                     stream_batch<Acc, T, F>& to) {
  constexpr int R = T / 2;
  const int token_swap = me.upper_half() ? R : 0;
  bool read[T];
  STREAMATTN_UNROLL
  for (int t = 0; t < T; ++t) read[t] = to.valid[t] && (to.keep[t] || !a.mask.exclude);
  const index_t group_step = 32 * x.feature_stride;
  STREAMATTN_UNROLL
  for (int t = 0; t < T; ++t) {
    const bool read_slot = token_swap != 0 ? read[t ^ R] : read[t];
    const S* feature = x.row(b, read_slot ? t0 + (t ^ token_swap) : 0) + me.lane * x.feature_stride;
    STREAMATTN_UNROLL
    for (int j = 0; j < F; ++j, feature += group_step)
      to.x[t][j] = read_slot && (me.in_dim >> j & 1u) != 0 ? load_as<Acc>(feature) : Acc(0);
  }
}

/// Loads the batch of tokens [t0, t0 + T) below `last` of operand x.
template <class S, class Acc, int T, int F>
__device__ __forceinline__ void load_stream_batch(const additive_args<S>& a, const token_operand<const S>& x,
                                                  index_t b, index_t t0, index_t last, const stream_lane<F>& me,
                                                  stream_batch<Acc, T, F>& to) {
  STREAMATTN_UNROLL
  for (int t = 0; t < T; ++t) {
    to.valid[t] = t0 + t < last;
    to.keep[t] = to.valid[t] && a.mask.keep(b, t0 + t);
  }
  load_stream_features(a, x, b, t0, me, to);
}

/// The scores of a batch's (token, head) pairs in log2 units, summed over
/// the warp: on return part[r] (r < T / 2) holds head lane % 16 of token
/// (lane / 16) * T / 2 + r. `x` holds the tokens by slot, `weights` is
/// stage_stream_weights' order, `groups` the lanes' features in use.
template <int T, int F, bool PerHead, class Acc>
__device__ __forceinline__ void stream_scores(const Acc (&x)[T][F], const Acc* weights, int groups,
                                              const stream_lane<F>& me, Acc (&part)[T * stream_max_heads]) {
  constexpr int R = T / 2;
  constexpr int HM = static_cast<int>(stream_max_heads);
  // Partial scores by slot, part[((t / R) * 16 + h) * R + t % R]: the order
  // the butterfly below splits them in, most significant index bit first.
  STREAMATTN_UNROLL
  for (int i = 0; i < T * HM; ++i) part[i] = 0;
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) {
    if (j >= groups) break;  // warp-uniform
    // All 16 slots, the heads past H with zero weights: a loop without
    // exits lets nvcc keep `part` in registers with no per-exit
    // bookkeeping.
    STREAMATTN_UNROLL
    for (int slot4 = 0; slot4 < HM; slot4 += 4) {
      Acc wv[4];
      load_four(weights + stream_weight_slot_index(slot4, me.lane, j), wv);
      STREAMATTN_UNROLL
      for (int k = 0; k < 4; ++k) {
        const int slot = slot4 + k;
        // A per-head row only meets its own features (no 0 * inf = NaN
        // from another head's features).
        if (PerHead && me.head_slot[j] != slot) continue;
        STREAMATTN_UNROLL
        for (int t = 0; t < T; ++t) part[((t / R) * HM + slot) * R + t % R] += x[t][j] * wv[k];
      }
    }
  }
  butterfly_step<0>(part);
  butterfly_step<1>(part);
  butterfly_step<2>(part);
  butterfly_step<3>(part);
  butterfly_step<4>(part);
}

/// Head lane % 16's running max (log2 units) and sum, kept alike by lanes
/// h and h + 16, and whether a kept token was seen (the same for every
/// head); the empty state to start with.
template <class Acc>
struct stream_head_state {
  Acc row_max = neg_inf<Acc>(), row_sum = 0;
  bool kept = false;
};

/// Online softmax of head lane % 16 over the T / 2 tokens of a batch in
/// part[] (stream_scores) and the T / 2 of lane ^ 16: the additive-mask
/// bookkeeping of scan_heads, a batch at a time (a batch with a kept token
/// moves the padded ones seen before it to the common scale, and its own
/// padded tokens score with the penalty, as scan_heads gives them token by
/// token up to rounding), then one max for the batch. Leaves the tokens'
/// weights in exchange[token * 16 + head] and the rescale of what came
/// before in exchange[T * 16 + head].
template <int T, class Acc>
__device__ __forceinline__ void stream_batch_softmax(const Acc* part, const bool (&valid)[T], const bool (&keep)[T],
                                                     bool exclude, int lane, stream_head_state<Acc>& st,
                                                     Acc* exchange) {
  constexpr int R = T / 2;
  constexpr int HM = static_cast<int>(stream_max_heads);
  constexpr Acc log2e = stream_log2e<Acc>;
  const Acc minus_inf = neg_inf<Acc>();
  const Acc penalty = static_cast<Acc>(additive_mask_penalty) * log2e;
  const bool upper_half = lane >= 16;
  const int head = lane % HM;
  bool batch_keeps = false;
  STREAMATTN_UNROLL
  for (int t = 0; t < T; ++t) batch_keeps = batch_keeps || keep[t];
  if (batch_keeps && !st.kept) {
    st.row_max += penalty;  // -inf stays -inf
    st.kept = true;
  }
  Acc score[R], batch_max = minus_inf;
  STREAMATTN_UNROLL
  for (int r = 0; r < R; ++r) {
    const bool v = upper_half ? valid[R + r] : valid[r];
    const bool k = upper_half ? keep[R + r] : keep[r];
    score[r] = part[r];
    if (!v || (exclude && !k))
      score[r] = minus_inf;
    else if (st.kept && !k)
      score[r] += penalty;
    batch_max = batch_max > score[r] ? batch_max : score[r];
  }
  const Acc other_max = __shfl_xor_sync(0xffffffffu, batch_max, 16);
  batch_max = batch_max > other_max ? batch_max : other_max;
  const Acc new_max = st.row_max > batch_max ? st.row_max : batch_max;
  // While a head has seen only excluded tokens its max stays -inf;
  // subtracting 0 then keeps exp2(-inf) = 0 rather than NaN.
  const Acc base = new_max == minus_inf ? Acc(0) : new_max;
  const Acc rescale = exp2_(st.row_max - base);
  Acc batch_sum = 0;
  STREAMATTN_UNROLL
  for (int r = 0; r < R; ++r) {
    score[r] = exp2_(score[r] - base);
    batch_sum += score[r];
    exchange[((upper_half ? R : 0) + r) * HM + head] = score[r];
  }
  batch_sum += __shfl_xor_sync(0xffffffffu, batch_sum, 16);
  st.row_sum = st.row_sum * rescale + batch_sum;
  st.row_max = new_max;
  if (!upper_half) exchange[T * HM + head] = rescale;
}

/// Each feature's accumulator takes a batch with its head's factors from
/// stream_batch_softmax.
template <int T, int F, class Acc>
__device__ __forceinline__ void stream_accumulate(Acc (&acc)[F], const Acc (&x)[T][F], const Acc* exchange,
                                                  int groups, const stream_lane<F>& me) {
  constexpr int HM = static_cast<int>(stream_max_heads);
  const int token_swap = me.upper_half() ? T / 2 : 0;
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) {
    if (j >= groups) break;
    const Acc* const factors = exchange + me.feature_head[j];
    Acc sum = acc[j] * factors[T * HM];
    STREAMATTN_UNROLL
    for (int t = 0; t < T; ++t) sum += factors[(t ^ token_swap) * HM] * x[t][j];
    acc[j] = sum;
  }
}

/// The end of a warp-streamed chunk pooling: every warp writes its state
/// (natural-log units, as the block programs keep them) to shared memory
/// and, where `span_states` is given, to the workspace (warp w's at
/// span_states + w * state length), through write_warp_state(mine, span),
/// which writes the calling lane's part of its warp's state to state_ref
/// `mine` and, where span.base is not null, `span` (one call for both: two
/// calls cost the FMA pooling's loop spills);
/// then the block merges the warps' states in warp order (results do not
/// depend on timing) into `chunk`, the accumulator times `mult` where given.
template <class S, class WriteWarpState>
__device__ void finish_stream_chunk(const additive_block<S>& blk, const WriteWarpState& write_warp_state,
                                    device_accum_t<S>* span_states, const state_ref<device_accum_t<S>>& chunk,
                                    const device_accum_t<S>* mult) {
  using Acc = device_accum_t<S>;
  const additive_shape& s = blk.shape();
  const additive_stream_layout& lay = blk.a.stream;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  // Every warp is done with the weights: their space takes the warp states.
  __syncthreads();
  const additive_state_layout layout = lay.state();
  write_warp_state(state_ref<Acc>{blk.smem + lay.warp_state(warp), layout},
                   state_ref<Acc>{span_states != nullptr ? span_states + warp * layout.length() : nullptr, layout});
  __syncthreads();

  blk.team.for_each(s.dim, [&](index_t f) {
    const index_t h = f / s.head_dim;
    Acc m = neg_inf<Acc>(), l = 0, saw = 0, total = 0;
    for (index_t v = 0; v < stream_warps; ++v) {
      const state_ref<Acc> other{blk.smem + lay.warp_state(v), layout};
      const merge_scales<Acc> scales = merge_head(m, l, saw, other.row_max(h), other.row_sum(h), other.saw_kept(h));
      total = total * scales.mine + other.acc(f) * scales.theirs;
    }
    chunk.acc(f) = mult != nullptr ? total * mult[f] : total;
    if (f % s.head_dim == 0) chunk.row_max(h) = m, chunk.row_sum(h) = l, chunk.saw_kept(h) = saw;
  });
}

/// A head's running max in log2 units as the workspace states keep it
/// (natural-log units; -inf stays -inf).
template <class Acc>
__device__ __forceinline__ Acc natural_row_max(Acc log2_max) {
  return log2_max == neg_inf<Acc>() ? neg_inf<Acc>() : log2_max * stream_ln2<Acc>;
}

/// finish_stream_chunk's write_warp_state where lane h < H holds head h's
/// state and lane f % 32 feature f's accumulator (stream_lane).
template <int F, class Acc>
__device__ auto lane_state_writer(const additive_shape& s, const stream_lane<F>& me, const stream_head_state<Acc>& st,
                                  const Acc (&acc)[F]) {
  return [&s, &me, &st, &acc](const state_ref<Acc>& mine, const state_ref<Acc>& span) {
    const Acc row_max = natural_row_max(st.row_max);
    if (me.lane < s.heads) {
      mine.row_max(me.lane) = row_max;
      mine.row_sum(me.lane) = st.row_sum;
      mine.saw_kept(me.lane) = st.kept ? Acc(1) : Acc(0);
      if (span.base != nullptr) {
        span.row_max(me.lane) = row_max;
        span.row_sum(me.lane) = st.row_sum;
        span.saw_kept(me.lane) = st.kept ? Acc(1) : Acc(0);
      }
    }
    STREAMATTN_UNROLL
    for (int j = 0; j < F; ++j) {
      const index_t f = me.lane + 32 * j;
      if (f >= s.dim) continue;
      mine.acc(f) = acc[j];
      if (span.base != nullptr) span.acc(f) = acc[j];
    }
  };
}

/// The tokens [first, last) warp `warp` streams of chunk c, a batch of T at
/// first, first + step, ...: contiguous spans where the causal rescans
/// stream (stream_warp_span: a warp's prefix starts from the spans before
/// it), else batches dealt to the warps in turn.
struct stream_warp_tokens {
  index_t first, last, step;
};
template <class S>
STREAMATTN_HOST_DEVICE stream_warp_tokens warp_tokens(const additive_block<S>& blk, index_t c, int warp, int T) {
  const index_t chunk_first = blk.chunk_first(c), chunk_last = blk.chunk_last(c);
  if (!blk.a.causal_streaming) return {chunk_first + warp * T, chunk_last, stream_warps * T};
  const index_t span = stream_warp_span(blk.a.chunk_tokens);
  const index_t first = chunk_first + warp * span, end = first + span;
  return {first, end < chunk_last ? end : chunk_last, T};
}

/// The chunk state of pool_queries (keys false) or pool_keys (keys true) for
/// chunk c of sequence b, streamed with F features per lane
/// (stream_features_per_lane). PerHead: the weights are per-head rows.
template <int F, bool PerHead, class S>
__device__ void stream_pool_chunk(const additive_args<S>& a, index_t b, index_t c, bool keys,
                                  device_accum_t<S>* smem) {
  using Acc = device_accum_t<S>;
  constexpr int T = stream_batch_tokens(sizeof(Acc), F);

  const additive_block<S> blk{a, smem, block_team{}};
  const additive_stream_layout& lay = a.stream;
  const int groups = static_cast<int>(lay.pitch() / 32);  // features per lane in use
  const token_operand<const S>& x = keys ? a.k : a.q;
  // q̄ when the keys' scores (and, unless pool_raw_keys, values) are K ⊙ q̄.
  const Acc* const mult = keys ? blk.pooled(a.pooled_query, b) : nullptr;
  Acc* const weights = smem + lay.weights();
  stage_stream_weights(blk, weights, keys ? a.key_att : a.query_att, mult);

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const stream_lane<F> me(a.shape, static_cast<int>(threadIdx.x) % 32);
  const stream_warp_tokens range = warp_tokens(blk, c, warp, T);
  stream_head_state<Acc> st;
  Acc acc[F];
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) acc[j] = 0;
  Acc* const exchange = smem + lay.exchange(warp);

  stream_batch<Acc, T, F> now, next;
  load_stream_batch(a, x, b, range.first, range.last, me, now);
  for (index_t t0 = range.first; t0 < range.last; t0 += range.step) {
    load_stream_batch(a, x, b, t0 + range.step, range.last, me, next);  // in flight while this batch is worked on
    Acc part[T * stream_max_heads];
    stream_scores<T, F, PerHead>(now.x, weights, groups, me, part);
    stream_batch_softmax<T>(part, now.valid, now.keep, a.mask.exclude, me.lane, st, exchange);
    __syncwarp();
    stream_accumulate<T>(acc, now.x, exchange, groups, me);
    __syncwarp();  // every lane has read the exchange before the next batch writes it
    now = next;
  }

  // The chunk's state: the accumulator times q̄ where the pooled values are
  // K ⊙ q̄. Where the causal rescans stream, the warps' spans' states too.
  const state_ref<Acc> chunk{blk.chunk_state(keys ? a.key_totals : a.query_totals, b, c), lay.state()};
  Acc* const spans = a.causal_streaming ? blk.span_states(keys ? a.key_warp_totals : a.query_warp_totals, b, c)
                                        : nullptr;
  finish_stream_chunk(blk, lane_state_writer(a.shape, me, st, acc), spans, chunk,
                      keys && !a.pool_raw_keys ? mult : nullptr);
}

/// The outputs U = V ⊙ k̄ of chunk (b, c) without a transform: each warp
/// loads a batch of tokens' features, all of them before its first store (a
/// load cannot move above a store that may alias it), and stores them
/// scaled.
template <class S>
__device__ void stream_outputs(const additive_args<S>& a, index_t b, index_t c, device_accum_t<S>* smem) {
  using Acc = device_accum_t<S>;
  constexpr int T = 8;  // tokens in flight per warp
  constexpr int F = static_cast<int>(stream_lane_features);
  const additive_block<S> blk{a, smem, block_team{}};
  const index_t dim = a.shape.dim;
  Acc* const kbar = smem;
  blk.copy(kbar, blk.pooled(a.pooled_key, b), dim);

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t last = blk.chunk_last(c);
  for (index_t t0 = blk.chunk_first(c) + warp * T; t0 < last; t0 += stream_warps * T) {
    for (index_t f0 = 0; f0 < dim; f0 += 32 * F) {
      Acc u[T][F];
      STREAMATTN_UNROLL
      for (int t = 0; t < T; ++t) {
        const S* const row = a.v.row(b, t0 + t < last ? t0 + t : t0);
        STREAMATTN_UNROLL
        for (int j = 0; j < F; ++j) {
          const index_t f = f0 + lane + 32 * j;
          u[t][j] = t0 + t < last && f < dim ? load_as<Acc>(row + f * a.v.feature_stride) * kbar[f] : Acc(0);
        }
      }
      STREAMATTN_UNROLL
      for (int t = 0; t < T; ++t) {
        if (t0 + t >= last) break;
        const index_t row = a.out_offset(b, t0 + t, 0);
        STREAMATTN_UNROLL
        for (int j = 0; j < F; ++j) {
          const index_t f = f0 + lane + 32 * j;
          if (f < dim) store_as(a.out, row + f * a.out_feature_stride, a.out_kind, u[t][j]);
        }
      }
    }
  }
}

/// Runs block `block` of a step that streams (streams()) on
/// additive_stream_kernel: the outputs, and the chunk poolings that score
/// with FMAs.
template <class S>
__device__ void run_stream_block(const additive_args<S>& a, additive_step step, index_t block,
                                 device_accum_t<S>* smem) {
  const index_t b = block / a.chunks, c = block % a.chunks;
  const bool keys = step == additive_step::pool_keys;
  constexpr int narrow = static_cast<int>(stream_lane_features), wide = static_cast<int>(stream_wide_lane_features);
  if (step == additive_step::outputs) {
    stream_outputs(a, b, c, smem);
  } else if (stream_features_per_lane(a.shape.dim) == narrow) {
    if (a.shape.per_head)
      stream_pool_chunk<narrow, true>(a, b, c, keys, smem);
    else
      stream_pool_chunk<narrow, false>(a, b, c, keys, smem);
  } else if constexpr (sizeof(device_accum_t<S>) == 4) {  // pooling_streams: wide in float only
    if (a.shape.per_head)
      stream_pool_chunk<wide, true>(a, b, c, keys, smem);
    else
      stream_pool_chunk<wide, false>(a, b, c, keys, smem);
  }
}

}  // namespace streamattn::detail::gpu
