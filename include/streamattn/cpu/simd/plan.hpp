// How the simd backend cuts one attention call into work items and scratch
// memory: the tile sizes, the path (wide or decode), the workers, and the
// byte layout of each worker's slab. Computed once per call, and identically
// by `workspace_size`, so the two always agree.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "../../detail/attention_params.hpp"
#include "../../detail/element.hpp"
#include "../../detail/parallel.hpp"
#include "../../detail/score_terms.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "micro_kernel.hpp"
#include "packet.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd {

/// Query blocks of at most this many rows take the decode path: with so few
/// queries the wide path's vector lanes (queries) would sit mostly idle, while
/// the decode path vectorises over the head dimension instead.
inline constexpr index_t decode_max_rows = 8;

inline constexpr std::size_t slab_alignment = 64;

/// Keys per chunk at most, whatever `kv_chunk` asks: the wide path compares
/// key offsets within a chunk as float lanes, exact up to 2^24. (Such a chunk
/// of scores is already a gigabyte or more of slab.)
inline constexpr index_t max_kv_chunk = index_t(1) << 24;

/// Split-KV aims for at least this many work items in a decode call...
inline constexpr index_t min_blocks_before_split = 16;
/// ...but never cuts segments shorter than this many keys.
inline constexpr index_t min_segment_keys = 1024;

inline std::size_t align_up(std::size_t n, std::size_t a = slab_alignment) { return (n + a - 1) / a * a; }
inline index_t round_up(index_t n, index_t m) { return (n + m - 1) / m * m; }

template <class Acc>
struct simd_plan {
  index_t group = 1;        // query heads per key/value head
  index_t head_rows = 0;    // rows of one key/value head: Nq * group, ordered (query, head-in-group)
  index_t block_rows = 0;   // rows per work item (q_chunk)
  index_t kv_chunk = 0;     // keys per step
  index_t row_blocks = 0;   // work items per (batch, key/value head)
  index_t splits = 1;       // key segments per row block (split-KV decoding)
  index_t segment = 0;      // keys per segment
  index_t heads_per_item = 1;  // decode: every K/V head of a batch in one item
  index_t items = 0;        // all work items: (blocks / heads_per_item) x splits
  bool decode = false;      // row-oriented path for small blocks
  index_t cols = 0;         // wide path: block rows padded to the packet size
  bool stage_k = false;     // K chunks copied to a dense row-major buffer first (Acc; int8 decode: codes)
  bool stage_v = false;     // likewise V
  int workers = 1;

  // A worker's slab: a shared part (staged K/V chunks; the wide path's
  // scores) and one part per K/V head of the item (queries, accumulators,
  // softmax state; the decode path's scores). block::scores() resolves s_off.
  std::size_t s_off = 0, k_off = 0, v_off = 0, shared_bytes = 0;  // from the slab
  std::size_t q_off = 0, o_off = 0, stats_off = 0, terms_off = 0, head_bytes = 0;  // from a head part
  std::size_t slab_bytes = 0;
  // Split-KV partial states (max, sum, unnormalised output of every row of
  // every segment), after the worker slabs.
  std::size_t partial_row_elems = 0;  // Acc elements per (segment, row)
  std::size_t partial_bytes = 0;

  /// Scratch memory for the whole call, with slack to align the caller's pointer.
  std::size_t workspace_bytes() const {
    return items == 0 ? 0 : slab_bytes * static_cast<std::size_t>(workers) + partial_bytes + slab_alignment;
  }
};

