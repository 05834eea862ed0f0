// Which keys a query row may see: causal and sliding-window masks, aligned to
// the bottom-right corner (FlashAttention >= 2.1 convention).
#pragma once

#include "../config.hpp"

namespace streamattn::detail {

/// Half-open key range [begin, end); empty when end <= begin.
struct key_range {
  index_t begin;
  index_t end;
  STREAMATTN_HOST_DEVICE bool empty() const { return end <= begin; }
};

/// The causal/window part of the mask. Row i's diagonal is the key
/// i + (Nk - Nq): the last query lines up with the last key, which is what a
/// decoder with a KV cache needs when Nq < Nk.
struct visibility {
  index_t nq = 0;
  index_t nk = 0;
  bool causal = false;
  index_t window_left = -1;   // -1: unbounded
  index_t window_right = -1;  // -1: unbounded

  STREAMATTN_HOST_DEVICE index_t diagonal(index_t query) const { return query + nk - nq; }

  STREAMATTN_HOST_DEVICE key_range keys_of(index_t query) const {
    const index_t diag = diagonal(query);
    index_t begin = 0;
    index_t end = nk;
    if (window_left >= 0 && diag - window_left > begin) begin = diag - window_left;
    if (causal && diag + 1 < end) end = diag + 1;
    if (window_right >= 0 && diag + window_right + 1 < end) end = diag + window_right + 1;
    if (end < begin) end = begin;
    return {begin, end};
  }

  /// Keys visible to at least one query in [first, last]: the union of their
  /// ranges, which is contiguous because both bounds grow with the row.
  STREAMATTN_HOST_DEVICE key_range keys_of_rows(index_t first, index_t last) const {
    const key_range a = keys_of(first);
    const key_range b = keys_of(last);
    key_range r{a.begin, b.end};
    if (r.end < r.begin) r.end = r.begin;
    return r;
  }

  /// True when every key in [key_begin, key_end) is visible to every query in
  /// [first, last]: such a tile needs no per-element masking.
  STREAMATTN_HOST_DEVICE bool tile_fully_visible(index_t first, index_t last, index_t key_begin,
                                                 index_t key_end) const {
    const key_range a = keys_of(first);
    const key_range b = keys_of(last);
    // Row `last` has the largest begin, row `first` the smallest end.
    return b.begin <= key_begin && key_end <= a.end;
  }
};

}  // namespace streamattn::detail
