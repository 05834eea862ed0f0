// Which key tiles a block of query rows visits and which of them need
// per-element masking. Plain host/device C++ so the kernels' skipping logic is
// unit-tested on the host: a skipped tile must hold no visible key, and an
// unmasked tile must be visible in full to every real row of the block.
#pragma once

#include "../config.hpp"
#include "../detail/visibility.hpp"

namespace streamattn::detail::gpu {

/// Half-open range of key tile indices [first, last).
struct tile_span {
  index_t first = 0;
  index_t last = 0;
  STREAMATTN_HOST_DEVICE bool empty() const { return last <= first; }
  STREAMATTN_HOST_DEVICE index_t size() const { return empty() ? 0 : last - first; }
};

STREAMATTN_HOST_DEVICE index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

/// Key tiles (of `tile_keys` keys, tile t = keys [t * tile_keys, (t + 1) * tile_keys))
/// holding a key visible to some query in [row_begin, row_begin + rows) ∩ [0, nq),
/// restricted to the tiles [split_first, split_last) of one split-KV slice.
/// Tiles outside the causal/window band are never loaded: that is the
/// "masked tiles skipped" of FlashAttention.
STREAMATTN_HOST_DEVICE tile_span key_tiles_of(const visibility& vis, index_t row_begin, index_t rows,
                                              index_t tile_keys, index_t split_first, index_t split_last) {
  tile_span span{0, 0};
  const index_t last_row = (row_begin + rows < vis.nq ? row_begin + rows : vis.nq) - 1;
  if (last_row < row_begin || vis.nk <= 0) return span;
  const key_range keys = vis.keys_of_rows(row_begin, last_row);
  if (keys.empty()) return span;
  span.first = keys.begin / tile_keys;
  span.last = ceil_div(keys.end, tile_keys);
  if (span.first < split_first) span.first = split_first;
  if (span.last > split_last) span.last = split_last;
  if (span.last < span.first) span.last = span.first;
  return span;
}

/// The keys that exist and are visible to every real query row of
/// [row_begin, row_begin + rows) ∩ [0, nq): the intersection of their
/// ranges, empty when the block has no real row. (visibility's
/// tile_fully_visible asks the same; written as this range, the tensor-core
/// kernel's key loop compiles with fewer spills: CUDA 13.0, bf16, head dim
/// 64, 8 local loads per key tile instead of 14.)
STREAMATTN_HOST_DEVICE key_range keys_seen_by_all(const visibility& vis, index_t row_begin, index_t rows) {
  const index_t last_row = (row_begin + rows < vis.nq ? row_begin + rows : vis.nq) - 1;
  if (last_row < row_begin) return {0, 0};
  // Row `last_row` has the largest begin, row `row_begin` the smallest end.
  return {vis.keys_of(last_row).begin, vis.keys_of(row_begin).end};
}

/// False when every key of tile [key_begin, key_begin + tile_keys) exists and
/// is visible to every real query row of the block: the kernel then scales the
/// scores and skips the per-element checks. Score terms (bias, mask, ALiBi,
/// softcap) always need the per-element path.
STREAMATTN_HOST_DEVICE bool tile_needs_mask(const visibility& vis, index_t row_begin, index_t rows, index_t key_begin,
                                            index_t tile_keys, bool has_score_terms) {
  if (has_score_terms) return true;
  // The tile's unclipped end: a tile running past Nk is never inside, because
  // keys_of never extends past Nk, so the zero-filled keys get masked.
  const key_range seen = keys_seen_by_all(vis, row_begin, rows);
  return !(seen.begin <= key_begin && key_begin + tile_keys <= seen.end);
}

/// True when `key` takes part in row `row`'s softmax (causal/window and
/// bounds only; the boolean mask and -inf biases act later on the score).
STREAMATTN_HOST_DEVICE bool key_visible(const visibility& vis, index_t row, index_t key) {
  if (row < 0 || row >= vis.nq) return false;
  const key_range r = vis.keys_of(row);
  return key >= r.begin && key < r.end;
}

}  // namespace streamattn::detail::gpu

namespace streamattn::detail::gpu {

/// A row's visible keys within one tile, as 32-bit columns relative to the
/// tile's first key, clamped to [0, tile_keys]: per-element checks in the
/// unrolled inner loops then compare small ints instead of 64-bit keys.
struct tile_columns {
  int begin = 0;
  int end = 0;
  STREAMATTN_HOST_DEVICE bool contains(int column) const { return column >= begin && column < end; }
};

STREAMATTN_HOST_DEVICE tile_columns columns_in_tile(const key_range& keys, index_t key0, int tile_keys) {
  auto clamp = [&](index_t k) -> int {
    const index_t rel = k - key0;
    return rel < 0 ? 0 : rel > tile_keys ? tile_keys : static_cast<int>(rel);
  };
  return {clamp(keys.begin), clamp(keys.end)};
}

}  // namespace streamattn::detail::gpu
