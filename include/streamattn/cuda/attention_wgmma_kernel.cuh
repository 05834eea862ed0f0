// Softmax attention forward on Hopper's warpgroup MMA (wgmma, sm_90a) for
// fp16 and bf16 inputs at head dims 64 and 128 (kernel_choice.hpp).
//
// The algorithm is attention_kernel.cuh's, with the products moved from
// mma.sync to wgmma: one thread block per (batch, head, 128-query tile),
// two warpgroups of four warps, each warpgroup owning 64 query rows and
// each warp 16 of them, in the same accumulator layout as the mma.sync
// kernel, so the masking, online softmax and epilogue are the shared steps
// of attention_tile_steps.cuh. Per key tile of 64 keys:
//   S = Q K^T   one wgmma m64n64k16 per 16 head-dim columns, Q and K read
//               straight from shared memory by the tensor cores (no
//               fragment loads through registers, which the mma.sync kernel
//               spends most of its issue slots on)
//   softmax     as the mma.sync kernel
//   O += P V    one wgmma m64n{D}k16 per 16 keys and P half (hi, lo: see
//               split_pair in mma.cuh), P from registers, V from shared
//               memory read N-major
// Tiles sit in shared memory as core matrices (core_matrix_tile.hpp); K and
// V stream through with cp.async as in the mma.sync kernel, the V copy of
// tile t overlapping Q K^T and softmax of tile t and the K copy of tile t + 1
// overlapping P V of tile t.
//
// Not yet here: TMA loads, warp specialisation and the two warpgroups
// taking turns at the tensor cores (FlashAttention-3's ping-pong); the
// int8 K/V cache and GQA head packing, which stay on the mma.sync kernel.
#pragma once

#include <cstdint>

#include "attention_tile_steps.cuh"
#include "core_matrix_tile.hpp"
#include "dynamic_shared_memory.cuh"
#include "kernel_args.cuh"
#include "kernel_choice.hpp"
#include "mma.cuh"
#include "tile_load.cuh"
#include "wgmma.cuh"

