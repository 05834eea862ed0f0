// Everything the host decides before launching attention on the GPU: which
// kernel, the grid, whether and how to split the key axis, and the workspace
// that needs. Plain C++ over the device's limits, so every decision is
// unit-tested without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "../config.hpp"
#include "../detail/check.hpp"
#include "element_kind.hpp"
#include "head_packing.hpp"
#include "index_tables.hpp"
#include "kernel_choice.hpp"
#include "split_kv_plan.hpp"
#include "tile_range.hpp"

namespace streamattn::detail::gpu {

/// What the plan needs to know about the GPU.
struct device_limits {
  int sm_count = 0;
  int compute_capability = 0;        // major * 10 + minor
  std::size_t max_shared_bytes = 0;  // dynamic shared memory per block after opting in
  /// The program has the wgmma kernel's sm_90a code (STREAMATTN_CUDA_WGMMA)
  /// and this GPU runs it (compute capability 9.0).
  bool wgmma = false;
};

/// Whether the wgmma kernel replaces the mma one where it could.
enum class hopper_kernel : unsigned char {
  automatic,  // where the queries fill more than one mma tile (see plan_attention)
  never,
  always,  // wherever it applies, whatever the query count (tests)
};

/// Overrides for tests and callers that know better; the defaults decide alone.
struct plan_overrides {
  int splits = 0;          // 0: heuristic; n >= 1: n key slices (fewer if there are fewer key tiles)
  bool simt_only = false;  // run the FMA kernel even where the tensor-core one applies
  head_packing packing = head_packing::automatic;  // GQA heads in one block's rows (head_packing.hpp)
  hopper_kernel hopper = hopper_kernel::automatic;  // wgmma kernel, where the device has it
};

/// Whether a problem planned on the mma kernel `c` runs on the wgmma kernel
/// instead. It applies at head dims 64 and 128, on devices that have it.
/// Automatically it takes problems with more than one mma tile of queries
/// per head: a decode's few rows would fill little of its 128-row tile,
/// where the mma kernel packs GQA heads and skips empty warps.
constexpr bool use_wgmma(const kernel_choice& c, const device_limits& device, index_t nq, hopper_kernel mode) {
  if (c.family != kernel_family::mma || !device.wgmma || !is_wgmma_head_dim(c.head_dim) ||
      mode == hopper_kernel::never)
    return false;
  return mode == hopper_kernel::always || nq > mma_query_rows;
}

struct attention_plan {
  kernel_choice kernel;
  index_t packed_heads = 1;  // query heads per block (head_packing.hpp): 1 or the GQA group
  index_t query_tiles = 0;   // query tiles per (batch, head or packed group of heads)
  index_t grid_x = 0;        // (batch, head or group, query tile) blocks
  index_t col_chunks = 1;    // grid.z: output-column chunks (simt only)
  index_t kv_tiles = 0;      // key tiles of the whole key axis
  split_kv_plan split;       // grid.y = split.splits
  split_workspace_layout workspace;
  /// Packed starts and block table copied to the device after the partials
  /// (set by plan_for; plan_attention knows only the sizes).
  index_tables_layout index_tables;

  /// Where the index tables start in the workspace: after the split-KV
  /// partials, 256-byte aligned.
  std::size_t index_tables_offset() const { return (workspace.bytes() + 255) / 256 * 256; }
  std::size_t workspace_bytes() const {
    return index_tables.count() > 0 ? index_tables_offset() + index_tables.bytes() : workspace.bytes();
  }
};

/// Blocks that can be resident per multiprocessor when judging whether a
/// grid fills the GPU (FlashAttention's split heuristic assumes two as well).
inline constexpr int assumed_blocks_per_sm = 2;

/// `heads` query heads share `kv_heads` K/V heads (validated: kv_heads
/// divides heads).
inline attention_plan plan_attention(const char* function, element_kind input, index_t batch, index_t heads,
                                     index_t kv_heads, index_t nq, index_t nk, index_t dim, index_t dim_v,
                                     const device_limits& device, const plan_overrides& overrides = {}) {
  attention_plan plan;
  plan.kernel = choose_kernel(input, dim, dim_v, overrides.simt_only ? 0 : device.compute_capability);
  if (plan.kernel.family == kernel_family::mma &&
      static_cast<std::size_t>(mma_smem_bytes(plan.kernel.head_dim)) > device.max_shared_bytes)
    plan.kernel = choose_kernel(input, dim, dim_v, 0);
  if (use_wgmma(plan.kernel, device, nq, overrides.hopper) &&
      static_cast<std::size_t>(wgmma_smem_bytes(plan.kernel.head_dim)) <= device.max_shared_bytes)
    plan.kernel = as_wgmma(plan.kernel);

  plan.packed_heads = packed_heads_for(plan.kernel, nq, kv_heads > 0 ? heads / kv_heads : 1, overrides.packing);
  plan.query_tiles = ceil_div(nq * plan.packed_heads, plan.kernel.query_rows);
  const index_t head_blocks = heads / plan.packed_heads;
  plan.col_chunks = out_col_chunks(plan.kernel, dim_v);
  plan.kv_tiles = ceil_div(nk, plan.kernel.key_rows);
  // blockIdx.x is 31 bits; the (batch, head, tile) product is checked
  // without overflowing on the way.
  constexpr index_t max_x = std::numeric_limits<std::int32_t>::max();
  if (plan.query_tiles > 0 && head_blocks > max_x / plan.query_tiles)
    fail(function, "batch x heads x query tiles exceeds the CUDA grid limit (heads = ", heads, ")");
  plan.grid_x = plan.query_tiles * head_blocks;
  if (plan.grid_x > 0 && batch > max_x / plan.grid_x)
    fail(function, "batch x heads x query tiles exceeds the CUDA grid limit (batch = ", batch, ")");
  plan.grid_x *= batch;
  if (plan.col_chunks > 65535) fail(function, "value head dim ", dim_v, " exceeds the CUDA grid limit");

  const index_t blocks = plan.grid_x * plan.col_chunks;
  plan.split = overrides.splits > 0
                   ? forced_kv_splits(plan.kv_tiles, overrides.splits)
                   : choose_kv_splits(blocks, plan.kv_tiles, device.sm_count, assumed_blocks_per_sm);
  plan.workspace.rows = batch * heads * nq;
  plan.workspace.dim_v = dim_v;
  plan.workspace.splits = plan.split.splits;
  plan.workspace.element_bytes = input == element_kind::f64 ? 8 : 4;
  return plan;
}

}  // namespace streamattn::detail::gpu
