// Split-KV: when a problem has too few (batch, head, query tile) blocks to
// fill the GPU, typically decoding (Nq small, Nk long), the key axis is cut
// into slices that run as separate blocks; each writes its normalised partial
// output and log-sum-exp, and a combine kernel merges them exactly like
// `merge_partials` does on the CPU. Plain C++: the heuristic and the
// workspace layout are unit-tested on the host.
#pragma once

#include <cstddef>

#include "../config.hpp"

namespace streamattn::detail::gpu {

struct split_kv_plan {
  int splits = 1;                // slices of the key axis; 1 = no split
  index_t tiles_per_split = 0;   // key tiles per slice (the last may be shorter)
};

/// Upper bound on slices: the combine reads every slice's lse per row.
inline constexpr int max_kv_splits = 128;

/// Picks the number of key slices for `blocks` thread blocks (without
/// splitting) over `kv_tiles` key tiles on a GPU with `sm_count`
/// multiprocessors, `blocks_per_sm` of which fit at once.
///
/// No split when the blocks already fill the GPU: splitting then only adds
/// the combine's traffic. Otherwise, for each candidate count s, the grid has
/// blocks * s blocks and runs in ceil(blocks * s / slots) waves; the last
/// wave's occupancy is the efficiency. Take the smallest s within 85% of the
/// best efficiency (fewer slices = less partial traffic), skipping counts that
/// would leave a slice empty or give the same tiles per slice as a smaller s.
inline split_kv_plan choose_kv_splits(index_t blocks, index_t kv_tiles, int sm_count, int blocks_per_sm = 1,
                                      int max_splits = max_kv_splits) {
  split_kv_plan plan;
  plan.tiles_per_split = kv_tiles > 0 ? kv_tiles : 0;
  if (blocks <= 0 || kv_tiles < 2 || sm_count <= 0) return plan;
  const index_t slots = static_cast<index_t>(sm_count) * (blocks_per_sm > 0 ? blocks_per_sm : 1);
  // 80% of one wave is already busy enough; FlashAttention uses the same cut.
  if (blocks * 5 >= slots * 4) return plan;

  index_t limit = max_splits;
  if (limit > kv_tiles) limit = kv_tiles;
  if (limit > slots) limit = slots;

  auto efficiency = [&](index_t s) {
    const index_t total = blocks * s;
    const index_t waves = (total + slots - 1) / slots;
    return static_cast<double>(total) / static_cast<double>(waves * slots);
  };
  auto eligible = [&](index_t s) {
    const index_t per = (kv_tiles + s - 1) / s;
    if ((kv_tiles + per - 1) / per != s) return false;  // some slice would be empty
    if (s == 1) return true;
    const index_t per_fewer = (kv_tiles + s - 2) / (s - 1);
    return per != per_fewer;  // s - 1 slices of the same length already do it
  };

  double best = 0;
  for (index_t s = 1; s <= limit; ++s)
    if (eligible(s) && efficiency(s) > best) best = efficiency(s);
  for (index_t s = 1; s <= limit; ++s) {
    if (eligible(s) && efficiency(s) >= 0.85 * best) {
      plan.splits = static_cast<int>(s);
      plan.tiles_per_split = (kv_tiles + s - 1) / s;
      return plan;
    }
  }
  return plan;
}

/// A plan with exactly `splits` slices when possible (for tests and callers
/// that know better); fewer when there are fewer key tiles.
inline split_kv_plan forced_kv_splits(index_t kv_tiles, int splits) {
  split_kv_plan plan;
  if (kv_tiles <= 0 || splits <= 1) {
    plan.tiles_per_split = kv_tiles > 0 ? kv_tiles : 0;
    return plan;
  }
  const index_t per = (kv_tiles + splits - 1) / splits;
  plan.tiles_per_split = per;
  plan.splits = static_cast<int>((kv_tiles + per - 1) / per);
  return plan;
}

/// The split-KV workspace: slice s's partial output of row r (rows ordered
/// (batch, head, query)) is `out + (s * rows + r) * dim_v`, its lse
/// `lse + s * rows + r`, both in the accumulation type.
struct split_workspace_layout {
  index_t rows = 0;
  index_t dim_v = 0;
  int splits = 1;
  std::size_t element_bytes = 4;

  std::size_t out_elements() const { return static_cast<std::size_t>(splits) * static_cast<std::size_t>(rows * dim_v); }
  std::size_t lse_elements() const { return static_cast<std::size_t>(splits) * static_cast<std::size_t>(rows); }
  /// The lse array starts 256-byte aligned after the outputs.
  std::size_t lse_offset_bytes() const { return (out_elements() * element_bytes + 255) / 256 * 256; }
  std::size_t bytes() const { return splits > 1 ? lse_offset_bytes() + lse_elements() * element_bytes : 0; }
};

}  // namespace streamattn::detail::gpu