namespace streamattn::detail::gpu {

template <class S, int HeadDim>
__global__ void __launch_bounds__(wgmma_warps * 32, 1) attention_wgmma_kernel(const kernel_args<S, S> args) {
#if !defined(STREAMATTN_CUDA_SM90A) && !defined(STREAMATTN_CUDA_EMULATOR)
  __trap();  // planned only where the sm_90a build runs (kernel_choice.hpp)
#else
  constexpr int threads = wgmma_warps * 32;
  constexpr int rows = wgmma_query_rows;
  constexpr int keys = wgmma_key_rows;
  constexpr int key_frags = keys / 8;     // n8 tiles of S per warp
  constexpr int out_frags = HeadDim / 8;  // n8 tiles of O per warp
  constexpr int key_steps = keys / 16;    // k16 steps of P V
  static_assert(HeadDim == 64 || HeadDim == 128, "wgmma shapes compiled for N = 64 and 128");
  const float minus_inf = neg_inf<float>();

  S* const q_tile = reinterpret_cast<S*>(dynamic_shared_memory());
  S* const k_tile = q_tile + rows * HeadDim;
  S* const v_tile = k_tile + keys * HeadDim;

  const attention_params<S, void, S>& p = args.p;
  const tensor_block b = locate_block(args, rows);
  if (b.empty()) return;  // the whole block leaves, before any barrier
  const index_t nk = b.vis.nk;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warpgroup = warp / 4;

  const packed_query_rows<const S> q_src{p.query_head(p.q, p.q_stride, b.batch, b.first_head), p.q_stride.seq,
                                         p.q_stride.head, b.heads_here};
  const row_locator<const S> k_src = p.key_rows(p.k, p.k_stride, b.batch, b.kv_head);
  const row_locator<const S> v_src = p.key_rows(p.v, p.v_stride, b.batch, b.kv_head);
  const tile_span tiles = block_key_tiles(args, b, keys);

  load_core_matrix_tile<S, rows, HeadDim, threads>(q_tile, q_src, p.q_stride.dim, b.row0, b.packed_rows, p.dim,
                                                   args.vector_q);
  if (!tiles.empty())
    load_core_matrix_tile<S, keys, HeadDim, threads>(k_tile, k_src, p.k_stride.dim, tiles.first * keys, nk, p.dim,
                                                     args.vector_k);
  copy_async_commit();

  const fragment_rows my_rows = rows_of_lane(b, warp, lane);

  // The operands' descriptors, per k16 step: Q's and K's step along K is
  // 16 columns, two core-matrix columns; V's is 16 keys, two core matrices.
  const auto q_desc = [&](int k16) {
    return matrix_descriptor(q_tile + core_matrix_offset(rows, warpgroup * 64, k16 * 16),
                             core_matrix_column_step_bytes(rows), core_matrix_bytes);
  };
  const auto k_desc = [&](int k16) {
    return matrix_descriptor(k_tile + core_matrix_offset(keys, 0, k16 * 16), core_matrix_column_step_bytes(keys),
                             core_matrix_bytes);
  };
  const auto v_desc = [&](int j) {
    return matrix_descriptor(v_tile + core_matrix_offset(keys, j * 16, 0), core_matrix_bytes,
                             core_matrix_column_step_bytes(keys));
  };

  float acc[out_frags][4];
  zero_fragments(acc);
  // The scores' registers: each tile's first wgmma overwrites them.
  float s[key_frags][4];
  zero_fragments(s);
  float row_max[2] = {minus_inf, minus_inf};
  float row_sum[2] = {0.0f, 0.0f};

  for (index_t t = tiles.first; t < tiles.last; ++t) {
    const index_t key0 = t * keys;
    copy_async_wait_all();
    fence_shared_for_wgmma();  // this thread's copies, before any wgmma reads them
    __syncthreads();           // K tile t (and Q) landed; every warpgroup is done with V tile t - 1
    load_core_matrix_tile<S, keys, HeadDim, threads>(v_tile, v_src, p.v_stride.dim, key0, nk, p.dim_v, args.vector_v);
    copy_async_commit();

    // S = Q K^T for this warpgroup's 64 rows x 64 keys.
    wgmma_fence();  // s was last written by the softmax
#pragma unroll
    for (int k16 = 0; k16 < HeadDim / 16; ++k16) wgmma_ss<S, 0, keys>(s, q_desc(k16), k_desc(k16), k16 > 0);
    wgmma_commit();
    wgmma_wait<0>();

    scores_to_log2(s, args, b, my_rows, key0, lane);
    online_softmax(s, acc, row_max, row_sum);
    // P as the A operand of every k16 step, before the fence that orders
    // these register writes before the wgmmas reading them.
    std::uint32_t p_hi[key_steps][4], p_lo[key_steps][4];
#pragma unroll
    for (int j = 0; j < key_steps; ++j) weights_as_a<S>(s, j, p_hi[j], p_lo[j]);

    copy_async_wait_all();
    fence_shared_for_wgmma();
    __syncthreads();  // V tile t landed; every warpgroup is done with K tile t (it waited for its wgmmas)
    if (t + 1 < tiles.last)
      load_core_matrix_tile<S, keys, HeadDim, threads>(k_tile, k_src, p.k_stride.dim, key0 + keys, nk, p.dim,
                                                       args.vector_k);
    copy_async_commit();

    // O += P V: acc was rescaled and P written by ordinary instructions.
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < key_steps; ++j) {
      wgmma_rs<S, 1, HeadDim>(acc, p_hi[j], v_desc(j), true);
      wgmma_rs<S, 1, HeadDim>(acc, p_lo[j], v_desc(j), true);
    }
    wgmma_commit();
    wgmma_wait<0>();  // before the barrier that lets V tile t + 1 overwrite this one
  }
  copy_async_wait_all();  // nothing may stay in flight when the block exits

  store_rows(acc, row_max, row_sum, args, b, my_rows, lane);
#endif
}

}  // namespace streamattn::detail::gpu
