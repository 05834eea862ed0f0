// Softmax attention forward on tensor cores, FlashAttention-2 style, for fp16
// and bf16 inputs at a compiled head dim (kernel_choice.hpp).
//
// One thread block per (batch, head, 64-query tile); 4 warps, each owning 16
// query rows. Under grouped-query attention with few queries (decoding) a
// block's rows may hold the queries of all the heads that share a K/V head
// (head_packing.hpp), which then streams through once for all of them.
// Q stays in shared memory; K and V tiles stream through shared memory with
// cp.async, the V copy of tile t overlapping the Q.K^T of tile t and the K
// copy of tile t+1 overlapping the P.V of tile t. Per key tile:
//   S = Q K^T            mma.sync m16n8k16, fp16/bf16 in, float accumulate
//   S = S * scale*log2e  one multiply (or the score terms, then * log2e)
//   online softmax       running max / sum per row in registers, exp2
//   O += P V             P straight from the S registers (the accumulator
//                        layout of two n8 tiles is the A layout of one k16
//                        step), V via ldmatrix.trans, P split hi + lo
// and normalisation by the row sum only at the end. Key tiles outside the
// causal/window band are never visited; tiles fully inside it skip the
// per-element checks (tile_range.hpp).
//
// A quantised (int8) K/V cache is read into the same 16-bit tiles, each code
// as the element equal to it; each key's k scale then multiplies its column
// of S, and its v scale its column of P after the row sums, so the products
// stay on tensor cores and the scales are applied in float. P.V then runs in
// bf16 whatever the queries: P times a v scale (absmax / 127) can be far
// below fp16's normal range, where fp16 would keep few of its bits.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../detail/math.hpp"
#include "../detail/score_terms.hpp"
#include "dynamic_shared_memory.cuh"
#include "head_packing.hpp"
#include "kernel_args.cuh"
#include "kernel_choice.hpp"
#include "mma.cuh"
#include "mma_fragments.hpp"
#include "tile_load.cuh"
#include "tile_range.hpp"