template <class Acc, class T, class Tout, class Tkv>
simd_plan<Acc> make_plan(const attention_params<T, Tout, Tkv>& p) {
  constexpr index_t W = packet_size<Acc>;
  constexpr index_t panel = tile_shape::col_packets * W;
  simd_plan<Acc> plan;
  plan.group = p.hk > 0 ? p.group_size() : 1;
  plan.head_rows = p.nq * plan.group;
  // Every block re-reads its head's K and V (from L3 at long lengths), so
  // blocks are tall: 8 column panels, 384 rows with AVX-512. Measured on
  // N = 4096: 96 rows ran at ~65 GFLOP/s, 384 rows at ~80.
  const index_t default_rows = 8 * panel;
  plan.block_rows = std::min(p.q_chunk > 0 ? p.q_chunk : default_rows, std::max<index_t>(plan.head_rows, 1));
  plan.decode = plan.block_rows <= decode_max_rows;
  // The keys the longest item has: a KV cache is usually allocated for the
  // longest context a sequence may reach and told its fill by key_lengths,
  // and chunks, segments and threads cut from that capacity would leave the
  // keys in the first segment or two (one thread's work). Read on the host:
  // the simd backend's operands live there.
  index_t keys = p.nk;
  if (p.key_lengths) {
    keys = 0;
    for (index_t b = 0; b < p.batch; ++b) keys = std::max(keys, p.keys_in(b));
  }
  plan.kv_chunk = p.kv_chunk > 0 ? p.kv_chunk : (plan.decode ? 128 : 256);
  plan.kv_chunk = std::min({plan.kv_chunk, std::max<index_t>(keys, 1), max_kv_chunk});
  plan.row_blocks = (plan.head_rows + plan.block_rows - 1) / plan.block_rows;
  // The decode path takes all K/V heads of a batch in one work item and walks
  // them chunk by chunk: K/V rows of one head are H*D elements apart, and
  // reading 512 bytes of each 4 KiB page one head at a time costs a TLB miss
  // per row, which capped decoding at a quarter of the memory bandwidth.
  plan.heads_per_item = plan.decode ? std::max<index_t>(p.hk, 1) : 1;
  const index_t units = p.batch * p.hk * plan.row_blocks / plan.heads_per_item;
  // Split-KV: a decode call with few items (one token, few K/V heads) would
  // leave cores idle, so its keys are cut into segments whose partial states
  // are merged afterwards. The cut depends on the shape only, never on the
  // thread count, which keeps results bitwise reproducible across threads.
  if (plan.decode && units < min_blocks_before_split) {
    const index_t by_length = keys / min_segment_keys;
    plan.splits = std::max<index_t>(1, std::min(min_blocks_before_split / std::max<index_t>(units, 1), by_length));
  }
  plan.segment = (keys + plan.splits - 1) / plan.splits;
  // In a paged cache, segments that start on a page (or chunk) boundary keep
  // every chunk and sweep inside one page, where K/V are read in place.
  if (p.block_table && p.page_size > 0) plan.segment = round_up(plan.segment, std::min(p.page_size, plan.kv_chunk));
  // (All items empty: the blocks still run, see no key and write zeros,
  // which keeps such a call on the caller's scratch like any other.)
  plan.items = (p.nk == 0 || p.dim_v == 0) ? 0 : units * plan.splits;
  plan.cols = round_up(plan.block_rows, W);

  // K chunks are copied into a dense row-major Acc buffer unless they already
  // are one: other element types must be converted, and rows a power-of-two
  // stride apart (bshd with several heads puts them H*D elements apart, often
  // 4 KiB) all fall into the same L1 cache sets, where the micro-kernel, which
  // streams 8 K rows at once, runs at about half speed. The copy costs about
  // 1/(block rows) of the arithmetic. V is read one row per step, which has no
  // such conflict, so the wide path reads it in place whenever its type
  // allows. The decode path loads K and V rows as packets (a few rows at a
  // time) and only needs them contiguous.
  // An int8 cache is dequantised here too on the wide path; the decode path
  // reads its codes as they are, copying them only from strided rows.
  const bool same_type = std::is_same_v<Tkv, Acc>;
  const bool codes = is_quantised_v<Tkv> && plan.decode;
  plan.stage_k =
      codes ? p.k_stride.dim != 1 : !same_type || p.k_stride.dim != 1 || (!plan.decode && p.k_stride.seq != p.dim);
  plan.stage_v = codes ? p.v_stride.dim != 1 : !same_type || (plan.decode && p.v_stride.dim != 1);

  const auto bytes = [](index_t n) { return align_up(static_cast<std::size_t>(n) * sizeof(Acc)); };
  const index_t rows = plan.decode ? plan.block_rows : plan.cols;
  const index_t kv_cols = plan.decode ? round_up(plan.kv_chunk, W) : plan.kv_chunk;
  // The wide path scores one block at a time; the decode path scores a
  // chunk for every head of its item before any head's softmax (see
  // decode_block.hpp), so there each head has its own scores.
  std::size_t at = 0;
  if (!plan.decode) plan.s_off = at, at += bytes(rows * kv_cols);
  // A chunk that crosses pages of a paged cache is staged whatever its type.
  const bool paged = p.block_table != nullptr;
  const auto staged_bytes = [&](index_t n) {
    return codes ? align_up(static_cast<std::size_t>(n) * sizeof(Tkv)) : bytes(n);
  };
  plan.k_off = at, at += plan.stage_k || paged ? staged_bytes(plan.kv_chunk * p.dim) : 0;
  plan.v_off = at, at += plan.stage_v || paged ? staged_bytes(plan.kv_chunk * p.dim_v) : 0;
  plan.shared_bytes = at;
  at = 0;
  if (plan.decode) plan.s_off = at, at += bytes(rows * kv_cols);
  plan.q_off = at, at += bytes(rows * p.dim);
  plan.o_off = at, at += bytes(rows * round_up(p.dim_v, W));
  plan.stats_off = at, at += 3 * bytes(rows);  // running max, running sum, rescale factor
  plan.terms_off = at, at += p.has_score_terms() ? align_up(sizeof(score_row<Acc>) * plan.block_rows) : 0;
  plan.head_bytes = at;
  plan.slab_bytes = plan.shared_bytes + static_cast<std::size_t>(plan.heads_per_item) * plan.head_bytes;
  plan.partial_row_elems = static_cast<std::size_t>(round_up(p.dim_v, W) + 2);
  plan.partial_bytes = plan.splits > 1 ? align_up(static_cast<std::size_t>(plan.items * plan.heads_per_item * plan.block_rows) *
                                                  plan.partial_row_elems * sizeof(Acc))
                                       : 0;

  const double work = 4.0 * static_cast<double>(p.batch) * static_cast<double>(p.hq) * static_cast<double>(p.nq) *
                      static_cast<double>(keys) * static_cast<double>(p.dim + p.dim_v) / 2.0;
  plan.workers = plan.items == 0 ? 1 : plan_threads(p.threads, plan.items, work);
  return plan;
}

}  // namespace streamattn::detail::simd

STREAMATTN_SIMD_DIAGNOSTICS_END
