// The steps the two tensor-core attention kernels share: where a block
// works, which rows a thread's accumulator fragments hold, scores to log2
// units under the masks, the online-softmax update and the epilogue.
//
// Both kernels keep, per warp, 16 query rows in the accumulator layout of
// mma.sync m16n8k16: a thread holds fragment rows g and g + 8 (g = lane / 4)
// and two adjacent columns of every 8-column tile. attention_kernel.cuh
// builds that layout from mma.sync; attention_wgmma_kernel.cuh gets it from
// wgmma, whose m64nNk16 accumulator gives each warp of the warpgroup the same
// layout over its 16 rows. The scores s[n][c] and outputs acc[d][c] below are
// such tiles: n (or d) picks the 8-column tile, c the register.
#pragma once

#include <cstdint>
#include <cstring>

#include "../detail/math.hpp"
#include "../detail/score_terms.hpp"
#include "fast_exp2.cuh"
#include "head_packing.hpp"
#include "kernel_args.cuh"
#include "mma.cuh"
#include "mma_fragments.hpp"
#include "tile_range.hpp"

namespace streamattn::detail::gpu {

/// What one block of a tensor-core kernel works on: `rows` packed query rows
/// from row0 of one batch item and group of heads (head_packing.hpp).
struct tensor_block {
  index_t batch = 0;
  index_t first_head = 0;  // the block's first query head
  index_t heads_here = 1;  // consecutive query heads packed into its rows
  index_t kv_head = 0;
  /// This batch item's queries and keys (packed lengths, key_lengths) and
  /// the causal/window ranges aligned to them; loads stop at nq and nk.
  visibility vis;
  index_t packed_rows = 0;  // nq * heads_here: the item's rows
  index_t row0 = 0;         // the block's first packed row
  index_t query0 = 0;       // the queries its rows hold: [query0, query0 + queries)
  index_t queries = 0;

  /// The grid covers the longest packed item: a block past a shorter one's
  /// queries has nothing to do.
  STREAMATTN_HOST_DEVICE bool empty() const { return row0 >= packed_rows; }
};

/// The block blockIdx.x stands for, with `rows` packed rows per block.
template <class S, class Skv>
__device__ __forceinline__ tensor_block locate_block(const kernel_args<S, Skv>& args, int rows) {
  const attention_params<S, void, Skv>& p = args.p;
  const index_t block = blockIdx.x;
  tensor_block b;
  // Under a causal mask the last query tiles see the most keys; starting
  // them first shortens the grid's tail.
  const index_t query_block = args.query_tiles - 1 - block % args.query_tiles;
  b.heads_here = args.packed_heads;
  const index_t head_blocks = p.hq / b.heads_here;
  b.first_head = (block / args.query_tiles) % head_blocks * b.heads_here;
  b.batch = block / args.query_tiles / head_blocks;
  b.kv_head = p.kv_head_of(b.first_head);
  b.vis = p.visible_in(b.batch);
  b.packed_rows = b.vis.nq * b.heads_here;
  b.row0 = query_block * rows;
  if (b.empty()) return b;
  b.query0 = unpack_row(b.row0, b.heads_here, 0).query;
  const index_t last_row = (b.row0 + rows < b.packed_rows ? b.row0 + rows : b.packed_rows) - 1;
  b.queries = unpack_row(last_row, b.heads_here, 0).query - b.query0 + 1;
  return b;
}

/// The key tiles of `keys` keys a block visits: its rows' causal/window band,
/// within split slice blockIdx.y when the key axis is split.
template <class S, class Skv>
__device__ __forceinline__ tile_span block_key_tiles(const kernel_args<S, Skv>& args, const tensor_block& b, int keys) {
  const bool split = args.splits > 1;
  const index_t split_first = split ? static_cast<index_t>(blockIdx.y) * args.tiles_per_split : 0;
  const index_t split_last = split ? split_first + args.tiles_per_split : ceil_div(args.p.nk, keys);
  return key_tiles_of(b.vis, b.query0, b.queries, keys, split_first, split_last);
}

/// A thread's two accumulator rows, fragment rows g and g + 8 of its warp's
/// 16, as a query and a head (first_head + head; an int, since registers are
/// the scarce resource in these kernels). Rows past the item's queries see
/// no key, so they never read bias or mask out of range.
struct fragment_rows {
  index_t query[2];
  int head[2];
  key_range keys[2];
};

__device__ __forceinline__ fragment_rows rows_of_lane(const tensor_block& b, int warp, int lane) {
  fragment_rows r;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const packed_row pr = unpack_row(b.row0 + warp * 16 + fragment::c_row(lane, 2 * i), b.heads_here, 0);
    r.query[i] = pr.query;
    r.head[i] = static_cast<int>(pr.head);
    r.keys[i] = pr.query < b.vis.nq ? b.vis.keys_of(pr.query) : key_range{0, 0};
  }
  return r;
}

