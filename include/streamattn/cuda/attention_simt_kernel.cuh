// Softmax attention forward with plain FMAs in the accumulation type: the
// float32 and float64 path, and the fallback for any head dim the tensor-core
// kernel is not compiled for.
//
// One thread block per (batch, head, 16-query tile, output-column chunk);
// 4 warps of 4 query rows. Per 32-key tile, lane j scores key j against the
// warp's 4 rows while Q and K stream through shared memory 32 head-dim
// columns at a time (so any D fits), the online softmax runs on warp
// shuffles, and each lane accumulates its 1/32 of the block's output columns
// from the weights and a shared V tile. Output columns beyond one chunk go to
// further blocks (grid.z), which recompute the scores: cheap next to D > 128
// worth of P.V, and it keeps the accumulator in registers. With an int8 K/V
// cache the tiles hold the codes: lane j scales key j's scores by its k
// scale and its weights (after the row sums) by its v scale.
#pragma once

#include "../detail/math.hpp"
#include "../detail/score_terms.hpp"
#include "kernel_args.cuh"
#include "kernel_choice.hpp"
#include "tile_range.hpp"

namespace streamattn::detail::gpu {

template <class S, class Skv>
__global__ void __launch_bounds__(simt_warps * 32) attention_simt_kernel(const kernel_args<S, Skv> args) {
  using Acc = device_accum_t<S>;
  constexpr int threads = simt_warps * 32;
  constexpr int rows = simt_query_rows;
  constexpr int rows_per_warp = rows / simt_warps;
  constexpr int keys = simt_key_rows;
  constexpr int chunk = simt_dim_chunk;
  constexpr int out_cols = simt_out_cols(sizeof(Acc) == 8);
  constexpr int cols_per_lane = out_cols / 32;
  static_assert(keys == 32, "one key per lane");
  const Acc log2e = static_cast<Acc>(1.44269504088896340735992468100189214L);
  const Acc ln2 = static_cast<Acc>(0.693147180559945309417232121458176568L);
  const Acc minus_inf = neg_inf<Acc>();

  __shared__ Acc q_chunk[rows][chunk];
  __shared__ Acc k_chunk[keys][chunk + 1];  // +1: lane j reads row j without bank conflicts
  __shared__ Acc v_tile[keys][out_cols];
  __shared__ Acc weights[rows][keys];

  const attention_params<S, void, Skv>& p = args.p;
  const index_t block = blockIdx.x;
  const index_t query_block = args.query_tiles - 1 - block % args.query_tiles;  // heavy causal tiles first
  const index_t head = (block / args.query_tiles) % p.hq;
  const index_t batch = block / args.query_tiles / p.hq;
  const index_t kv_head = p.kv_head_of(head);
  // This batch item's queries and keys and the causal/window ranges aligned
  // to them (see attention_kernel.cuh); rows past `nq` and `nk` are never read.
  const visibility vis = p.visible_in(batch);
  const index_t nq = vis.nq;
  const index_t nk = vis.nk;
  const index_t row0 = query_block * rows;
  if (row0 >= nq) return;  // past a shorter packed item's queries (see attention_kernel.cuh)
  const index_t col0 = static_cast<index_t>(blockIdx.z) * out_cols;

  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32;
  const int lane = tid % 32;

  const row_locator<const S> q_src = p.query_rows(p.q, p.q_stride, batch, head);
  const row_locator<const Skv> k_src = p.key_rows(p.k, p.k_stride, batch, kv_head);
  const row_locator<const Skv> v_src = p.key_rows(p.v, p.v_stride, batch, kv_head);

  const bool split = args.splits > 1;
  const index_t split_first = split ? static_cast<index_t>(blockIdx.y) * args.tiles_per_split : 0;
  const index_t split_last = split ? split_first + args.tiles_per_split : ceil_div(p.nk, keys);
  const tile_span tiles = key_tiles_of(vis, row0, rows, keys, split_first, split_last);

  index_t my_row[rows_per_warp];
  key_range my_keys[rows_per_warp];
  Acc row_max[rows_per_warp];
  Acc row_sum[rows_per_warp];  // this lane's share; the warp's shares are added at the end
  Acc acc[rows_per_warp][cols_per_lane];
#pragma unroll
  for (int r = 0; r < rows_per_warp; ++r) {
    my_row[r] = row0 + warp * rows_per_warp + r;
    my_keys[r] = my_row[r] < nq ? vis.keys_of(my_row[r]) : key_range{0, 0};
    row_max[r] = minus_inf;
    row_sum[r] = Acc(0);
#pragma unroll
    for (int c = 0; c < cols_per_lane; ++c) acc[r][c] = Acc(0);
  }

  for (index_t t = tiles.first; t < tiles.last; ++t) {
    const index_t key0 = t * keys;
    const index_t key = key0 + lane;

    // Scores of key `key` against the warp's rows, D in chunks.
    Acc dot[rows_per_warp];
#pragma unroll
    for (int r = 0; r < rows_per_warp; ++r) dot[r] = Acc(0);
    for (index_t d0 = 0; d0 < p.dim; d0 += chunk) {
      __syncthreads();  // every warp is done with the previous chunk
      for (int i = tid; i < rows * chunk; i += threads) {
        const int r = i / chunk, c = i % chunk;
        const index_t row = row0 + r, d = d0 + c;
        q_chunk[r][c] = (row < nq && d < p.dim) ? load_as<Acc>(q_src(row) + d * p.q_stride.dim) : Acc(0);
      }
      for (int i = tid; i < keys * chunk; i += threads) {
        const int j = i / chunk, c = i % chunk;
        const index_t kr = key0 + j, d = d0 + c;
        k_chunk[j][c] = (kr < nk && d < p.dim) ? load_as<Acc>(k_src(kr) + d * p.k_stride.dim) : Acc(0);
      }
      __syncthreads();
#pragma unroll 8
      for (int c = 0; c < chunk; ++c) {
        const Acc kv = k_chunk[lane][c];
#pragma unroll
        for (int r = 0; r < rows_per_warp; ++r) dot[r] += q_chunk[warp * rows_per_warp + r][c] * kv;
      }
    }

    // An int8 tile holds codes: this lane's key takes its scales, k on its
    // scores and v on its weights.
    Acc v_scale = Acc(1);
    if constexpr (is_quantised_v<Skv>) {
      const bool real = key < nk;
      const Acc k_scale = real ? static_cast<Acc>(*p.key_row(p.k_scale, p.k_scale_stride, batch, kv_head, key)) : Acc(0);
      v_scale = real ? static_cast<Acc>(*p.key_row(p.v_scale, p.v_scale_stride, batch, kv_head, key)) : Acc(0);
#pragma unroll
      for (int r = 0; r < rows_per_warp; ++r) dot[r] *= k_scale;
    }

    // Online softmax per row across the warp (one key per lane). The warp's
    // lanes may run apart: no lane may overwrite its weight while another
    // still reads the previous tile's (there is no block barrier in between
    // when D = 0).
    __syncwarp();
#pragma unroll
    for (int r = 0; r < rows_per_warp; ++r) {
      Acc x = minus_inf;
      if (columns_in_tile(my_keys[r], key0, keys).contains(lane)) {
        if (args.has_terms) {
          // Built per tile, not kept live across the loop (register pressure).
          const score_row<Acc> terms = make_score_row<Acc>(p, batch, head, my_row[r]);
          x = terms.apply(dot[r] * static_cast<Acc>(p.scale), key) * log2e;
        } else {
          x = dot[r] * args.scale_log2;
        }
      }
      Acc tile_max = x;
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2)
        tile_max = fmax(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
      const Acc new_max = fmax(row_max[r], tile_max);
      const Acc base = new_max == minus_inf ? Acc(0) : new_max;  // -inf guard, see attention_kernel.cuh
      const Acc rescale = exp2_(row_max[r] - base);
      row_max[r] = new_max;
      const Acc w = exp2_(x - base);
      row_sum[r] = row_sum[r] * rescale + w;
#pragma unroll
      for (int c = 0; c < cols_per_lane; ++c) acc[r][c] *= rescale;
      weights[warp * rows_per_warp + r][lane] = w * v_scale;
    }

    // P.V for this block's output columns.
    __syncthreads();  // every warp is done with the previous V tile; weights written
    for (int i = tid; i < keys * out_cols; i += threads) {
      const int j = i / out_cols, c = i % out_cols;
      const index_t kr = key0 + j, col = col0 + c;
      v_tile[j][c] = (kr < nk && col < p.dim_v) ? load_as<Acc>(v_src(kr) + col * p.v_stride.dim) : Acc(0);
    }
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < keys; ++j) {
      Acc v[cols_per_lane];
#pragma unroll
      for (int c = 0; c < cols_per_lane; ++c) v[c] = v_tile[j][lane + 32 * c];
#pragma unroll
      for (int r = 0; r < rows_per_warp; ++r) {
        const Acc w = weights[warp * rows_per_warp + r][j];
#pragma unroll
        for (int c = 0; c < cols_per_lane; ++c) acc[r][c] += w * v[c];
      }
    }
  }

