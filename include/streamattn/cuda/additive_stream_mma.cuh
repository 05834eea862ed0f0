// The streaming chunk poolings (pool_queries, pool_keys) with their scores
// on tensor cores. additive_stream.cuh's warps score with FMAs: with dense
// weights every feature meets every head, so a token of D = 256 and 16
// heads is 4,096 FMAs, 128 warp instructions, and with the butterfly and
// bookkeeping a warp issued about 335 instructions per token there, more
// than the memory lets it (about 270 at an H100's copy bandwidth). Here the
// scores of 8 tokens and 16 heads are one m16n8k8 TF32 tile per 8 features:
//   S (16 heads x 8 tokens) = W (16 x D) X^T (D x 8),
// 3xTF32 for float accuracy (W = Wb + Ws and X = Xb + Xs, TF32 each; Wb Xb +
// Wb Xs + Ws Xb leaves out Ws Xs, about 2^-22 of a product): 12 MMAs a
// token, and 126 instructions a token in all in the sm_90 SASS at D = 256
// (float inputs; 16-bit ones are exact in TF32 and skip Wb Xs).
//
// Lane (g, t) (g = lane / 4, t = lane % 4) loads token g of the batch, its
// features 16 s + 4 t + i (i < 4) for every 16-feature group s: so its
// registers are the B fragments of k step 2 s + e directly (B(t, g) =
// feature 16 s + 4 t + 2 e, B(t + 4, g) = the next one), and the A fragments
// (the weights) are staged in shared memory in that same feature order.
// Each k step's three products start from zero and are added to the scores
// in float: the tensor cores' own accumulation then never carries more than
// one step's partial sum.
//
// The softmax runs on the MMA's C fragments (lane (g, t) holds heads g and
// g + 8 of tokens 2t and 2t + 1) with the additive-mask bookkeeping of
// stream_batch_softmax; the tokens' weights go through a per-warp exchange
// in shared memory to the lanes that hold their features, which accumulate
// them (a lane's 4 features of a group share a head: head_dim % 4 == 0).
// The accumulators are partial sums over the tokens a lane loaded (its g);
// the chunk's end sums them over the warp.
#pragma once

#include <cstdint>

#include "additive_stream.cuh"
#include "mma.cuh"

namespace streamattn::detail::gpu {

/// The most 16-feature groups a lane loads of a token (D <= 256).
inline constexpr int stream_mma_groups = static_cast<int>(32 * stream_lane_features / 16);

/// Stages the A fragments of one pooling's weights at `to`: A(m, k) of k
/// step 2 s + e is w[m, f] * scale * log2(e) (* mult[f] where given) for
/// feature f = 16 s + 4 (k % 4) + 2 e + k / 4, zero past H and past D, split
/// into its TF32 rounding and the TF32 rounding of the rest.
template <class S>
__device__ void stage_stream_mma_weights(const additive_block<S>& blk, float* to, const score_weights_ref<float>& w,
                                         const float* mult) {
  const additive_shape& s = blk.shape();
  const float weight_scale = blk.a.scale * stream_log2e<float>;
  blk.team.for_each(blk.a.stream.mma_steps() * 32 * 4, [&](index_t n) {
    const index_t step = n / 128;
    const int lane = static_cast<int>(n / 4 % 32), i = static_cast<int>(n % 4);
    const int g = lane / 4, t = lane % 4;
    const index_t head = g + 8 * (i % 2);
    const index_t f = 16 * (step / 2) + 4 * t + 2 * (step % 2) + i / 2;
    float value = 0;
    if (head < s.heads && f < s.dim) {
      value = w.at(head, f) * weight_scale;
      if (mult != nullptr) value *= mult[f];
    }
    const float big = to_tf32(value);
    to[stream_mma_weight_index(step, 0, lane, i)] = big;
    to[stream_mma_weight_index(step, 1, lane, i)] = to_tf32(value - big);
  });
}

/// A lane's token of a batch: features 16 s + 4 t + i of token t0 + g in
/// x[s][i] (zeros past the span, past D and for excluded tokens, so nothing
/// from those, NaN padding included, reaches a score or a sum).
struct stream_mma_batch {
  float x[stream_mma_groups][4];
};

/// How lane (g, t) reads its features: `groups` 16-feature groups, and
/// whether a group's 4 features are one aligned float4 (float inputs with
/// unit feature stride and 16-byte aligned rows).
struct stream_mma_lane {
  int lane, g, t, groups;
  bool vector;
  /// The head of group s's features, 4 bits per group.
  std::uint64_t group_heads = 0;

