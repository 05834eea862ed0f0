// The phases the additive (Fastformer) block programs are made of. A block
// stages a tile of tokens in shared memory and
//   1. scores every (token, head) pair,                        score_tokens
//   2. runs each head's online softmax over the tile's tokens  scan_heads
//      in order, leaving per token a weight p and a rescale r,
//   3. runs each feature's accumulator over the same tokens:   scan_features
//      acc = acc * r + p * value (and, for prefix poolings, acc / sum).
// Step 2 is sequential in the tokens but parallel over heads, step 3 over
// features, so the same three phases give a chunk's total state and every
// prefix of it. Each is one team.for_each (block_team.hpp).
#pragma once

#include <type_traits>

#include "../detail/additive_params.hpp"
#include "../detail/math.hpp"
#include "../online_softmax.hpp"
#include "additive_plan.hpp"
#include "block_team.hpp"
#include "device_types.cuh"

namespace streamattn::detail::gpu {

/// A pooling state (additive_state_layout) at `base`.
template <class Acc>
struct state_ref {
  Acc* base;
  additive_state_layout layout;

  STREAMATTN_HOST_DEVICE Acc& row_max(index_t h) const { return base[layout.max_offset() + h]; }
  STREAMATTN_HOST_DEVICE Acc& row_sum(index_t h) const { return base[layout.sum_offset() + h]; }
  STREAMATTN_HOST_DEVICE Acc& saw_kept(index_t h) const { return base[layout.kept_offset() + h]; }
  STREAMATTN_HOST_DEVICE Acc& acc(index_t f) const { return base[layout.acc_offset() + f]; }
};

/// The state that has seen no token.
template <class Acc>
STREAMATTN_HOST_DEVICE Acc empty_state_value(const additive_state_layout& l, index_t i) {
  return i < l.sum_offset() ? neg_inf<Acc>() : Acc(0);
}

/// Merges one head of another state (m2, l2, kept2) into (m, l, kept) with
/// the additive-mask bookkeeping of head_softmax_states::merge: a side that
/// has seen only padded tokens moves to the common scale (-10000) when the
/// other side has seen a kept one. Returns the accumulator factors.
template <class Acc>
STREAMATTN_HOST_DEVICE merge_scales<Acc> merge_head(Acc& m, Acc& l, Acc& kept, Acc m2, Acc l2, Acc kept2) {
  const Acc penalty = static_cast<Acc>(additive_mask_penalty);
  if (kept2 != Acc(0) && kept == Acc(0)) m += penalty;  // -inf stays -inf
  if (kept != Acc(0) && kept2 == Acc(0)) m2 += penalty;
  kept = (kept != Acc(0) || kept2 != Acc(0)) ? Acc(1) : Acc(0);
  if (l2 == Acc(0)) return {Acc(1), Acc(0)};
  if (l == Acc(0)) {
    m = m2;
    l = l2;
    return {Acc(0), Acc(1)};
  }
  return merge_max_and_sum(m, l, m2, l2);
}

/// Elements each thread has in flight when a tile moves to or from global
/// memory (block_team::copy_pairs).
inline constexpr int tile_copy_batch = 8;

/// Tokens [t0, t0 + n) of sequence b into tile[t * pitch + f] (accumulation
/// type). Excluded tokens (mask false, exclude mode) load as zeros so that
/// nothing from them, NaN padding included, reaches a pooling. `keeps`
/// (optional) receives the tokens' mask bits as 0/1 (D >= 1 here: a call
/// with D = 0 has nothing to write and launches nothing).
template <class Acc, class S>
STREAMATTN_HOST_DEVICE void load_tokens(const block_team& team, const token_operand<const S>& x, index_t b,
                                        index_t t0, index_t n, index_t dim, index_t pitch, const keep_mask_ref& mask,
                                        Acc* tile, Acc* keeps) {
  team.copy_pairs<tile_copy_batch>(
      n, dim,
      [&](index_t t, index_t f) {
        const bool keep = mask.keep(b, t0 + t);
        return (keep || !mask.exclude) ? load_as<Acc>(x.row(b, t0 + t) + f * x.feature_stride) : Acc(0);
      },
      [&](index_t t, index_t f, Acc value) {
        tile[t * pitch + f] = value;
        if (keeps != nullptr && f == 0) keeps[t] = mask.keep(b, t0 + t) ? Acc(1) : Acc(0);
      });
}

#if defined(__CUDA_ARCH__) || defined(STREAMATTN_CUDA_EMULATOR)
/// score_tokens for dense weights (every head reads all D features) in
/// float accumulation, a warp per 4 tokens x 4 heads. A thread per (token,
/// head) loaded a tile value and a weight for every FMA (the block
/// programs' slowest phase); here the lanes split the features, each
/// keeping 16 partial dots, so each loaded value feeds 4 FMAs, and a
/// reduce-scatter over the warp (16 shuffles) leaves every score in two
/// lanes. Partial dots of different (token,
/// head) slots never mix, so a NaN in a clamped or excluded token's row
/// stays in that token's scores.
template <class Acc>
__device__ void score_tokens_by_warps(const block_team& team, const Acc* x, index_t pitch, const Acc* mult,
                                      index_t mult_pitch, const score_weights_ref<Acc>& w, const additive_shape& s,
                                      Acc scale, const Acc* keeps, bool exclude, index_t n, Acc* scores) {
  constexpr int tokens = 4, heads = 4, slots = tokens * heads;
  const auto token_groups = static_cast<unsigned>((n + tokens - 1) / tokens);
  const auto head_groups = static_cast<unsigned>((s.heads + heads - 1) / heads);
  // Whole warps per task (blockDim.x is a multiple of 32), so every lane of
  // a warp takes part in each shuffle.
  team.for_each(index_t{token_groups} * head_groups * 32, [&](index_t index) {
    const auto flat = static_cast<unsigned>(index);
    const unsigned task = flat / 32, lane = flat % 32;
    const index_t first_token = index_t{task / head_groups} * tokens;
    const index_t first_head = index_t{task % head_groups} * heads;
    // Tokens and heads past the edge are clamped (computed, never written).
    // Each lane walks features lane, lane + 32, ... with pointers that step
    // by 32 features (the index arithmetic per load was most of the loop).
    const Acc* rows[tokens];
    const Acc* scaled[tokens];
    const Acc* weights[heads];
    for (int i = 0; i < tokens; ++i) {
      const index_t t = first_token + i < n ? first_token + i : n - 1;
      rows[i] = x + t * pitch + lane;
      scaled[i] = mult != nullptr ? mult + t * mult_pitch + lane : nullptr;
    }
    for (int j = 0; j < heads; ++j) {
      const index_t h = first_head + j < s.heads ? first_head + j : s.heads - 1;
      weights[j] = w.data + h * w.head_stride + static_cast<index_t>(lane) * w.feature_stride;
    }
    const index_t weight_step = 32 * w.feature_stride;
    Acc part[slots] = {};
    const auto accumulate = [&](auto scale_tokens) {
      STREAMATTN_NO_UNROLL
      for (index_t f = lane; f < s.dim; f += 32) {
        Acc xf[tokens], wf[heads];
        for (int i = 0; i < tokens; ++i) {
          if constexpr (decltype(scale_tokens)::value) {
            xf[i] = *rows[i] * *scaled[i];
            scaled[i] += 32;
          } else {
            xf[i] = *rows[i];
          }
          rows[i] += 32;
        }
        for (int j = 0; j < heads; ++j) {
          wf[j] = *weights[j];
          weights[j] += weight_step;
        }
        for (int i = 0; i < tokens; ++i)
          for (int j = 0; j < heads; ++j) part[i * heads + j] += xf[i] * wf[j];
      }
    };
    if (mult != nullptr)
      accumulate(std::true_type{});
    else
      accumulate(std::false_type{});
    // Halve the slots four times, each lane keeping the half its lane bit
    // names, then add the pairs: lane l ends with slot l / 2 summed over
    // all 32 lanes.
    for (int half = slots / 2, distance = 16; half >= 1; half /= 2, distance /= 2) {
      const bool upper = (lane & static_cast<unsigned>(distance)) != 0;
      for (int k = 0; k < half; ++k) {
        const Acc give = upper ? part[k] : part[k + half];
        const Acc keep = upper ? part[k + half] : part[k];
        part[k] = keep + __shfl_xor_sync(0xffffffffu, give, distance);
      }
    }
    part[0] += __shfl_xor_sync(0xffffffffu, part[0], 1);
    if (lane % 2 != 0) return;
    const index_t t = first_token + static_cast<index_t>(lane / 2 / heads);
    const index_t h = first_head + static_cast<index_t>(lane / 2 % heads);
    if (t >= n || h >= s.heads) return;
    scores[t * s.heads + h] = exclude && keeps[t] == Acc(0) ? neg_inf<Acc>() : scale * part[0];
  });
}
#endif

/// scores[t * H + h] = scale * sum_f x[t, f] * mult[t, f] * w[h, f] over
/// head h's weight row (mult, when given, is the tile `mult` with row pitch
/// `mult_pitch`, 0 for one vector shared by every token). Excluded tokens
/// score -inf, which scan_heads skips.
template <class Acc>
STREAMATTN_HOST_DEVICE void score_tokens(const block_team& team, const Acc* x, index_t pitch, const Acc* mult,
                                         index_t mult_pitch, const score_weights_ref<Acc>& w, const additive_shape& s,
                                         Acc scale, const Acc* keeps, bool exclude, index_t n, Acc* scores) {
#if defined(__CUDA_ARCH__) || defined(STREAMATTN_CUDA_EMULATOR)
  if constexpr (sizeof(Acc) == 4) {
    if (!s.per_head) {
      score_tokens_by_warps(team, x, pitch, mult, mult_pitch, w, s, scale, keeps, exclude, n, scores);
      return;
    }
  }
#endif
  // Per-head weights (D FMAs a token in all), double (whose 16 partial dots
  // a lane took the block programs' kernel from 128 to 171 registers, one
  // block per SM) and the host pass: a thread per (token, head), t fastest,
  // so a warp shares one weight row and reads distinct tile rows, whose odd
  // pitch puts them in distinct banks.
  team.for_each_pair(s.heads, n, [&](index_t h, index_t t) {
    Acc score = neg_inf<Acc>();
    if (!(exclude && keeps[t] == Acc(0))) {
      const index_t offset = s.weight_offset(h), length = s.weight_length();
      const Acc* row = x + t * pitch + offset;
      const Acc* scaled = mult != nullptr ? mult + t * mult_pitch + offset : nullptr;
      Acc dot = 0;
      for (index_t f = 0; f < length; ++f) dot += (scaled != nullptr ? row[f] * scaled[f] : row[f]) * w.at(h, f);
      score = scale * dot;
    }
    scores[t * s.heads + h] = score;
  });
}

/// Per head, in token order: the online softmax of head_softmax_states::update.
/// Turns scores[t * H + h] into the token's weight p = exp(s - m_t), writes
/// the rescale r_t = exp(m_{t-1} - m_t) of everything before it and (when
/// `sums` is given) the running sum l_t, and leaves the state after the tile.
template <class Acc>
STREAMATTN_HOST_DEVICE void scan_heads(const block_team& team, Acc* scores, Acc* rescales, Acc* sums,
                                       const Acc* keeps, const state_ref<Acc>& state, index_t heads, index_t n) {
  team.for_each(heads, [&](index_t h) {
    const Acc penalty = static_cast<Acc>(additive_mask_penalty);
    Acc m = state.row_max(h), l = state.row_sum(h);
    bool kept = state.saw_kept(h) != Acc(0);
    for (index_t t = 0; t < n; ++t) {
      Acc score = scores[t * heads + h], rescale = 1, weight = 0;
      if (score != neg_inf<Acc>()) {
        const bool keep = keeps[t] != Acc(0);
        if (keep && !kept) {
          m += penalty;  // the first kept token: earlier padded ones move to the common scale
          kept = true;
        } else if (!keep && kept) {
          score += penalty;
        }
        if (score > m) {
          rescale = exp_(m - score);
          m = score;
          weight = 1;
        } else {
          weight = exp_(score - m);
        }
        l = l * rescale + weight;
      }
      scores[t * heads + h] = weight;
      rescales[t * heads + h] = rescale;
      if (sums != nullptr) sums[t * heads + h] = l;
    }
    state.row_max(h) = m;
    state.row_sum(h) = l;
    state.saw_kept(h) = kept ? Acc(1) : Acc(0);
  });
}

/// Per feature, in token order: acc = acc * r_t + p_t * values[t, f] with the
/// factors of the feature's head. With `prefix` (may equal `values`) also
/// writes every prefix pooling acc / l_t (0 before any token counted).
template <class Acc>
STREAMATTN_HOST_DEVICE void scan_features(const block_team& team, const Acc* values, index_t pitch,
                                          const Acc* weights, const Acc* rescales, const Acc* sums, Acc* prefix,
                                          const state_ref<Acc>& state, const additive_shape& s, index_t n) {
  team.for_each(s.dim, [&](index_t f) {
    const index_t h = f / s.head_dim;
    Acc acc = state.acc(f);
    for (index_t t = 0; t < n; ++t) {
      const index_t th = t * s.heads + h;
      acc = acc * rescales[th] + weights[th] * values[t * pitch + f];
      if (prefix != nullptr) prefix[t * pitch + f] = sums[th] == Acc(0) ? Acc(0) : acc / sums[th];
    }
    state.acc(f) = acc;
  });
}

}  // namespace streamattn::detail::gpu