namespace streamattn::detail::gpu {

// Resident blocks per multiprocessor, and so registers per thread: see
// mma_min_blocks_per_sm (kernel_choice.hpp).
template <class S, class Skv, int HeadDim>
__global__ void __launch_bounds__(mma_warps * 32, mma_min_blocks_per_sm(HeadDim))
    attention_mma_kernel(const kernel_args<S, Skv> args) {
#ifdef STREAMATTN_CUDA_NO_SM80
  __trap();
#else
  constexpr int threads = mma_warps * 32;
  constexpr int rows = mma_query_rows;
  constexpr int keys = mma_key_rows(HeadDim);
  constexpr int pitch = mma_smem_pitch(HeadDim);
  constexpr int key_frags = keys / 8;      // n8 tiles of S per warp
  constexpr int out_frags = HeadDim / 8;   // n8 tiles of O per warp
  constexpr float log2e = 1.4426950408889634f;
  constexpr float ln2 = 0.6931471805599453f;
  constexpr bool quantised = is_quantised_v<Skv>;
  static_assert(HeadDim % 16 == 0 && keys % 16 == 0, "whole k16 steps");
  const float minus_inf = neg_inf<float>();

  // The 16-bit type of the P.V product: S, or bf16 over an int8 cache.
  using Spv = std::conditional_t<quantised, __nv_bfloat16, S>;

  S* const q_tile = reinterpret_cast<S*>(dynamic_shared_memory());
  S* const k_tile = q_tile + rows * pitch;
  Spv* const v_tile = reinterpret_cast<Spv*>(k_tile + keys * pitch);
  // The k and v scales of the K and V tiles' keys (int8 K/V only).
  float* const k_scales = reinterpret_cast<float*>(v_tile + keys * pitch);
  float* const v_scales = k_scales + keys;

  const attention_params<S, void, Skv>& p = args.p;
  const index_t block = blockIdx.x;
  // Under a causal mask the last query tiles see the most keys; starting
  // them first shortens the grid's tail.
  const index_t query_block = args.query_tiles - 1 - block % args.query_tiles;
  // The block's heads: `heads_here` consecutive query heads from first_head
  // (1, or a GQA group packed into the rows: head_packing.hpp).
  const index_t heads_here = args.packed_heads;
  const index_t head_blocks = p.hq / heads_here;
  const index_t first_head = (block / args.query_tiles) % head_blocks * heads_here;
  const index_t batch = block / args.query_tiles / head_blocks;
  const index_t kv_head = p.kv_head_of(first_head);
  // This batch item's queries and keys (packed lengths, key_lengths) and the
  // causal/window ranges aligned to them; loads stop at `nq` and `nk`, so rows
  // past them are never read.
  const visibility vis = p.visible_in(batch);
  const index_t nq = vis.nq;
  const index_t nk = vis.nk;
  // Tile rows count packed rows, `heads_here` per query.
  const index_t packed_rows = nq * heads_here;
  const index_t row0 = query_block * rows;
  // The grid covers the longest packed item: a block past a shorter one's
  // queries has nothing to do (the whole block leaves, before any barrier).
  if (row0 >= packed_rows) return;
  // The queries the block's rows hold, whose key bands decide the tiles.
  const index_t query0 = unpack_row(row0, heads_here, 0).query;
  const index_t queries =
      unpack_row((row0 + rows < packed_rows ? row0 + rows : packed_rows) - 1, heads_here, 0).query - query0 + 1;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const bool quad_leader = lane % 4 == 0;  // one of the four lanes that share a row
  // Warp-uniform, so the warp-wide MMAs and shuffles stay whole.
  const bool warp_has_rows = row0 + warp * 16 < packed_rows;

  // Rows of this item and its heads: batched, packed (query_starts, key_starts)
  // or, for keys, in the pages of a block table.
  const packed_query_rows<const S> q_src{p.query_head(p.q, p.q_stride, batch, first_head), p.q_stride.seq,
                                         p.q_stride.head, heads_here};
  const row_locator<const Skv> k_src = p.key_rows(p.k, p.k_stride, batch, kv_head);
  const row_locator<const Skv> v_src = p.key_rows(p.v, p.v_stride, batch, kv_head);
  const row_locator<const float> k_scale_src = p.key_rows(p.k_scale, p.k_scale_stride, batch, kv_head);
  const row_locator<const float> v_scale_src = p.key_rows(p.v_scale, p.v_scale_stride, batch, kv_head);

  const bool split = args.splits > 1;
  const index_t split_first = split ? static_cast<index_t>(blockIdx.y) * args.tiles_per_split : 0;
  const index_t split_last = split ? split_first + args.tiles_per_split : ceil_div(p.nk, keys);
  const tile_span tiles = key_tiles_of(vis, query0, queries, keys, split_first, split_last);

  load_tile<S, rows, HeadDim, pitch, threads>(q_tile, q_src, p.q_stride.dim, row0, packed_rows, p.dim, args.vector_q);
  if (!tiles.empty()) {
    load_tile<S, keys, HeadDim, pitch, threads>(k_tile, k_src, p.k_stride.dim, tiles.first * keys, nk, p.dim,
                                                args.vector_k);
    if constexpr (quantised) load_row_scales<keys, threads>(k_scales, k_scale_src, tiles.first * keys, nk);
  }
  copy_async_commit();

  // This thread's two rows: fragment rows g and g + 8 of its warp's 16, as
  // a query and a head (first_head + my_head; an int, since registers are
  // the scarce resource here). Rows past the item's queries see no key, so
  // they never read bias or mask out of range.
  index_t my_query[2];
  int my_head[2];
  key_range my_keys[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const packed_row r = unpack_row(row0 + warp * 16 + fragment::c_row(lane, 2 * i), heads_here, 0);
    my_query[i] = r.query;
    my_head[i] = static_cast<int>(r.head);
    my_keys[i] = r.query < nq ? vis.keys_of(r.query) : key_range{0, 0};
  }

  float acc[out_frags][4];
#pragma unroll
  for (int d = 0; d < out_frags; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
  // Running max in log2 units and this thread's share of the running sum
  // (its 2 x key_frags columns; the quad's shares are added at the end,
  // which is valid because all four rescale by the same factor).
  float row_max[2] = {minus_inf, minus_inf};
  float row_sum[2] = {0.0f, 0.0f};

  for (index_t t = tiles.first; t < tiles.last; ++t) {
    const index_t key0 = t * keys;
    copy_async_wait_all();
    __syncthreads();  // K tile t (and Q) landed; every warp is done with V tile t - 1
    load_tile<Spv, keys, HeadDim, pitch, threads>(v_tile, v_src, p.v_stride.dim, key0, nk, p.dim_v, args.vector_v);
    // Past the barrier above no warp reads tile t - 1's scales; these are
    // read after the next one.
    if constexpr (quantised) load_row_scales<keys, threads>(v_scales, v_scale_src, key0, nk);
    copy_async_commit();

    // S = Q K^T for this warp's 16 rows x `keys` keys. A warp whose rows
    // are all past the block's (a decode packs a few rows into warp 0)
    // skips the arithmetic, but not the loads and barriers.
    float s[key_frags][4];
    if (warp_has_rows) {
#pragma unroll
      for (int n = 0; n < key_frags; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
      for (int k16 = 0; k16 < HeadDim / 16; ++k16) {
        const S* qa = q_tile + warp * 16 * pitch + k16 * 16;
        const std::uint32_t a[4] = {
            load_pair(qa + fragment::a_offset(lane, 0, pitch)), load_pair(qa + fragment::a_offset(lane, 1, pitch)),
            load_pair(qa + fragment::a_offset(lane, 2, pitch)), load_pair(qa + fragment::a_offset(lane, 3, pitch))};
#pragma unroll
        for (int n = 0; n < key_frags; ++n) {
          // B = K^T: column j of B is key j, one row of the K tile.
          const S* kb = k_tile + n * 8 * pitch + k16 * 16;
          mma_16x8x16<S>(s[n], a, load_pair(kb + fragment::bt_offset(lane, 0, pitch)),
                         load_pair(kb + fragment::bt_offset(lane, 1, pitch)));
        }
      }
      // An int8 K tile holds the codes: key j's scores still need its scale.
      if constexpr (quantised) {
#pragma unroll
        for (int n = 0; n < key_frags; ++n)
#pragma unroll
          for (int c = 0; c < 4; ++c) s[n][c] *= k_scales[n * 8 + fragment::c_col(lane, c)];
      }

      // Scores in log2 units; invisible keys (outside the band, past Nk, rows
      // past Nq) become -inf so they weigh exactly 0.
      if (!tile_needs_mask(vis, query0, queries, key0, keys, args.has_terms)) {
#pragma unroll
        for (int n = 0; n < key_frags; ++n)
#pragma unroll
          for (int c = 0; c < 4; ++c) s[n][c] *= args.scale_log2;
      } else {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const tile_columns visible = columns_in_tile(my_keys[i], key0, keys);
          if (args.has_terms) {
            // Built per tile rather than kept live across the loop: registers
            // are the scarce resource here, and this is a handful of integer ops.
            const score_row<float> terms = make_score_row<float>(p, batch, first_head + my_head[i], my_query[i]);
#pragma unroll
            for (int n = 0; n < key_frags; ++n)
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                const int column = n * 8 + fragment::c_col(lane, 2 * i + c);
                float& x = s[n][2 * i + c];
                x = visible.contains(column) ? terms.apply(x * p.scale, key0 + column) * log2e : minus_inf;
              }
          } else {
#pragma unroll
            for (int n = 0; n < key_frags; ++n)
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                float& x = s[n][2 * i + c];
                x = visible.contains(n * 8 + fragment::c_col(lane, 2 * i + c)) ? x * args.scale_log2 : minus_inf;
              }
          }
        }
      }

      // Online softmax: raise the running max, rescale what was accumulated
      // under the old one, turn scores into weights.
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float tile_max = minus_inf;
#pragma unroll
        for (int n = 0; n < key_frags; ++n) tile_max = fmaxf(tile_max, fmaxf(s[n][2 * i], s[n][2 * i + 1]));
        // The four lanes of a quad hold the same row.
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        const float new_max = fmaxf(row_max[i], tile_max);
        // -inf guard: while a row has seen only masked keys its max stays
        // -inf; subtracting 0 instead keeps exp2(-inf - base) at 0 rather than
        // the NaN of (-inf) - (-inf).
        const float base = new_max == minus_inf ? 0.0f : new_max;
        const float rescale = exp2f(row_max[i] - base);
        row_max[i] = new_max;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < key_frags; ++n) {
          s[n][2 * i] = exp2f(s[n][2 * i] - base);
          s[n][2 * i + 1] = exp2f(s[n][2 * i + 1] - base);
          sum += s[n][2 * i] + s[n][2 * i + 1];
        }
        row_sum[i] = row_sum[i] * rescale + sum;
#pragma unroll
        for (int d = 0; d < out_frags; ++d) {
          acc[d][2 * i] *= rescale;
          acc[d][2 * i + 1] *= rescale;
        }
      }
    }

    copy_async_wait_all();
    __syncthreads();  // V tile t landed; every warp is done with K tile t
    if (t + 1 < tiles.last) {
      load_tile<S, keys, HeadDim, pitch, threads>(k_tile, k_src, p.k_stride.dim, key0 + keys, nk, p.dim,
                                                  args.vector_k);
      if constexpr (quantised) load_row_scales<keys, threads>(k_scales, k_scale_src, key0 + keys, nk);
    }
    copy_async_commit();

    if (warp_has_rows) {
      // An int8 V tile holds the codes: key j's weight (already in the row
      // sums) takes its v scale before it multiplies the codes.
      if constexpr (quantised) {
#pragma unroll
        for (int n = 0; n < key_frags; ++n)
#pragma unroll
          for (int c = 0; c < 4; ++c) s[n][c] *= v_scales[n * 8 + fragment::c_col(lane, c)];
      }

      // O += P V, one k16 step (16 keys) at a time. The accumulator fragments
      // of S tiles 2j and 2j + 1 are, element for element, the A fragment of
      // keys [16j, 16j + 16).
#pragma unroll
      for (int j = 0; j < keys / 16; ++j) {
        std::uint32_t a_hi[4], a_lo[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float* c = s[2 * j + fragment::a_from_c_tile(r)] + fragment::a_from_c_first_register(r);
          split_pair<Spv>(c[0], c[1], a_hi[r], a_lo[r]);
        }
        const Spv* v_rows = v_tile + j * 16 * pitch + fragment::ldmatrix_x4_trans_row_offset(lane, pitch);
#pragma unroll
        for (int d16 = 0; d16 < HeadDim / 16; ++d16) {
          std::uint32_t b[4];
          ldmatrix_x4_trans(b, v_rows + d16 * 16);
          mma_16x8x16<Spv>(acc[2 * d16], a_hi, b[0], b[1]);
          mma_16x8x16<Spv>(acc[2 * d16], a_lo, b[0], b[1]);
          mma_16x8x16<Spv>(acc[2 * d16 + 1], a_hi, b[2], b[3]);
          mma_16x8x16<Spv>(acc[2 * d16 + 1], a_lo, b[2], b[3]);
        }
      }
    }
  }
  copy_async_wait_all();  // nothing may stay in flight when the block exits

  // Epilogue: one division per row, zeros and lse = -inf for a row that saw
  // no key. Split slices write their normalised partials to the workspace.
  const index_t rows_total = p.batch * p.hq * p.nq;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float sum = row_sum[i];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const index_t row = my_query[i];
    const index_t head = first_head + my_head[i];
    if (row >= nq) continue;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    const float lse = sum > 0.0f ? row_max[i] * ln2 + logf(sum) : minus_inf;
    const index_t row_id = (batch * p.hq + head) * p.nq + row;
    if (split) {
      float* out = args.partial_out + (static_cast<index_t>(blockIdx.y) * rows_total + row_id) * p.dim_v;
#pragma unroll
      for (int d = 0; d < out_frags; ++d)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const index_t col = d * 8 + fragment::c_col(lane, 2 * i + c);
          if (col < p.dim_v) out[col] = acc[d][2 * i + c] * inv;
        }
      if (quad_leader) args.partial_lse[static_cast<index_t>(blockIdx.y) * rows_total + row_id] = lse;
    } else {
      const index_t out_row = p.query_rows_at(batch, p.out_stride) + row * p.out_stride.seq + head * p.out_stride.head;
#pragma unroll
      for (int d = 0; d < out_frags; ++d)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const index_t col = d * 8 + fragment::c_col(lane, 2 * i + c);
          if (col < p.dim_v) store_as(p.out, out_row + col * p.out_stride.dim, args.out_kind, acc[d][2 * i + c] * inv);
        }
      if (quad_leader && p.lse) *lse_at(p, batch, head, row) = lse;
    }
  }
#endif
}

}  // namespace streamattn::detail::gpu