  template <class S>
  __device__ stream_mma_lane(const additive_args<S>& a, const token_operand<const S>& x, int lane_)
      : lane(lane_), g(lane_ / 4), t(lane_ % 4), groups(static_cast<int>(ceil_div(a.shape.dim, index_t{16}))) {
    vector = sizeof(S) == 4 && x.feature_stride == 1 && reinterpret_cast<std::uintptr_t>(x.data) % 16 == 0 &&
             x.token_stride % 4 == 0 && x.batch_stride % 4 == 0;
    // 32-bit: D <= 256 (a 64-bit division is dozens of instructions more).
    const int dim = static_cast<int>(a.shape.dim), head_dim = static_cast<int>(a.shape.head_dim);
    for (int s = 0; s < groups; ++s) {
      const int f = 16 * s + 4 * t;
      const int head = f < dim ? f / head_dim : 0;
      group_heads |= static_cast<std::uint64_t>(head) << (4 * s);
    }
  }
  __device__ int head_of(int s) const { return static_cast<int>(group_heads >> (4 * s) & 15u); }
};

/// Loads lane (g, t)'s features of token `token` into `to` (zeros where
/// `read` is false or past D).
template <class S>
__device__ __forceinline__ void load_stream_mma_token(const additive_args<S>& a, const token_operand<const S>& x,
                                                      index_t b, index_t token, bool read,
                                                      const stream_mma_lane& me, stream_mma_batch& to) {
  const S* const row = x.row(b, read ? token : 0) + 4 * me.t * x.feature_stride;
  // Groups s < groups_in are in D, each whole (D % 4 == 0): 16 s + 4 t < D.
  const index_t first = 4 * me.t, groups_in = read && first < a.shape.dim ? ceil_div(a.shape.dim - first, 16) : 0;
  if constexpr (sizeof(S) == 4) {
    if (me.vector) {
      STREAMATTN_UNROLL
      for (int s = 0; s < stream_mma_groups; ++s) {
        const float4 v = s < groups_in ? *reinterpret_cast<const float4*>(row + 16 * s) : float4{0, 0, 0, 0};
        to.x[s][0] = v.x, to.x[s][1] = v.y, to.x[s][2] = v.z, to.x[s][3] = v.w;
      }
      return;
    }
  }
  STREAMATTN_UNROLL
  for (int s = 0; s < stream_mma_groups; ++s)
    STREAMATTN_UNROLL
    for (int i = 0; i < 4; ++i)
      to.x[s][i] = s < groups_in ? load_as<float>(row + (16 * s + i) * x.feature_stride) : 0.0f;
}

/// Asks L2 for the 128-byte line at `p`, global memory (prefetch.global.L2):
/// no register waits for it.
__device__ __forceinline__ void prefetch_line_to_l2(const void* p) {
#if defined(STREAMATTN_CUDA_EMULATOR) || !defined(__CUDA_ARCH__)
  (void)p;
#else
  asm volatile("prefetch.global.L2 [%0];" ::"l"(__cvta_generic_to_global(p)));
#endif
}

/// Prefetches to L2 the row of token `token` that lane (g, t) loads next
/// (each lane of a g two of its 128-byte lines, so a row of up to 1 KB),
/// where features are contiguous: the batch's loads then wait for L2, not
/// for memory, while the warp scores this batch with the loads' registers
/// taken.
template <class S>
__device__ __forceinline__ void prefetch_stream_mma_token(const additive_args<S>& a, const token_operand<const S>& x,
                                                          index_t b, index_t token, const stream_mma_lane& me) {
  if (x.feature_stride != 1) return;
  const char* const row = reinterpret_cast<const char*>(x.row(b, token));
  const index_t bytes = a.shape.dim * static_cast<index_t>(sizeof(S));
  STREAMATTN_UNROLL
  for (int j = 0; j < 2; ++j) {
    const index_t offset = 128 * (me.t + 4 * j);
    if (offset < bytes) prefetch_line_to_l2(row + offset);
  }
}

/// The scores of the batch in log2 units: score[r][u] is head g + 8 r of
/// token 2 t + u. Each k step's three products start from zero and are
/// added to the scores in float, so the tensor cores' own accumulation
/// never carries more than 8 features' partial sum; the two k steps of a
/// group are two independent chains of three MMAs. ExactInTf32: the
/// features are 16-bit floats, which TF32 holds exactly (Xs = 0), so two
/// MMAs a step.
template <bool ExactInTf32>
__device__ __forceinline__ void stream_mma_scores(const stream_mma_batch& x, const float* weights,
                                                  const stream_mma_lane& me, float (&score)[2][2]) {
  float sum[4] = {0, 0, 0, 0};
  STREAMATTN_UNROLL
  for (int s = 0; s < stream_mma_groups; ++s) {
    if (s >= me.groups) break;  // warp-uniform
    float c[2][4];
    STREAMATTN_UNROLL
    for (int e = 0; e < 2; ++e) {
      float wb[4], ws[4], xb[2], xs[2];
      load_four(weights + stream_mma_weight_index(2 * s + e, 0, me.lane, 0), wb);
      load_four(weights + stream_mma_weight_index(2 * s + e, 1, me.lane, 0), ws);
      split_tf32(x.x[s][2 * e], xb[0], xs[0]);
      split_tf32(x.x[s][2 * e + 1], xb[1], xs[1]);
      // The small products first, then the big one, from zero.
      STREAMATTN_UNROLL
      for (int k = 0; k < 4; ++k) c[e][k] = 0;
      mma_16x8x8_tf32(c[e], ws, xb[0], xb[1]);
      if constexpr (!ExactInTf32) mma_16x8x8_tf32(c[e], wb, xs[0], xs[1]);
      mma_16x8x8_tf32(c[e], wb, xb[0], xb[1]);
    }
    STREAMATTN_UNROLL
    for (int k = 0; k < 4; ++k) sum[k] += c[0][k] + c[1][k];
  }
  score[0][0] = sum[0], score[0][1] = sum[1], score[1][0] = sum[2], score[1][1] = sum[3];
}

/// Heads g and g + 8's running max (log2 units) and sum, alike in the four
/// lanes of a g, and whether a kept token was seen (the same for all).
struct stream_mma_state {
  float row_max[2], row_sum[2];
  bool kept = false;
  __device__ stream_mma_state() : row_max{neg_inf<float>(), neg_inf<float>()}, row_sum{0, 0} {}
};

/// stream_batch_softmax on the C fragments: the batch's 8 tokens, token n
/// valid (in the span) where bit 4 n of `valid` is set and kept where that
/// of `keep` is (__ballot_sync of each lane's token g). Leaves token n's
/// weight of head h in exchange[n * 20 + h] and the rescale of what came
/// before in exchange[8 * 20 + h]; returns whether every head of this
/// call's rescales is exactly 1.
__device__ __forceinline__ bool stream_mma_softmax(const float (&score_in)[2][2], unsigned valid, unsigned keep,
                                                   bool exclude, const stream_mma_lane& me, index_t heads,
                                                   stream_mma_state& st, float* exchange) {
  constexpr float log2e = stream_log2e<float>;
  const float minus_inf = neg_inf<float>();
  const float penalty = static_cast<float>(additive_mask_penalty) * log2e;
  constexpr index_t pitch = stream_mma_exchange_pitch;
  if (keep != 0 && !st.kept) {
    st.row_max[0] += penalty;  // -inf stays -inf
    st.row_max[1] += penalty;
    st.kept = true;
  }
  bool unit_rescales = true;
  STREAMATTN_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int head = me.g + 8 * r;
    float score[2], batch_max = minus_inf;
    STREAMATTN_UNROLL
    for (int u = 0; u < 2; ++u) {
      const int n = 2 * me.t + u;
      const bool v = (valid >> (4 * n) & 1u) != 0, k = (keep >> (4 * n) & 1u) != 0;
      score[u] = score_in[r][u];
      if (!v || (exclude && !k))
        score[u] = minus_inf;
      else if (st.kept && !k)
        score[u] += penalty;
      batch_max = batch_max > score[u] ? batch_max : score[u];
    }
    STREAMATTN_UNROLL
    for (int mask = 1; mask <= 2; mask *= 2) {
      const float other = __shfl_xor_sync(0xffffffffu, batch_max, mask);
      batch_max = batch_max > other ? batch_max : other;
    }
    const float new_max = st.row_max[r] > batch_max ? st.row_max[r] : batch_max;
    // While a head has seen only excluded tokens its max stays -inf;
    // subtracting 0 then keeps exp2(-inf) = 0 rather than NaN.
    const float base = new_max == minus_inf ? 0.0f : new_max;
    const float rescale = exp2_(st.row_max[r] - base);
    float batch_sum = 0;
    STREAMATTN_UNROLL
    for (int u = 0; u < 2; ++u) {
      const float weight = exp2_(score[u] - base);
      batch_sum += weight;
      exchange[(2 * me.t + u) * pitch + head] = weight;
    }
    batch_sum += __shfl_xor_sync(0xffffffffu, batch_sum, 1);
    batch_sum += __shfl_xor_sync(0xffffffffu, batch_sum, 2);
    st.row_sum[r] = st.row_sum[r] * rescale + batch_sum;
    st.row_max[r] = new_max;
    if (me.t == 0) exchange[stream_mma_tokens * pitch + head] = rescale;
    unit_rescales = unit_rescales && (head >= heads || rescale == 1.0f);
  }
  return unit_rescales;
}

