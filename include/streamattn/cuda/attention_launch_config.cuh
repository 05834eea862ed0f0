// What launch_attention launches, worked out on the host: the plan, the
// kernel arguments with the plan's tiling and split workspace filled in, the
// grids, the compiled head dim and the sequence of kernels. Kept apart from
// the launches themselves (attention_launch.cuh) so the test suite's SIMT
// emulator runs exactly the kernels and grids a GPU gets.
#pragma once

#include <cstddef>
#include <iterator>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <vector_types.h>

#include "../detail/attention_params.hpp"
#include "attention_kernel.cuh"
#include "attention_plan.hpp"
#include "attention_simt_kernel.cuh"
#include "attention_split_kv.cuh"
#include "attention_wgmma_kernel.cuh"
#include "device_types.cuh"
#include "element_kind.hpp"
#include "index_tables.hpp"
#include "kernel_args.cuh"
#include "kernel_choice.hpp"

namespace streamattn::detail::gpu {

inline constexpr const char* attention_function = "streamattn::attention (cuda)";

/// The plan for validated params `p` on a GPU with `limits`;
/// `table_on_device`: p.block_table is device memory (index_tables.hpp).
template <class T, class Tout, class Tkv>
attention_plan plan_for(const attention_params<T, Tout, Tkv>& p, const device_limits& limits,
                        const plan_overrides& overrides = {}, bool table_on_device = false) {
  plan_overrides how = overrides;
  if constexpr (is_quantised_v<Tkv>) how.hopper = hopper_kernel::never;  // the wgmma kernel reads 16-bit K/V only
  attention_plan plan = plan_attention(attention_function, element_kind_of<T>(), p.batch, p.hq, p.hk, p.nq, p.nk,
                                       p.dim, p.dim_v, limits, how);
  plan.index_tables = index_tables_of(p, table_on_device);
  return plan;
}

template <class S, class Skv = S>
struct attention_launch_config {
  kernel_args<S, Skv> args;
  /// The attention kernel's grid: (batch x head x query tile, key slices,
  /// output-column chunks), threads per block and dynamic shared memory.
  dim3 grid;
  unsigned threads = 0;
  std::size_t shared_bytes = 0;
  /// Blocks of the split-KV combine kernel (combine_warps warps each); 0
  /// when the key axis is not split.
  unsigned combine_blocks = 0;
  /// Packed starts and block table (index_tables.hpp): these host values go
  /// to `index_destination` in the workspace before the first kernel runs;
  /// args already point there. Empty when the call has none.
  std::vector<index_t> index_values;
  index_t* index_destination = nullptr;
};

/// `args` as made by make_kernel_args (starts and a host block table still
/// in host memory); `workspace` holds at least plan.workspace_bytes() bytes of device
/// memory, 256-byte aligned, when that is not 0. Only for plans with work
/// (grid_x > 0).
template <class S, class Skv>
attention_launch_config<S, Skv> configure_attention_launch(kernel_args<S, Skv> args, const attention_plan& plan,
                                                           void* workspace, const char* function) {
  using Acc = device_accum_t<S>;
  attention_launch_config<S, Skv> c;
  args.query_tiles = plan.query_tiles;
  args.packed_heads = plan.packed_heads;
  args.splits = plan.split.splits;
  args.tiles_per_split = plan.split.tiles_per_split;
  if (args.splits > 1) {
    args.partial_out = static_cast<Acc*>(workspace);
    args.partial_lse =
        reinterpret_cast<Acc*>(static_cast<unsigned char*>(workspace) + plan.workspace.lse_offset_bytes());
    const index_t blocks = (plan.workspace.rows + combine_warps - 1) / combine_warps;
    if (blocks > 0x7fffffff) throw std::invalid_argument(std::string(function) + ": too many rows to combine");
    c.combine_blocks = static_cast<unsigned>(blocks);
  }
  const index_tables_layout& tables = plan.index_tables;
  if (tables.count() > 0) {
    c.index_destination =
        reinterpret_cast<index_t*>(static_cast<unsigned char*>(workspace) + plan.index_tables_offset());
    c.index_values = gather_index_tables(args.p, tables);
  }
  if (tables.count() > 0 || tables.table_on_device) point_at_index_tables(args.p, tables, c.index_destination);
  c.args = args;
  c.grid = dim3(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.split.splits),
                static_cast<unsigned>(plan.col_chunks));
  switch (plan.kernel.family) {
    case kernel_family::mma:
      c.threads = mma_warps * 32;
      c.shared_bytes = static_cast<std::size_t>(mma_smem_bytes(plan.kernel.head_dim));
      break;
    case kernel_family::wgmma:
      c.threads = wgmma_warps * 32;
      c.shared_bytes = static_cast<std::size_t>(wgmma_smem_bytes(plan.kernel.head_dim));
      break;
    default:
      c.threads = simt_warps * 32;
      c.shared_bytes = 0;
  }
  return c;
}

