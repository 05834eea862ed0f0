// Warp-streaming programs for the steps that move most of a non-causal
// Fastformer call's bytes: the chunk poolings (pool_queries, pool_keys;
// pool_queries is also the chunk totals of causal calls) and the outputs
// U = V ⊙ k̄. The block programs (additive_programs.cuh) stage
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
//      own lane bits (slot_of below), so that the half it keeps at every
//      step is the first,
//   4. updates each head's running max and sum in those lanes,
//   5. and, through a small per-warp exchange in shared memory, scales each
//      feature's accumulator and adds the batch's weighted features.
// At the end the block merges its warps' states in warp order (results do
// not depend on timing) into the chunk's state, as pool_chunk writes it.
//
// Two identities keep the per-token work to the score itself. Pooling
// P = K ⊙ q̄ scored by P (pool_keys) is pooling K scored with the weights
// w ⊙ q̄ and multiplying the result by q̄ (q̄ is the same for every token);
// and the scale and log2(e) fold into those weights too, so the scores come
// out in log2 units for exp2.
#pragma once

#include "additive_programs.cuh"

namespace streamattn::detail::gpu {

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

/// The chunk state of pool_queries (keys false) or pool_keys (keys true) for
/// chunk c of sequence b, streamed with F features per lane
/// (stream_features_per_lane). PerHead: the weights are per-head rows.
template <int F, bool PerHead, class S>
__device__ void stream_pool_chunk(const additive_args<S>& a, index_t b, index_t c, bool keys,
                                  device_accum_t<S>* smem) {
  using Acc = device_accum_t<S>;
  constexpr int T = stream_batch_tokens(sizeof(Acc), F);
  constexpr int R = T / 2;  // tokens per lane after the butterfly
  constexpr int HM = static_cast<int>(stream_max_heads);
  constexpr Acc log2e = static_cast<Acc>(1.4426950408889634), ln2 = static_cast<Acc>(0.6931471805599453);
  const Acc minus_inf = neg_inf<Acc>();
  const Acc penalty = static_cast<Acc>(additive_mask_penalty) * log2e;

  const additive_block<S> blk{a, smem, block_team{}};
  const additive_shape& s = a.shape;
  const additive_stream_layout& lay = a.stream;
  const index_t pitch = lay.pitch();
  const int heads = static_cast<int>(s.heads);
  const int groups = static_cast<int>(pitch / 32);  // features per lane in use
  const token_operand<const S>& x = keys ? a.k : a.q;
  const score_weights_ref<Acc>& w = keys ? a.key_att : a.query_att;
  // q̄ when the keys' scores (and, unless pool_raw_keys, values) are K ⊙ q̄.
  const Acc* const mult = keys ? blk.pooled(a.pooled_query, b) : nullptr;

  // Score weights in log2 units, w[h, f] * scale * log2(e) (* q̄[f]); zeros
  // outside a per-head row, past D and in the rows past H. Stored in the
  // lanes' slot order with four slots of a (lane, j) adjacent
  // (stream_weight_index): one 16-byte shared load instead of four.
  Acc* const weights = smem + lay.weights();
  const Acc weight_scale = a.scale * log2e;
  blk.team.for_each_pair(stream_max_heads, pitch, [&](index_t h, index_t f) {
    Acc value = 0;
    const index_t offset = s.weight_offset(h);
    if (h < s.heads && f < s.dim && f >= offset && f < offset + s.weight_length()) {
      value = w.at(h, f - offset) * weight_scale;
      if (mult != nullptr) value *= mult[f];
    }
    weights[stream_weight_index(static_cast<int>(h), static_cast<int>(f % 32), static_cast<int>(f / 32))] = value;
  });

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t last = blk.chunk_last(c);
  // The slot this lane keeps the partial scores of its feature lane + 32 j's
  // head in (butterfly_step): head ^ (lane % 16).
  int my_head_slot[F];
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) {
    const index_t f = lane + 32 * j;
    my_head_slot[j] = (f < s.dim ? static_cast<int>(f / s.head_dim) : 0) ^ (lane % HM);
  }