  const index_t rows_total = p.batch * p.hq * p.nq;
  const bool writes_lse = blockIdx.z == 0 && lane == 0;
#pragma unroll
  for (int r = 0; r < rows_per_warp; ++r) {
    Acc sum = row_sum[r];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    const index_t row = my_row[r];
    if (row >= nq) continue;
    const Acc inv = sum > Acc(0) ? Acc(1) / sum : Acc(0);
    const Acc lse = sum > Acc(0) ? row_max[r] * ln2 + log_(sum) : minus_inf;
    const index_t row_id = (batch * p.hq + head) * p.nq + row;
    if (split) {
      Acc* out = args.partial_out + (static_cast<index_t>(blockIdx.y) * rows_total + row_id) * p.dim_v;
#pragma unroll
      for (int c = 0; c < cols_per_lane; ++c) {
        const index_t col = col0 + lane + 32 * c;
        if (col < p.dim_v) out[col] = acc[r][c] * inv;
      }
      if (writes_lse) args.partial_lse[static_cast<index_t>(blockIdx.y) * rows_total + row_id] = lse;
    } else {
      const index_t out_row = p.query_rows_at(batch, p.out_stride) + row * p.out_stride.seq + head * p.out_stride.head;
#pragma unroll
      for (int c = 0; c < cols_per_lane; ++c) {
        const index_t col = col0 + lane + 32 * c;
        if (col < p.dim_v) store_as(p.out, out_row + col * p.out_stride.dim, args.out_kind, acc[r][c] * inv);
      }
      if (writes_lse && p.lse) *lse_at(p, batch, head, row) = static_cast<float>(lse);
    }
  }
}

}  // namespace streamattn::detail::gpu