/// Sets accumulator tiles to zero.
template <int Frags>
__device__ __forceinline__ void zero_fragments(float (&x)[Frags][4]) {
#pragma unroll
  for (int n = 0; n < Frags; ++n) x[n][0] = x[n][1] = x[n][2] = x[n][3] = 0.0f;
}

/// Scores of key tile [key0, key0 + KeyFrags * 8) as softmax_weights takes
/// them, times args.softmax_factor: in log2 units (factor 1), or raw where
/// the scale folds (kernel_args::scale_folds); invisible keys (outside
/// the band, past Nk, rows past Nq) become -inf so they weigh exactly 0.
/// Tiles wholly inside every row's band take one multiply per score, or
/// none where the scale folds.
template <int KeyFrags, class S, class Skv>
__device__ __forceinline__ void scores_to_log2(float (&s)[KeyFrags][4], const kernel_args<S, Skv>& args,
                                               const tensor_block& b, const fragment_rows& rows, index_t key0,
                                               int lane) {
  constexpr int keys = KeyFrags * 8;
  constexpr float log2e = 1.4426950408889634f;
  const float minus_inf = neg_inf<float>();
  const bool fold = args.scale_folds;
  if (!tile_needs_mask(b.vis, b.query0, b.queries, key0, keys, args.has_terms)) {
    if (fold) return;
#pragma unroll
    for (int n = 0; n < KeyFrags; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[n][c] *= args.scale_log2;
    return;
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const tile_columns visible = columns_in_tile(rows.keys[i], key0, keys);
    if (args.has_terms) {
      // Built per tile rather than kept live across the key loop: registers
      // are the scarce resource, and this is a handful of integer ops.
      const score_row<float> terms = make_score_row<float>(args.p, b.batch, b.first_head + rows.head[i], rows.query[i]);
#pragma unroll
      for (int n = 0; n < KeyFrags; ++n)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int column = n * 8 + fragment::c_col(lane, 2 * i + c);
          float& x = s[n][2 * i + c];
          x = visible.contains(column) ? terms.apply(x * args.p.scale, key0 + column) * log2e : minus_inf;
        }
    } else {
      const float factor = fold ? 1.0f : static_cast<float>(args.scale_log2);
#pragma unroll
      for (int n = 0; n < KeyFrags; ++n)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float& x = s[n][2 * i + c];
          x = visible.contains(n * 8 + fragment::c_col(lane, 2 * i + c)) ? x * factor : minus_inf;
        }
    }
  }
}

/// a * b rounded to float, never fused into a later add: softmax_weights
/// needs a score's scaled value to round exactly as its row's maximum did.
__device__ __forceinline__ float rounded_product(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  volatile float product = a * b;  // the emulator's host compiler may not contract through it either
  return product;
#endif
}