  // A batch: the features of tokens t0 .. t0 + T - 1 (zeros past the
  // chunk, past D and for excluded tokens, so nothing from those, NaN
  // padding included, reaches a score or a sum), slot t holding token
  // t ^ token_swap (butterfly_step), and the tokens' mask bits, in token
  // order.
  struct batch {
    Acc x[T][F];
    bool valid[T], keep[T];
  };
  const int token_swap = lane >= 16 ? R : 0;
  // This lane's first feature and the step to its next, in elements; bit j
  // of in_dim: feature lane + 32 j is below D.
  const index_t lane_offset = lane * x.feature_stride, group_step = 32 * x.feature_stride;
  unsigned in_dim = 0;
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) in_dim |= (lane + 32 * j < s.dim ? 1u : 0u) << j;
  const auto load = [&](index_t t0, batch& to) {
    bool read[T];
    STREAMATTN_UNROLL
    for (int t = 0; t < T; ++t) {
      to.valid[t] = t0 + t < last;
      to.keep[t] = to.valid[t] && a.mask.keep(b, t0 + t);
      read[t] = to.valid[t] && (to.keep[t] || !a.mask.exclude);
    }
    STREAMATTN_UNROLL
    for (int t = 0; t < T; ++t) {
      const bool read_slot = token_swap != 0 ? read[t ^ R] : read[t];
      const S* feature = x.row(b, read_slot ? t0 + (t ^ token_swap) : 0) + lane_offset;
      STREAMATTN_UNROLL
      for (int j = 0; j < F; ++j, feature += group_step)
        to.x[t][j] = read_slot && (in_dim >> j & 1u) != 0 ? load_as<Acc>(feature) : Acc(0);
    }
  };

  // Head lane % 16's running max (log2 units) and sum, kept alike by lanes
  // h and h + 16; whether a kept token was seen (the same for every head).
  Acc row_max = minus_inf, row_sum = 0;
  bool kept = false;
  Acc acc[F];
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) acc[j] = 0;
  Acc* const exchange = smem + lay.exchange(warp);
  // Where the exchange holds the factors of the token in slot t.
  int slot_factor[T];
  STREAMATTN_UNROLL
  for (int t = 0; t < T; ++t) slot_factor[t] = (t ^ token_swap) * HM;
  const int my_row_head = lane % HM;
  const bool upper_half = lane >= 16;

  const index_t stride = stream_warps * T;
  batch now, next;
  load(blk.chunk_first(c) + warp * T, now);
  for (index_t t0 = blk.chunk_first(c) + warp * T; t0 < last; t0 += stride) {
    load(t0 + stride, next);  // in flight while this batch is worked on

    // Partial scores by slot, part[((t / R) * 16 + h) * R + t % R]: the order
    // the butterfly below splits them in, most significant index bit first.
    Acc part[T * HM];
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
        load_four(weights + stream_weight_slot_index(slot4, lane, j), wv);
        STREAMATTN_UNROLL
        for (int k = 0; k < 4; ++k) {
          const int slot = slot4 + k;
          // A per-head row only meets its own features (no 0 * inf = NaN
          // from another head's features).
          if (PerHead && my_head_slot[j] != slot) continue;
          STREAMATTN_UNROLL
          for (int t = 0; t < T; ++t) part[((t / R) * HM + slot) * R + t % R] += now.x[t][j] * wv[k];
        }
      }
    }
    butterfly_step<0>(part);
    butterfly_step<1>(part);
    butterfly_step<2>(part);
    butterfly_step<3>(part);
    butterfly_step<4>(part);

    // Online softmax of head my_row_head over its R tokens here and the R
    // of lane ^ 16: the additive-mask bookkeeping of scan_heads, a batch at
    // a time (a batch with a kept token moves the padded ones seen before
    // it to the common scale, and its own padded tokens score with the
    // penalty, as scan_heads gives them token by token up to rounding), then
    // one max for the batch.
    bool batch_keeps = false;
    STREAMATTN_UNROLL
    for (int t = 0; t < T; ++t) batch_keeps = batch_keeps || now.keep[t];
    if (batch_keeps && !kept) {
      row_max += penalty;  // -inf stays -inf
      kept = true;
    }
    Acc score[R], batch_max = minus_inf;
    STREAMATTN_UNROLL
    for (int r = 0; r < R; ++r) {
      const bool valid = upper_half ? now.valid[R + r] : now.valid[r];
      const bool keep = upper_half ? now.keep[R + r] : now.keep[r];
      score[r] = part[r];
      if (!valid || (a.mask.exclude && !keep))
        score[r] = minus_inf;
      else if (kept && !keep)
        score[r] += penalty;
      batch_max = batch_max > score[r] ? batch_max : score[r];
    }
    const Acc other_max = __shfl_xor_sync(0xffffffffu, batch_max, 16);
    batch_max = batch_max > other_max ? batch_max : other_max;
    const Acc new_max = row_max > batch_max ? row_max : batch_max;
    // While a head has seen only excluded tokens its max stays -inf;
    // subtracting 0 then keeps exp2(-inf) = 0 rather than NaN.
    const Acc base = new_max == minus_inf ? Acc(0) : new_max;
    const Acc rescale = exp2_(row_max - base);
    Acc batch_sum = 0;
    STREAMATTN_UNROLL
    for (int r = 0; r < R; ++r) {
      score[r] = exp2_(score[r] - base);
      batch_sum += score[r];
      exchange[((upper_half ? R : 0) + r) * HM + my_row_head] = score[r];
    }
    batch_sum += __shfl_xor_sync(0xffffffffu, batch_sum, 16);
    row_sum = row_sum * rescale + batch_sum;
    row_max = new_max;
    if (!upper_half) exchange[T * HM + my_row_head] = rescale;
    __syncwarp();

    // Each feature's accumulator, with its head's factors.
    STREAMATTN_UNROLL
    for (int j = 0; j < F; ++j) {
      if (j >= groups) break;
      const Acc* const factors = exchange + (my_head_slot[j] ^ (lane % HM));  // the head's
      Acc sum = acc[j] * factors[T * HM];
      STREAMATTN_UNROLL
      for (int t = 0; t < T; ++t) sum += factors[slot_factor[t]] * now.x[t][j];
      acc[j] = sum;
    }
    __syncwarp();  // every lane has read the exchange before the next batch writes it
    now = next;
  }

  // Every warp is done with the weights: their space takes the warp states.
  __syncthreads();
  const additive_state_layout layout = lay.state();
  const state_ref<Acc> mine{smem + lay.warp_state(warp), layout};
  if (lane < heads) {
    mine.row_max(lane) = row_max == minus_inf ? minus_inf : row_max * ln2;
    mine.row_sum(lane) = row_sum;
    mine.saw_kept(lane) = kept ? Acc(1) : Acc(0);
  }
  STREAMATTN_UNROLL
  for (int j = 0; j < F; ++j) {
    const index_t f = lane + 32 * j;
    if (f < s.dim) mine.acc(f) = acc[j];
  }
  __syncthreads();

  // The chunk's state: the warps' merged in warp order, the accumulator
  // times q̄ where the pooled values are K ⊙ q̄.
  const state_ref<Acc> chunk{blk.chunk_state(keys ? a.key_totals : a.query_totals, b, c), layout};
  const bool times_mult = keys && !a.pool_raw_keys;
  blk.team.for_each(s.dim, [&](index_t f) {
    const index_t h = f / s.head_dim;
    Acc m = minus_inf, l = 0, saw = 0, total = 0;
    for (index_t v = 0; v < stream_warps; ++v) {
      const state_ref<Acc> other{smem + lay.warp_state(v), layout};
      const merge_scales<Acc> scales = merge_head(m, l, saw, other.row_max(h), other.row_sum(h), other.saw_kept(h));
      total = total * scales.mine + other.acc(f) * scales.theirs;
    }
    chunk.acc(f) = times_mult ? total * mult[f] : total;
    if (f % s.head_dim == 0) chunk.row_max(h) = m, chunk.row_sum(h) = l, chunk.saw_kept(h) = saw;
  });
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

/// Runs block `block` of a step that streams (streams()).
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
