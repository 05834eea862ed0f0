// Grouped-query attention with few queries per head (decoding, short chunks):
// the `group` query heads that share a K/V head are packed into one block's
// query rows, so one pass over the K/V head serves the whole group instead
// of one pass per query head. FlashAttention calls this "pack GQA".
//
// Packed row r of a block's (batch item, K/V head) is query r / group of
// query head kv_head * group + r % group: a tile's rows hold consecutive
// queries, each in every head of the group, so the causal/window band of a
// tile still spans consecutive queries. Plain C++, unit-tested on the host.
#pragma once

#include "../config.hpp"
#include "kernel_choice.hpp"

namespace streamattn::detail::gpu {

enum class head_packing : unsigned char {
  automatic,  // pack where it takes fewer tiles (see packed_heads_for)
  never,
  always,  // wherever the kernel can (tests: every option on packed rows)
};

/// Query heads per block: `group` (hq / hk) or 1. Only the tensor-core
/// kernel packs. Automatically, heads are packed when that takes fewer
/// query tiles, ceil(nq * group / rows) < group * ceil(nq / rows): each tile
/// reads its K/V head once, so fewer tiles means fewer K/V reads. With
/// nq = 1 and group 4 a 64-row tile holds 4 rows instead of 1, and K/V are
/// read once instead of 4 times; with nq a multiple of the tile packing
/// gains nothing and keeps the causal tiles' tighter key bands.
constexpr index_t packed_heads_for(const kernel_choice& kernel, index_t nq, index_t group, head_packing mode) {
  if (kernel.family != kernel_family::mma || group <= 1 || nq <= 0 || mode == head_packing::never) return 1;
  if (mode == head_packing::always) return group;
  const index_t rows = kernel.query_rows;
  const index_t packed_tiles = (nq * group + rows - 1) / rows;
  const index_t tiles = group * ((nq + rows - 1) / rows);
  return packed_tiles < tiles ? group : 1;
}

/// The query and head of a block's packed row (see the file comment).
struct packed_row {
  index_t query;
  index_t head;
};

/// Packed row `row` of the block whose first query head is `first_head`.
/// `heads` is 1 or the group; 32-bit division where the row fits, as 64-bit
/// division is a long routine on a GPU.
STREAMATTN_HOST_DEVICE packed_row unpack_row(index_t row, index_t heads, index_t first_head) {
  if (heads == 1) return {row, first_head};
  const bool narrow = ((row | heads) >> 31) == 0;
  const index_t query =
      narrow ? static_cast<index_t>(static_cast<unsigned>(row) / static_cast<unsigned>(heads)) : row / heads;
  return {query, first_head + (row - query * heads)};
}

/// The query rows of a block: packed row r at operator()(r), in the
/// interface load_tile reads a row_locator through (`head` is a mapped
/// address, which zero-byte copies point at).
template <class E>
struct packed_query_rows {
  E* head = nullptr;  // query 0 of the block's first head
  index_t seq = 0;
  index_t head_stride = 0;
  index_t heads = 1;

  STREAMATTN_HOST_DEVICE E* operator()(index_t row) const {
    const packed_row r = unpack_row(row, heads, 0);
    return head + r.query * seq + r.head * head_stride;
  }
};

}  // namespace streamattn::detail::gpu