/// The chunk state of pool_queries (keys false) or pool_keys (keys true) for
/// chunk c of sequence b, scored on tensor cores.
template <class S>
__device__ void stream_pool_chunk_mma(const additive_args<S>& a, index_t b, index_t c, bool keys, float* smem) {
#if defined(STREAMATTN_CUDA_NO_SM80)
  __trap();
#else
  static_assert(sizeof(device_accum_t<S>) == 4, "pooling_scores_on_tensor_cores: float accumulation");
  constexpr int T = stream_mma_tokens;
  constexpr int G = stream_mma_groups;
  constexpr index_t pitch = stream_mma_exchange_pitch;
  const additive_block<S> blk{a, smem, block_team{}};
  const additive_stream_layout& lay = a.stream;
  const token_operand<const S>& x = keys ? a.k : a.q;
  // q̄ when the keys' scores (and, unless pool_raw_keys, values) are K ⊙ q̄.
  const float* const mult = keys ? blk.pooled(a.pooled_query, b) : nullptr;
  const float* const weights = smem + lay.weights();
  stage_stream_mma_weights(blk, smem + lay.weights(), keys ? a.key_att : a.query_att, mult);  // ends with a barrier

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const stream_mma_lane me(a, x, static_cast<int>(threadIdx.x) % 32);
  const stream_warp_tokens range = warp_tokens(blk, c, warp, T);
  float* const exchange = smem + lay.exchange(warp);
  stream_mma_state st;
  float acc[G][4];
  STREAMATTN_UNROLL
  for (int s = 0; s < G; ++s)
    STREAMATTN_UNROLL
    for (int i = 0; i < 4; ++i) acc[s][i] = 0;

  for (index_t t0 = range.first; t0 < range.last; t0 += range.step) {
    const index_t token = t0 + me.g;
    const bool valid = token < range.last;
    const bool keep = valid && a.mask.keep(b, token);
    stream_mma_batch now;
    load_stream_mma_token(a, x, b, token, valid && (keep || !a.mask.exclude), me, now);
    if (token + range.step < range.last) prefetch_stream_mma_token(a, x, b, token + range.step, me);
    const unsigned valid_bits = __ballot_sync(0xffffffffu, valid), keep_bits = __ballot_sync(0xffffffffu, keep);

    float score[2][2];
    stream_mma_scores<sizeof(S) == 2>(now, weights, me, score);
    const bool unit = stream_mma_softmax(score, valid_bits, keep_bits, a.mask.exclude, me, a.shape.heads, st, exchange);
    __syncwarp();
    // Each lane's token g, weighted by its groups' heads; on long sequences
    // most batches raise no head's max, and every rescale is exactly 1.
    const float* const weight = exchange + me.g * pitch;
    if (__all_sync(0xffffffffu, unit)) {
      STREAMATTN_UNROLL
      for (int s = 0; s < G; ++s) {
        if (s >= me.groups) break;  // warp-uniform
        const float w = weight[me.head_of(s)];
        STREAMATTN_UNROLL
        for (int i = 0; i < 4; ++i) acc[s][i] += w * now.x[s][i];
      }
    } else {
      const float* const rescale = exchange + T * pitch;
      STREAMATTN_UNROLL
      for (int s = 0; s < G; ++s) {
        if (s >= me.groups) break;
        const int head = me.head_of(s);
        const float w = weight[head], r = rescale[head];
        STREAMATTN_UNROLL
        for (int i = 0; i < 4; ++i) acc[s][i] = acc[s][i] * r + w * now.x[s][i];
      }
    }
    __syncwarp();  // every lane has read the exchange before the next batch writes it
  }

  // The lanes of a t hold partial sums of the same features over the tokens
  // of their g: sum them over g (lane bits 2 to 4).
  STREAMATTN_UNROLL
  for (int s = 0; s < G; ++s)
    STREAMATTN_UNROLL
    for (int i = 0; i < 4; ++i)
      STREAMATTN_UNROLL
      for (int mask = 4; mask <= 16; mask *= 2) acc[s][i] += __shfl_xor_sync(0xffffffffu, acc[s][i], mask);

  const state_ref<float> chunk{blk.chunk_state(keys ? a.key_totals : a.query_totals, b, c), lay.state()};
  float* const spans = a.causal_streaming ? blk.span_states(keys ? a.key_warp_totals : a.query_warp_totals, b, c)
                                          : nullptr;
  // Lanes (g, 0) write heads g and g + 8, lanes (0, t) their features.
  const auto write_warp_state = [&](const state_ref<float>& mine, const state_ref<float>& span) {
    if (me.t == 0) {
      STREAMATTN_UNROLL
      for (int r = 0; r < 2; ++r) {
        const index_t head = me.g + 8 * r;
        if (head >= a.shape.heads) continue;
        const float row_max = natural_row_max(st.row_max[r]), kept = st.kept ? 1.0f : 0.0f;
        mine.row_max(head) = row_max, mine.row_sum(head) = st.row_sum[r], mine.saw_kept(head) = kept;
        if (span.base != nullptr) span.row_max(head) = row_max, span.row_sum(head) = st.row_sum[r], span.saw_kept(head) = kept;
      }
    }
    if (me.g == 0) {
      STREAMATTN_UNROLL
      for (int s = 0; s < G; ++s) {
        const index_t f = 16 * s + 4 * me.t;
        if (f >= a.shape.dim) break;
        STREAMATTN_UNROLL
        for (int i = 0; i < 4; ++i) {
          mine.acc(f + i) = acc[s][i];
          if (span.base != nullptr) span.acc(f + i) = acc[s][i];
        }
      }
    }
  };
  finish_stream_chunk(blk, write_warp_state, spans, chunk, keys && !a.pool_raw_keys ? mult : nullptr);
#endif
}

/// Runs block `block` of a chunk pooling that scores on tensor cores.
template <class S>
__device__ void run_stream_mma_block(const additive_args<S>& a, additive_step step, index_t block,
                                     device_accum_t<S>* smem) {
  if constexpr (sizeof(device_accum_t<S>) == 4)  // pooling_scores_on_tensor_cores: float only
    stream_pool_chunk_mma(a, block / a.chunks, block % a.chunks, step == additive_step::pool_keys, smem);
}

}  // namespace streamattn::detail::gpu
