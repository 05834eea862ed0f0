// What the host decides before running additive pooling or Fastformer on the
// GPU: how each sequence is cut into chunks (one thread block each), how
// many tokens a block stages in shared memory at a time, and the workspace
// of per-chunk softmax states. Plain C++ over the device's limits, so every
// decision is unit-tested without a GPU.
//
// Memory: the workspace holds a few states of (3 H + D) numbers per chunk
// (20 where the causal rescans stream: one per warp of both poolings; the
// chunk count is bounded by the GPU's size, not by N) and, with an
// output transform, a D x D copy of it, so nothing grows with the sequence
// length.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>

#include "../config.hpp"
#include "../detail/additive_params.hpp"
#include "../detail/check.hpp"
#include "attention_plan.hpp"
#include "block_team.hpp"
#include "tile_range.hpp"

namespace streamattn::detail::gpu {

/// Chunks per multiprocessor the plan aims for over the whole batch.
inline constexpr index_t additive_blocks_per_sm = 4;
/// Most tokens a block stages at a time; fewer when D is wide.
inline constexpr index_t additive_max_tile_tokens = 32;
/// Shared memory a block uses without opting in.
inline constexpr std::size_t additive_default_shared_bytes = 48 * 1024;

/// One pooling state in the workspace and in shared memory:
/// [row_max: H][row_sum: H][saw_kept: H][accumulator: D].
struct additive_state_layout {
  index_t heads = 0, dim = 0;

  STREAMATTN_HOST_DEVICE index_t max_offset() const { return 0; }
  STREAMATTN_HOST_DEVICE index_t sum_offset() const { return heads; }
  STREAMATTN_HOST_DEVICE index_t kept_offset() const { return 2 * heads; }
  STREAMATTN_HOST_DEVICE index_t acc_offset() const { return 3 * heads; }
  STREAMATTN_HOST_DEVICE index_t length() const { return 3 * heads + dim; }
};

/// Offsets (in accumulator elements) of one block's shared memory.
struct additive_smem_layout {
  index_t tile_tokens = 0, pitch = 0, heads = 0, dim = 0;

  // Two token tiles (pitch = D + 1 keeps column reads free of bank conflicts).
  STREAMATTN_HOST_DEVICE index_t first_tile() const { return 0; }
  STREAMATTN_HOST_DEVICE index_t second_tile() const { return tile_tokens * pitch; }
  // Per (token, head): softmax weight, rescale factor, running sum.
  STREAMATTN_HOST_DEVICE index_t weights() const { return 2 * tile_tokens * pitch; }
  STREAMATTN_HOST_DEVICE index_t rescales() const { return weights() + tile_tokens * heads; }
  STREAMATTN_HOST_DEVICE index_t sums() const { return rescales() + tile_tokens * heads; }
  // The tile's mask bits (1 = kept), one per token.
  STREAMATTN_HOST_DEVICE index_t keeps() const { return sums() + tile_tokens * heads; }
  // Two pooling states and a D-vector (q̄ or k̄ of the sequence).
  STREAMATTN_HOST_DEVICE index_t first_state() const { return keeps() + tile_tokens; }
  STREAMATTN_HOST_DEVICE index_t second_state() const { return first_state() + state().length(); }
  STREAMATTN_HOST_DEVICE index_t vector() const { return second_state() + state().length(); }
  STREAMATTN_HOST_DEVICE index_t length() const { return vector() + dim; }

