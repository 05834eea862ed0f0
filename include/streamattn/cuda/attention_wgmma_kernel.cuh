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
// wgmma runs asynchronously, so iteration t issues S_t = Q K_t right after
// its barrier, starts the next loads and rescales O while the tensor cores
// work on it, issues O += P_{t-1} V_{t-1}, and computes and packs S_t's
// softmax while they work on that (FlashAttention-3's intra-warpgroup
// overlap): only copying P_t into the A registers waits for the product (a
// wait ptxas would otherwise hoist above the softmax: wgmma_wait_all_after).
// K and V tiles sit in two buffers each, as core matrices
// (core_matrix_tile.hpp), loaded by cp.async one iteration ahead: iteration
// t loads K_{t+1} and V_t while it computes on K_t and V_{t-1}, behind one
// block barrier per tile.
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

/// SplitWeights: P V with P's high and low halves (the default), or with P
/// rounded to S (attention_options::weights_in_input_type): a template
/// parameter, as wgmmas under a branch would be serialised.
template <class S, int HeadDim, bool SplitWeights>
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
  constexpr int tile_elements = keys * HeadDim;
  static_assert(HeadDim == 64 || HeadDim == 128, "wgmma shapes compiled for N = 64 and 128");
  const float minus_inf = neg_inf<float>();

  // Q, then K and V tiles in two buffers each: buffer t % 2 holds tile t.
  S* const q_tile = reinterpret_cast<S*>(dynamic_shared_memory());
  S* const k_tiles = q_tile + rows * HeadDim;
  S* const v_tiles = k_tiles + 2 * tile_elements;

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
  const auto k_tile = [&](index_t t) { return k_tiles + (t & 1) * tile_elements; };
  const auto v_tile = [&](index_t t) { return v_tiles + (t & 1) * tile_elements; };
  const auto load_k = [&](index_t t) {
    load_core_matrix_tile<S, keys, HeadDim, threads>(k_tile(t), k_src, p.k_stride.dim, t * keys, nk, p.dim,
                                                     args.vector_k);
  };
  const auto load_v = [&](index_t t) {
    load_core_matrix_tile<S, keys, HeadDim, threads>(v_tile(t), v_src, p.v_stride.dim, t * keys, nk, p.dim_v,
                                                     args.vector_v);
  };

  load_core_matrix_tile<S, rows, HeadDim, threads>(q_tile, q_src, p.q_stride.dim, b.row0, b.packed_rows, p.dim,
                                                   args.vector_q);
  if (!tiles.empty()) load_k(tiles.first);
  copy_async_commit();

  const fragment_rows my_rows = rows_of_lane(b, warp, lane);

  // The operands' descriptors, per k16 step: 16 columns of Q and K, 16 keys of V.
  const auto q_desc = [&](int k16) { return k_major_descriptor(q_tile, rows, warpgroup * 64, k16 * 16); };
  const auto k_desc = [&](index_t t, int k16) { return k_major_descriptor(k_tile(t), keys, 0, k16 * 16); };
  // O += P V for tile t, P from p_hi and p_lo.
  std::uint32_t p_hi[key_steps][4], p_lo[key_steps][4];
  float acc[out_frags][4];
  zero_fragments(acc);
  const auto pin_pv = [&] {
    pin_operands(acc);
    pin_operands(p_hi);
    if constexpr (SplitWeights) pin_operands(p_lo);
  };
  const auto issue_pv = [&](index_t t) {
    pin_pv();
#pragma unroll
    for (int j = 0; j < key_steps; ++j) {
      const std::uint64_t v_desc = mn_major_descriptor(v_tile(t), keys, j * 16);
      wgmma_rs<S, 1, HeadDim>(acc, p_hi[j], v_desc, true);
      if constexpr (SplitWeights) wgmma_rs<S, 1, HeadDim>(acc, p_lo[j], v_desc, true);
    }
    wgmma_commit();
    pin_pv();
  };
  // After the wait that retires P V: its registers are ordinary again.
  const auto pv_done = [&] {
    wgmma_wait<0>();
    pin_pv();
  };

  // The scores' registers: each tile's first wgmma overwrites them.
  float s[key_frags][4];
  zero_fragments(s);
  // wgmma.fence, after every ordinary write to the registers the next
  // wgmmas read or write (`pin` names them): the pins keep the compiler
  // from moving such writes past it, as CUTLASS pins its operands before
  // its fence. Only those registers: pinning all at every fence keeps dead
  // values alive, and the kernel spilled.
  const auto fence_after = [&](auto&& pin) {
    pin();
    wgmma_fence();
  };
  const auto pin_s = [&] { pin_operands(s); };
  float row_max[2] = {minus_inf, minus_inf};
  float row_sum[2] = {0.0f, 0.0f};
  // The same after a tile's softmax, which P V must overlap: the wait
  // depends on the row sums, and so on every weight (wgmma_wait_all_after).
  const auto pv_done_after_softmax = [&] {
    wgmma_wait_all_after(row_sum[0] + row_sum[1]);
    pin_pv();
  };

  // Waits until K_t and V_{t-1} have landed (this thread's copies fenced
  // for the wgmmas, everyone's behind the barrier) and every warpgroup is
  // done with K_{t-1} and V_{t-2}, whose buffers start_loads(t) refills.
  const auto tile_landed = [&] {
    copy_async_wait_all();
    fence_shared_for_wgmma();
    __syncthreads();
  };
  // V_t and K_{t+1}: issued behind S_t's wgmmas, so that their address
  // arithmetic runs while the tensor cores work.
  const auto start_loads = [&](index_t t) {
    load_v(t);
    if (t + 1 < tiles.last) load_k(t + 1);
    copy_async_commit();
  };
  const auto issue_s = [&](index_t t) {
    pin_operands(s);
#pragma unroll
    for (int k16 = 0; k16 < HeadDim / 16; ++k16) wgmma_ss<S, 0, keys>(s, q_desc(k16), k_desc(t, k16), k16 > 0);
    wgmma_commit();
    pin_operands(s);
  };
  // S_t to P_t, packed as P V's A operand takes it (pack_weights);
  // rescale_rows(acc, rescale) must precede P_t V_t.
  float rescale[2];
  const auto weights = [&](index_t t) {
    scores_to_log2(s, args, b, my_rows, t * keys, lane);
    softmax_weights(s, args.softmax_factor, row_max, row_sum, rescale);
    pack_weights<S, SplitWeights>(s);  // while P_{t-1} V_{t-1} holds the A registers
  };
  const auto weights_as_operands = [&] {
#pragma unroll
    for (int j = 0; j < key_steps; ++j) {
      if constexpr (SplitWeights)
        packed_weights_as_a(s, j, p_hi[j], p_lo[j]);
      else
        packed_weights_as_a(s, j, p_hi[j]);
    }
  };

  // The wgmmas are issued in straight-line code and a loop whose trip
  // count the whole warpgroup shares: under a branch ptxas serialises them.
  // pin_operands keeps the compiler from moving work on their registers
  // across an issue or a wait.
  if (!tiles.empty()) {
    tile_landed();
    fence_after(pin_s);
    issue_s(tiles.first);
    start_loads(tiles.first);
    wgmma_wait<0>();
    pin_operands(s);
    weights(tiles.first);
    weights_as_operands();
    for (index_t t = tiles.first + 1; t < tiles.last; ++t) {
      tile_landed();
      fence_after(pin_s);
      issue_s(t);
      start_loads(t);
      // O moves to the maxima of tile t - 1's softmax before P_{t-1} V_{t-1}
      // adds to it, while the tensor cores work on S_t (the first time it
      // multiplies zeros).
      rescale_rows(acc, rescale);
      fence_after(pin_pv);  // after O's rescaling and P_{t-1}'s copy
      issue_pv(t - 1);
      wgmma_wait<1>();  // S_t is done; P_{t-1} V_{t-1} may still run
      pin_operands(s);
      weights(t);
      pv_done_after_softmax();  // acc and P_{t-1} are free again
      weights_as_operands();
    }
    tile_landed();  // the last V tile
    rescale_rows(acc, rescale);
    fence_after(pin_pv);
    issue_pv(tiles.last - 1);
    pv_done();
  } else {
    copy_async_wait_all();  // nothing may stay in flight when the block exits
  }

  store_rows(acc, row_max, row_sum, args, b, my_rows, lane);
#endif
}

}  // namespace streamattn::detail::gpu