/// Online softmax over one key tile, the score half: raises each row's
/// running max (log2 units), turns the scores into weights under it and
/// adds them to the running sums, rescaled by `rescale`, the factor by which
/// what was accumulated under the old max must shrink (rescale_rows).
/// row_sum is this thread's share of the running sum (its columns; the
/// quad's four shares are added at the end, which is valid because all four
/// rescale by the same factor).
template <int KeyFrags>
__device__ __forceinline__ void softmax_weights(float (&s)[KeyFrags][4], float factor, float (&row_max)[2],
                                                float (&row_sum)[2], float (&rescale)[2]) {
  const float minus_inf = neg_inf<float>();
  float base[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float tile_max = minus_inf;
#pragma unroll
    for (int n = 0; n < KeyFrags; ++n) tile_max = fmaxf(tile_max, fmaxf(s[n][2 * i], s[n][2 * i + 1]));
    // The four lanes of a quad hold the same row.
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    // The factor is positive (kernel_args::softmax_factor): the largest
    // scaled score is the largest score scaled, and -inf stays -inf.
    tile_max = rounded_product(tile_max, factor);
    const float new_max = fmaxf(row_max[i], tile_max);
    // -inf guard: while a row has seen only masked keys its max stays -inf;
    // subtracting 0 instead keeps exp2(-inf - base) at 0 rather than the NaN
    // of (-inf) - (-inf).
    base[i] = new_max == minus_inf ? 0.0f : new_max;
    rescale[i] = exp2_flushing_subnormals(row_max[i] - base[i]);
    row_max[i] = new_max;
  }
  // Folded, the exponent of a row's largest score is the rounding error of
  // its scaled value, up to half an ulp of the base: below 2^24 (log2
  // units) at most 1/2, so the largest weight lies in [0.7, 1.42], but
  // beyond, up to 2^(ulp/2), which fp16 P overflows past 2^16 and float
  // past 2^128, or flushes to 0. Where any row of the warp's is that large
  // (or NaN), the tile scales its scores first instead, as without the
  // fold, so that each row's largest weight is exactly 1 (the same rounded
  // product as its base); a warp vote keeps the branch uniform.
  if (factor != 1.0f && !__all_sync(0xffffffffu, fabsf(base[0]) < 0x1p24f && fabsf(base[1]) < 0x1p24f)) {
#pragma unroll
    for (int n = 0; n < KeyFrags; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[n][c] = rounded_product(s[n][c], factor);
    factor = 1.0f;
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float sum = 0.0f;
#pragma unroll
    for (int n = 0; n < KeyFrags; ++n) {
      s[n][2 * i] = exp2_flushing_subnormals(fmaf(s[n][2 * i], factor, -base[i]));
      s[n][2 * i + 1] = exp2_flushing_subnormals(fmaf(s[n][2 * i + 1], factor, -base[i]));
      sum += s[n][2 * i] + s[n][2 * i + 1];
    }
    row_sum[i] = row_sum[i] * rescale[i] + sum;
  }
}

/// Online softmax, the output half: what was accumulated under the old
/// maxima shrinks by softmax_weights' factors. A warp whose rows all kept
/// their maxima (every factor exactly 1, as exp2(0) is) skips the
/// multiplications: x * 1 = x, so nothing changes but a NaN's payload (and
/// a subnormal under flush-to-zero). On long sequences most tiles raise no
/// row's maximum, and at head dim 128 this saves 64 multiplications per
/// thread per tile. The vote keeps the branch uniform; every lane of the
/// warp reaches it in both kernels.
template <int OutFrags>
__device__ __forceinline__ void rescale_rows(float (&acc)[OutFrags][4], const float (&rescale)[2]) {
  if (__all_sync(0xffffffffu, rescale[0] == 1.0f && rescale[1] == 1.0f)) return;
#pragma unroll
  for (int d = 0; d < OutFrags; ++d) {
    acc[d][0] *= rescale[0];
    acc[d][1] *= rescale[0];
    acc[d][2] *= rescale[1];
    acc[d][3] *= rescale[1];
  }
}

/// Both halves of the online softmax over one key tile.
template <int KeyFrags, int OutFrags>
__device__ __forceinline__ void online_softmax(float (&s)[KeyFrags][4], float factor, float (&acc)[OutFrags][4],
                                               float (&row_max)[2], float (&row_sum)[2]) {
  float rescale[2];
  softmax_weights(s, factor, row_max, row_sum, rescale);
  rescale_rows(acc, rescale);
}

/// The two accumulator registers of score tiles 2j and 2j + 1 that make up
/// register r of the A fragment of P.V's k16 step j (mma_fragments.hpp).
template <int KeyFrags>
__device__ __forceinline__ const float* a_register_pair(const float (&s)[KeyFrags][4], int j, int r) {
  return s[2 * j + fragment::a_from_c_tile(r)] + fragment::a_from_c_first_register(r);
}

/// The A operand of P.V for keys [16j, 16j + 16): the accumulator fragments
/// of score tiles 2j and 2j + 1 are, element for element, the A fragment of
/// one k16 step; split into a 16-bit high part and its rounding error
/// (split_pair in mma.cuh).
template <class Spv, int KeyFrags>
__device__ __forceinline__ void weights_as_a(const float (&s)[KeyFrags][4], int j, std::uint32_t (&hi)[4],
                                             std::uint32_t (&lo)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const float* c = a_register_pair(s, j, r);
    split_pair<Spv>(c[0], c[1], hi[r], lo[r]);
  }
}