  STREAMATTN_HOST_DEVICE additive_state_layout state() const { return {heads, dim}; }
};

/// What the warp-streaming pooling (additive_stream.cuh) takes: a lane holds
/// features lane + 32 j of a token for j < 8 (D <= 256) or, accumulating in
/// float, j < 16 (D <= 512), and a warp reduces the partial scores of up to
/// stream_max_heads heads at once. Other calls pool with the block programs.
inline constexpr index_t stream_lane_features = 8;
inline constexpr index_t stream_wide_lane_features = 16;
inline constexpr index_t stream_max_heads = 16;
inline constexpr index_t stream_warps = additive_block_threads / 32;
/// Chunks per multiprocessor where every chunk step streams.
inline constexpr index_t stream_blocks_per_sm = 1;

/// Features per lane the streaming pooling runs with for D: 8, or 16 if wider.
STREAMATTN_HOST_DEVICE constexpr int stream_features_per_lane(index_t dim) {
  return dim <= 32 * stream_lane_features ? static_cast<int>(stream_lane_features)
                                          : static_cast<int>(stream_wide_lane_features);
}

STREAMATTN_HOST_DEVICE bool pooling_streams(const additive_shape& s, std::size_t accum_bytes) {
  const index_t widest = 32 * (accum_bytes == 4 ? stream_wide_lane_features : stream_lane_features);
  return s.heads <= stream_max_heads && s.dim <= widest;
}

/// Whether the causal rescans (causal_key_totals, causal_outputs,
/// causal_prefix_pool) stream: up to 16 heads and 256 features,
/// accumulating in float (additive_stream_causal.cuh; causal_outputs with
/// a transform only into float outputs, transforms_in_place). Else they
/// run as block programs.
STREAMATTN_HOST_DEVICE bool causal_rescans_stream(const additive_shape& s, std::size_t accum_bytes) {
  return accum_bytes == 4 && s.heads <= stream_max_heads && s.dim <= 32 * stream_lane_features;
}

/// Tokens a warp of the streaming pooling scores at once: as many as its
/// registers hold with `features` per lane (the partial scores take
/// batch_tokens x 16 of them, each token's features `features`).
STREAMATTN_HOST_DEVICE constexpr int stream_batch_tokens(std::size_t accum_bytes, int features) {
  return accum_bytes == 4 && features <= stream_lane_features ? 4 : 2;
}

/// Whether the streaming chunk poolings score on tensor cores
/// (additive_stream_mma.cuh): 3xTF32 mma.sync, which needs sm_80, float
/// accumulation and dense weights (a per-head row's zeros would meet other
/// heads' features: 0 x inf), up to 16 heads and 256 features, each head's
/// features a multiple of 4 (a lane's 4 adjacent features share a head).
STREAMATTN_HOST_DEVICE bool pooling_scores_on_tensor_cores(const additive_shape& s, std::size_t accum_bytes,
                                                           int compute_capability) {
  return compute_capability >= 80 && accum_bytes == 4 && !s.per_head && s.heads <= stream_max_heads &&
         s.dim <= 32 * stream_lane_features && s.head_dim % 4 == 0;
}

/// Tokens a warp of the tensor-core pooling scores at once: the N of one
/// m16n8k8, whose M is the 16 heads.
inline constexpr int stream_mma_tokens = 8;
/// Numbers per token row of its exchange: 16 heads and 4 more, so that
/// neither the C fragments' stores (lane (g, t): heads g, g + 8 of tokens
/// 2t, 2t + 1) nor the loads of a token's weight of one head by the 8
/// tokens' lanes meet twice on a bank.
inline constexpr index_t stream_mma_exchange_pitch = stream_max_heads + 4;

/// Where the tensor-core pooling keeps the A fragment number i (0..3) of
/// lane `lane` at k step `step`, part 0 (big) or 1 (small): per k step and
/// part the lanes' four numbers side by side, one 16-byte load each.
STREAMATTN_HOST_DEVICE constexpr index_t stream_mma_weight_index(index_t step, int part, int lane, int i) {
  return ((step * 2 + part) * 32 + lane) * 4 + i;
}

/// Tokens a warp of the causal rescans (additive_stream_causal.cuh) takes at
/// once: two, so that a token's q̄_t and K_t fit in its registers beside
/// the next batch's loads.
inline constexpr int stream_causal_batch_tokens = 2;

/// Tokens of each warp's span of a chunk where the causal rescans stream:
/// the chunk cut into stream_warps contiguous spans of whole batches, so
/// that a warp's prefix states start from those of the warps before it.
STREAMATTN_HOST_DEVICE index_t stream_warp_span(index_t chunk_tokens) {
  constexpr index_t batch = stream_causal_batch_tokens;
  return ceil_div(chunk_tokens, stream_warps * batch) * batch;
}

/// Offsets (in accumulator elements) of a streaming block's shared memory.
struct additive_stream_layout {
  index_t heads = 0, dim = 0, batch_tokens = 0;
  /// The causal rescans stream too: a second set of weights (the keys'),
  /// and an exchange that holds a prefix softmax's factors.
  bool causal = false;
  /// The chunk poolings score on tensor cores (pooling_scores_on_tensor_cores).
  bool mma = false;

