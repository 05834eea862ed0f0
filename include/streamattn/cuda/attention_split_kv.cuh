// The split-KV combine kernel: merges the slices' normalised partial outputs
// and lses (split_workspace_layout) into `out` and `lse` with lse_combine,
// the n-way form of the CPU's merge_partials.
#pragma once

#include "../detail/attention_params.hpp"
#include "../detail/score_terms.hpp"
#include "kernel_args.cuh"
#include "kernel_choice.hpp"
#include "split_combine.hpp"

namespace streamattn::detail::gpu {

/// One warp per (batch, head, query) row; lanes stride over the columns.
template <class S, class Skv>
__global__ void __launch_bounds__(combine_warps * 32) combine_splits_kernel(const kernel_args<S, Skv> args) {
  using Acc = device_accum_t<S>;
  const attention_params<S, void, Skv>& p = args.p;
  const index_t rows_total = p.batch * p.hq * p.nq;
  const index_t row_id = static_cast<index_t>(blockIdx.x) * combine_warps + static_cast<index_t>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (row_id >= rows_total) return;
  const index_t row = row_id % p.nq;
  const index_t head = row_id / p.nq % p.hq;
  const index_t batch = row_id / p.nq / p.hq;
  // Rows past a packed item's queries have no partials and no output.
  if (row >= p.queries_in(batch)) return;

  const lse_combine<Acc> merge = lse_combine<Acc>::over(args.partial_lse + row_id, args.splits, rows_total);
  const Acc inv = merge.inverse_total();
  const index_t out_row = p.query_rows_at(batch, p.out_stride) + row * p.out_stride.seq + head * p.out_stride.head;
  for (index_t col = lane; col < p.dim_v; col += 32) {
    Acc sum = Acc(0);
    for (int s = 0; s < args.splits; ++s) {
      const index_t slice = static_cast<index_t>(s) * rows_total + row_id;
      sum += merge.weight(args.partial_lse[slice]) * args.partial_out[slice * p.dim_v + col];
    }
    store_as(p.out, out_row + col * p.out_stride.dim, args.out_kind, sum * inv);
  }
  if (lane == 0 && p.lse) *lse_at(p, batch, head, row) = static_cast<float>(merge.lse());
}

}  // namespace streamattn::detail::gpu
