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
#include "attention_tile_steps.cuh"
#include "dynamic_shared_memory.cuh"
#include "kernel_args.cuh"
#include "kernel_choice.hpp"
#include "mma.cuh"
#include "mma_fragments.hpp"
#include "tile_load.cuh"

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
  constexpr int key_frags = keys / 8;     // n8 tiles of S per warp
  constexpr int out_frags = HeadDim / 8;  // n8 tiles of O per warp
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
  const tensor_block b = locate_block(args, rows);
  if (b.empty()) return;  // the whole block leaves, before any barrier
  const index_t nk = b.vis.nk;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  // Warp-uniform, so the warp-wide MMAs and shuffles stay whole.
  const bool warp_has_rows = b.row0 + warp * 16 < b.packed_rows;

  // Rows of this item and its heads: batched, packed (query_starts, key_starts)
  // or, for keys, in the pages of a block table.
  const packed_query_rows<const S> q_src{p.query_head(p.q, p.q_stride, b.batch, b.first_head), p.q_stride.seq,
                                         p.q_stride.head, b.heads_here};
  const row_locator<const Skv> k_src = p.key_rows(p.k, p.k_stride, b.batch, b.kv_head);
  const row_locator<const Skv> v_src = p.key_rows(p.v, p.v_stride, b.batch, b.kv_head);
  const row_locator<const float> k_scale_src = p.key_rows(p.k_scale, p.k_scale_stride, b.batch, b.kv_head);
  const row_locator<const float> v_scale_src = p.key_rows(p.v_scale, p.v_scale_stride, b.batch, b.kv_head);

  const tile_span tiles = block_key_tiles(args, b, keys);

  load_tile<S, rows, HeadDim, pitch, threads>(q_tile, q_src, p.q_stride.dim, b.row0, b.packed_rows, p.dim,
                                              args.vector_q);
  if (!tiles.empty()) {
    load_tile<S, keys, HeadDim, pitch, threads>(k_tile, k_src, p.k_stride.dim, tiles.first * keys, nk, p.dim,
                                                args.vector_k);
    if constexpr (quantised) load_row_scales<keys, threads>(k_scales, k_scale_src, tiles.first * keys, nk);
  }
  copy_async_commit();

  const fragment_rows my_rows = rows_of_lane(b, warp, lane);

  float acc[out_frags][4];
  zero_fragments(acc);
  // Running max in log2 units and this thread's share of the running sum.
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
      zero_fragments(s);
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
      scores_to_log2(s, args, b, my_rows, key0, lane);
      online_softmax(s, args.softmax_factor, acc, row_max, row_sum);
    }

    copy_async_wait_all();
    __syncthreads();  // V tile t landed; every warp is done with K tile t
    if (t + 1 < tiles.last) {
      load_tile<S, keys, HeadDim, pitch, threads>(k_tile, k_src, p.k_stride.dim, key0 + keys, nk, p.dim, args.vector_k);
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

      // O += P V, one k16 step (16 keys) at a time: with P's high and low
      // halves, or P rounded (weights_in_input_type).
      const auto add_pv = [&](auto split_weights) {
#pragma unroll
        for (int j = 0; j < keys / 16; ++j) {
          std::uint32_t a_hi[4], a_lo[4];
          if constexpr (decltype(split_weights)::value)
            weights_as_a<Spv>(s, j, a_hi, a_lo);
          else
            weights_as_a<Spv>(s, j, a_hi);
          const Spv* v_rows = v_tile + j * 16 * pitch + fragment::ldmatrix_x4_trans_row_offset(lane, pitch);
#pragma unroll
          for (int d16 = 0; d16 < HeadDim / 16; ++d16) {
            std::uint32_t bv[4];
            ldmatrix_x4_trans(bv, v_rows + d16 * 16);
            mma_16x8x16<Spv>(acc[2 * d16], a_hi, bv[0], bv[1]);
            if constexpr (decltype(split_weights)::value) mma_16x8x16<Spv>(acc[2 * d16], a_lo, bv[0], bv[1]);
            mma_16x8x16<Spv>(acc[2 * d16 + 1], a_hi, bv[2], bv[3]);
            if constexpr (decltype(split_weights)::value) mma_16x8x16<Spv>(acc[2 * d16 + 1], a_lo, bv[2], bv[3]);
          }
        }
      };
      if (p.weights_in_input_type)
        add_pv(std::false_type{});
      else
        add_pv(std::true_type{});
    }
  }
  copy_async_wait_all();  // nothing may stay in flight when the block exits

  store_rows(acc, row_max, row_sum, args, b, my_rows, lane);
#endif
}

}  // namespace streamattn::detail::gpu