  /// Features per weight row: whole warps' worth, zeros past D.
  STREAMATTN_HOST_DEVICE index_t pitch() const { return 32 * ceil_div(dim, 32); }
  /// The tensor-core pooling's k8 steps: two per 16 features.
  STREAMATTN_HOST_DEVICE index_t mma_steps() const { return 2 * ceil_div(dim, 16); }
  // The score weights, stream_max_heads x pitch of them (zeros past H, in
  // the order of stream_weight_index, additive_stream.cuh), or, where the
  // poolings score on tensor cores, their TF32 A fragments (8 numbers per
  // lane and k step, stream_mma_weight_index); then, for the causal
  // rescans, the keys' rows. Once every warp has scored its last token, the
  // same space holds the warps' final states.
  STREAMATTN_HOST_DEVICE index_t weights() const { return 0; }
  STREAMATTN_HOST_DEVICE index_t key_weights() const { return stream_max_heads * pitch(); }
  STREAMATTN_HOST_DEVICE index_t warp_state(index_t warp) const { return warp * state().length(); }
  // Per warp: its batch's weights [batch_tokens][16] and rescales [16] (the
  // tensor-core pooling's [8][20] and [16]); in a causal rescan, per token
  // of its batch a rescale, a weight and 1 / sum of every head.
  STREAMATTN_HOST_DEVICE index_t exchange_length() const {
    const index_t pooling = mma ? stream_mma_tokens * stream_mma_exchange_pitch + stream_max_heads
                                : (batch_tokens + 1) * stream_max_heads;
    const index_t prefix = causal ? 3 * stream_causal_batch_tokens * stream_max_heads : 0;
    return pooling > prefix ? pooling : prefix;
  }
  STREAMATTN_HOST_DEVICE index_t exchange(index_t warp) const {
    const index_t rows = (causal ? 2 : 1) * stream_max_heads * pitch(), states = stream_warps * state().length();
    const index_t fragments = mma ? stream_mma_weight_index(mma_steps(), 0, 0, 0) : 0;
    const index_t weight_space = rows > fragments ? rows : fragments;
    const index_t shared = weight_space > states ? weight_space : states;
    return shared + warp * exchange_length();
  }
  STREAMATTN_HOST_DEVICE index_t length() const { return exchange(stream_warps); }

  STREAMATTN_HOST_DEVICE additive_state_layout state() const { return {heads, dim}; }
};

/// The output transform's register tiles (additive_transform.cuh): tokens
/// and outputs of one thread's tile, and the most token tiles a warp takes
/// (its 32 lanes are token tiles x output tiles).
inline constexpr int transform_tile_tokens = 4;
inline constexpr int transform_tile_outputs = 4;
inline constexpr int transform_max_warp_token_tiles = 4;

/// Numbers per row of W_tᵀ in the workspace: whole output tiles.
STREAMATTN_HOST_DEVICE constexpr index_t transform_pitch(index_t dim) {
  return (dim + transform_tile_outputs - 1) / transform_tile_outputs * transform_tile_outputs;
}

struct additive_plan {
  index_t chunks = 0;        // per sequence; chunk c holds tokens [c * chunk_tokens, ...)
  index_t chunk_tokens = 0;  // a multiple of tile_tokens
  additive_smem_layout smem;
  /// Whether the chunk poolings stream (pooling_streams), and their layout.
  bool stream_pooling = false;
  additive_stream_layout stream;
  std::size_t shared_bytes = 0;  // the larger of the block programs' and the streaming pooling's
  std::size_t accum_bytes = 4;  // float, or 8 for double inputs
  /// Whether the causal rescans stream (causal_rescans_stream): then the
  /// chunk steps give each warp a contiguous span of the chunk's tokens
  /// (stream_warp_span) and keep its states in the workspace too.
  bool causal_streaming = false;

  // Workspace, in accumulator elements: per-chunk states of the first
  // (query) and second (key) pooling, their exclusive prefixes (causal
  // only), the pooled q̄ and k̄ of every sequence, where the causal rescans
  // stream the states of every warp's span of both poolings and, with an
  // output transform, W_tᵀ (D x D, additive_transform.cuh).
  index_t state_count = 0;  // batch * chunks
  bool causal = false;
  bool transform = false;
  index_t batch = 0;