/// The same A operand rounded to 16 bits (weights_in_input_type).
template <class Spv, int KeyFrags>
__device__ __forceinline__ void weights_as_a(const float (&s)[KeyFrags][4], int j, std::uint32_t (&rounded)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const float* c = a_register_pair(s, j, r);
    rounded[r] = round_pair<Spv>(c[0], c[1]);
  }
}

/// The wgmma kernel's P, packed while P_{t-1} V_{t-1} still holds the A
/// registers: each pair of weights (c, c + 1) of an accumulator tile turns,
/// in its own two registers, into its 16-bit high pair (in the first) and
/// low pair (in the second, split_pair), or with Split false into the
/// rounded pair (in the first); after the wait packed_weights_as_a only
/// copies them into the A registers. The packed words must then only be
/// moved: as floats many are subnormals, which arithmetic would flush.
template <class Spv, bool Split, int KeyFrags>
__device__ __forceinline__ void pack_weights(float (&s)[KeyFrags][4]) {
#pragma unroll
  for (int n = 0; n < KeyFrags; ++n)
#pragma unroll
    for (int c = 0; c < 4; c += 2) {
      std::uint32_t hi, lo = 0;
      if constexpr (Split)
        split_pair<Spv>(s[n][c], s[n][c + 1], hi, lo);
      else
        hi = round_pair<Spv>(s[n][c], s[n][c + 1]);
      std::memcpy(&s[n][c], &hi, sizeof hi);
      if constexpr (Split) std::memcpy(&s[n][c + 1], &lo, sizeof lo);
    }
}

/// The A operand of P.V for keys [16j, 16j + 16) from pack_weights' pairs.
template <int KeyFrags>
__device__ __forceinline__ void packed_weights_as_a(const float (&s)[KeyFrags][4], int j, std::uint32_t (&hi)[4],
                                                    std::uint32_t (&lo)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const float* c = a_register_pair(s, j, r);
    std::memcpy(&hi[r], &c[0], sizeof hi[r]);
    std::memcpy(&lo[r], &c[1], sizeof lo[r]);
  }
}
template <int KeyFrags>
__device__ __forceinline__ void packed_weights_as_a(const float (&s)[KeyFrags][4], int j, std::uint32_t (&rounded)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const float* c = a_register_pair(s, j, r);
    std::memcpy(&rounded[r], &c[0], sizeof rounded[r]);
  }
}

/// Epilogue: one division per row, zeros and lse = -inf for a row that saw
/// no key. Split slices write their normalised partials to the workspace.
template <int OutFrags, class S, class Skv>
__device__ __forceinline__ void store_rows(const float (&acc)[OutFrags][4], const float (&row_max)[2],
                                           const float (&row_sum)[2], const kernel_args<S, Skv>& args,
                                           const tensor_block& b, const fragment_rows& rows, int lane) {
  constexpr float ln2 = 0.6931471805599453f;
  const attention_params<S, void, Skv>& p = args.p;
  const bool quad_leader = lane % 4 == 0;  // one of the four lanes that share a row
  const index_t rows_total = p.batch * p.hq * p.nq;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float sum = row_sum[i];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const index_t row = rows.query[i];
    const index_t head = b.first_head + rows.head[i];
    if (row >= b.vis.nq) continue;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    const float lse = sum > 0.0f ? row_max[i] * ln2 + logf(sum) : neg_inf<float>();
    const index_t row_id = (b.batch * p.hq + head) * p.nq + row;
    if (args.splits > 1) {
      const index_t slot = static_cast<index_t>(blockIdx.y) * rows_total + row_id;
      float* out = args.partial_out + slot * p.dim_v;
#pragma unroll
      for (int d = 0; d < OutFrags; ++d)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const index_t col = d * 8 + fragment::c_col(lane, 2 * i + c);
          if (col < p.dim_v) out[col] = acc[d][2 * i + c] * inv;
        }
      if (quad_leader) args.partial_lse[slot] = lse;
    } else {
      const index_t out_row =
          p.query_rows_at(b.batch, p.out_stride) + row * p.out_stride.seq + head * p.out_stride.head;
#pragma unroll
      for (int d = 0; d < OutFrags; ++d)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const index_t col = d * 8 + fragment::c_col(lane, 2 * i + c);
          if (col < p.dim_v) store_as(p.out, out_row + col * p.out_stride.dim, args.out_kind, acc[d][2 * i + c] * inv);
        }
      if (quad_leader && p.lse) *lse_at(p, b.batch, head, row) = lse;
    }
  }
}

}  // namespace streamattn::detail::gpu