namespace launch_detail {
template <class F, std::size_t... I>
bool call_with_head_dim(int head_dim, F& f, std::index_sequence<I...>) {
  return ((head_dim == mma_head_dims[I] && (f(std::integral_constant<int, mma_head_dims[I]>{}), true)) || ...);
}
}  // namespace launch_detail

/// Calls f(std::integral_constant<int, D>{}) for the compiled tensor-core
/// head dim D equal to `head_dim`; the compiled dims are kernel_choice.hpp's
/// mma_head_dims, so a dim added there is planned and launched alike.
template <class F>
void with_mma_head_dim(int head_dim, F&& f) {
  if (!launch_detail::call_with_head_dim(head_dim, f, std::make_index_sequence<std::size(mma_head_dims)>{}))
    throw std::logic_error("streamattn: no tensor-core kernel for the planned head dim");
}

/// Every kernel of one attention call, all taking the same kernel_args<S, Skv>.
template <class S, class Skv = S>
using attention_kernel_fn = void (*)(kernel_args<S, Skv>);

/// Calls launch(name, kernel, grid, block, dynamic_shared_bytes) for every
/// kernel configuration `c` runs, in order: the attention kernel the plan
/// chose, then the split-KV combine when the key axis is split. The one
/// sequence behind launch_attention and the test suite's emulated launches.
template <class S, class Skv, class Launch>
void for_each_attention_kernel(const attention_launch_config<S, Skv>& c, const attention_plan& plan, Launch&& launch) {
  using kernel_fn = attention_kernel_fn<S, Skv>;
  if (plan.kernel.family == kernel_family::mma) {
    if constexpr (is_16bit_storage_v<S>) {
      with_mma_head_dim(plan.kernel.head_dim, [&](auto head_dim) {
        launch("attention_mma_kernel", kernel_fn{&attention_mma_kernel<S, Skv, decltype(head_dim)::value>}, c.grid,
               dim3(c.threads), c.shared_bytes);
      });
    } else {
      throw std::logic_error("streamattn: the tensor-core kernel was planned for a 32/64-bit input");
    }
  } else if (plan.kernel.family == kernel_family::wgmma) {
    if constexpr (is_16bit_storage_v<S> && std::is_same_v<S, Skv>) {
      with_mma_head_dim(plan.kernel.head_dim, [&](auto head_dim) {
        constexpr int d = decltype(head_dim)::value;
        if constexpr (is_wgmma_head_dim(d)) {
          const kernel_fn kernel = c.args.p.weights_in_input_type ? kernel_fn{&attention_wgmma_kernel<S, d, false>}
                                                                  : kernel_fn{&attention_wgmma_kernel<S, d, true>};
          launch("attention_wgmma_kernel", kernel, c.grid, dim3(c.threads), c.shared_bytes);
        } else
          throw std::logic_error("streamattn: the wgmma kernel was planned for a head dim it is not compiled for");
      });
    } else {
      throw std::logic_error("streamattn: the wgmma kernel was planned for a 32/64-bit input or an int8 K/V cache");
    }
  } else {
    launch("attention_simt_kernel", kernel_fn{&attention_simt_kernel<S, Skv>}, c.grid, dim3(c.threads),
           std::size_t{0});
  }
  if (c.combine_blocks > 0)
    launch("combine_splits_kernel", kernel_fn{&combine_splits_kernel<S, Skv>}, dim3(c.combine_blocks),
           dim3(combine_warps * 32), std::size_t{0});
}

}  // namespace streamattn::detail::gpu