  index_t states_length() const { return state_count * smem.state().length(); }
  index_t query_totals() const { return 0; }
  index_t query_carries() const { return states_length(); }
  index_t key_totals() const { return (causal ? 2 : 1) * states_length(); }
  index_t key_carries() const { return key_totals() + states_length(); }
  index_t pooled_query() const { return (causal ? 4 : 2) * states_length(); }
  index_t pooled_key() const { return pooled_query() + batch * smem.dim; }
  index_t pooled_end() const { return pooled_key() + batch * smem.dim; }
  index_t warp_states_length() const { return causal_streaming ? stream_warps * states_length() : 0; }
  index_t query_warp_totals() const { return pooled_end(); }
  index_t key_warp_totals() const { return query_warp_totals() + warp_states_length(); }
  index_t states_end() const { return key_warp_totals() + warp_states_length(); }
  /// W_tᵀ, D rows of transform_pitch(D) (additive_transform.cuh), from a
  /// multiple of 32 numbers: 16-byte aligned for its vector loads, and its
  /// rows start on 128-byte lines when D % 32 == 0.
  index_t transposed_transform() const { return ceil_div(states_end(), index_t{32}) * 32; }
  index_t workspace_elements() const {
    return transform ? transposed_transform() + smem.dim * transform_pitch(smem.dim) : states_end();
  }
  std::size_t workspace_bytes() const { return static_cast<std::size_t>(workspace_elements()) * accum_bytes; }
};

/// What a call asks of the plan beyond its shape.
struct additive_plan_options {
  bool transform = false;  // a Fastformer call's outputs apply W_t (a block program with W_tᵀ in the workspace)
  bool streaming = true;   // false: every step runs as a block program (additive_args::streaming)
  bool tensor_cores = true;  // false: the streaming poolings score with FMAs (for tests and benchmarks)
};

/// Plans a call over `s` (batch, tokens, dim, heads). Throws
/// std::invalid_argument when D is too wide for one token to fit in the
/// device's shared memory or the batch exceeds the CUDA grid.
inline additive_plan plan_additive(const char* function, const additive_shape& s, bool causal, std::size_t accum_bytes,
                                   const device_limits& device, const additive_plan_options& options = {}) {
  additive_plan plan;
  plan.accum_bytes = accum_bytes;
  plan.causal = causal;
  plan.transform = options.transform;
  plan.batch = s.batch;
  additive_smem_layout& m = plan.smem;
  m.heads = s.heads;
  m.dim = s.dim;
  m.pitch = s.dim + 1;
  const auto bytes = [&](index_t tile) {
    additive_smem_layout l = m;
    l.tile_tokens = tile;
    return static_cast<std::size_t>(l.length()) * accum_bytes;
  };
  m.tile_tokens = additive_max_tile_tokens;
  while (m.tile_tokens > 1 && bytes(m.tile_tokens) > additive_default_shared_bytes) m.tile_tokens /= 2;
  plan.shared_bytes = bytes(m.tile_tokens);
  plan.stream_pooling = pooling_streams(s, accum_bytes);
  // (The rescans start from the spans' states that a streaming
  // pool_queries writes: causal_rescans_stream is within pooling_streams.)
  plan.causal_streaming = options.streaming && causal && plan.stream_pooling && causal_rescans_stream(s, accum_bytes);
  if (plan.stream_pooling) {
    plan.stream = {s.heads, s.dim, stream_batch_tokens(accum_bytes, stream_features_per_lane(s.dim)),
                   plan.causal_streaming,
                   options.tensor_cores && pooling_scores_on_tensor_cores(s, accum_bytes, device.compute_capability)};
    plan.shared_bytes = std::max(plan.shared_bytes, static_cast<std::size_t>(plan.stream.length()) * accum_bytes);
  }
  const std::size_t limit = std::max(device.max_shared_bytes, additive_default_shared_bytes);
  if (plan.shared_bytes > limit)
    fail(function, "D = ", s.dim, " with ", s.heads, " heads needs ", plan.shared_bytes,
         " bytes of shared memory per block on the GPU, more than the device's ", limit);

  // Enough chunks over the batch to give every multiprocessor a few blocks,
  // never a chunk shorter than one tile, and at least one chunk per
  // sequence (an empty sequence still pools to zeros). Where every chunk
  // step streams, one chunk per multiprocessor: the streaming kernel holds
  // one block per multiprocessor (its registers), so that is one wave, and
  // the combine steps merge a quarter of the states.
  const bool every_chunk_step_streams =
      options.streaming && plan.stream_pooling && (!causal || plan.causal_streaming) && !options.transform;
  const index_t per_sm = every_chunk_step_streams ? stream_blocks_per_sm : additive_blocks_per_sm;
  const index_t target = std::max<index_t>(1, per_sm * std::max(device.sm_count, 1));
  const index_t per_sequence = ceil_div(target, std::max<index_t>(s.batch, 1));
  const index_t tiles = std::max<index_t>(1, ceil_div(s.tokens, m.tile_tokens));
  const index_t chunks = std::max<index_t>(1, std::min(per_sequence, tiles));
  plan.chunk_tokens = ceil_div(tiles, chunks) * m.tile_tokens;
  plan.chunks = std::max<index_t>(1, ceil_div(s.tokens, plan.chunk_tokens));

  constexpr index_t max_grid = std::numeric_limits<std::int32_t>::max();
  if (s.batch > max_grid / plan.chunks)
    fail(function, "batch = ", s.batch, " exceeds the CUDA grid limit (", plan.chunks, " blocks per sequence)");
  plan.state_count = s.batch * plan.chunks;
  return plan;
}

}  // namespace streamattn::detail::gpu
