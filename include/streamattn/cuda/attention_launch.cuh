// Launches the planned kernels on a stream: the attention kernel the plan
// chose, then the split-KV combine when the key axis was split. Kernel
// templates are instantiated per input storage type only (and, for the
// tensor-core kernel, per compiled head dim); the output type is a runtime
// value, which keeps nvcc's work proportional to what a program uses.
#pragma once

#include <stdexcept>

#include <cuda_runtime_api.h>

#include "attention_kernel.cuh"
#include "attention_plan.hpp"
#include "attention_simt_kernel.cuh"
#include "attention_split_kv.cuh"
#include "error.cuh"
#include "kernel_args.cuh"

namespace streamattn::detail::gpu {

template <class S, int HeadDim>
void launch_mma_kernel(const kernel_args<S>& args, dim3 grid, cudaStream_t stream, const char* function) {
  constexpr int shared_bytes = mma_smem_bytes(HeadDim);
  // Above 48 KiB a kernel's dynamic shared memory needs an explicit opt-in,
  // which is per device; setting it on every call keeps multi-GPU programs right.
  throw_on_error(cudaFuncSetAttribute(attention_mma_kernel<S, HeadDim>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes),
                 function, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  attention_mma_kernel<S, HeadDim><<<grid, mma_warps * 32, shared_bytes, stream>>>(args);
  throw_on_launch_error(function, "attention_mma_kernel");
}

/// `args` as made by make_kernel_args; `workspace` holds at least
/// plan.workspace_bytes() bytes of device memory, 256-byte aligned, when the
/// plan splits the key axis.
template <class S>
void launch_attention(kernel_args<S> args, const attention_plan& plan, void* workspace, cudaStream_t stream,
                      const char* function) {
  using Acc = device_accum_t<S>;
  if (plan.grid_x == 0) return;
  args.query_tiles = plan.query_tiles;
  args.splits = plan.split.splits;
  args.tiles_per_split = plan.split.tiles_per_split;
  if (args.splits > 1) {
    args.partial_out = static_cast<Acc*>(workspace);
    args.partial_lse = reinterpret_cast<Acc*>(static_cast<unsigned char*>(workspace) + plan.workspace.lse_offset_bytes());
  }
  const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(plan.split.splits),
                  static_cast<unsigned>(plan.col_chunks));

  if (plan.kernel.family == kernel_family::mma) {
    if constexpr (is_16bit_storage_v<S>) {
      switch (plan.kernel.head_dim) {
        case 32: launch_mma_kernel<S, 32>(args, grid, stream, function); break;
        case 64: launch_mma_kernel<S, 64>(args, grid, stream, function); break;
        case 96: launch_mma_kernel<S, 96>(args, grid, stream, function); break;
        case 128: launch_mma_kernel<S, 128>(args, grid, stream, function); break;
        case 256: launch_mma_kernel<S, 256>(args, grid, stream, function); break;
        default: throw std::logic_error("streamattn: no tensor-core kernel for the planned head dim");
      }
    } else {
      throw std::logic_error("streamattn: the tensor-core kernel was planned for a 32/64-bit input");
    }
  } else {
    attention_simt_kernel<S><<<grid, simt_warps * 32, 0, stream>>>(args);
    throw_on_launch_error(function, "attention_simt_kernel");
  }

  if (args.splits > 1) {
    const index_t rows = plan.workspace.rows;
    const index_t blocks = (rows + combine_warps - 1) / combine_warps;
    if (blocks > 0x7fffffff) throw std::invalid_argument(std::string(function) + ": too many rows to combine");
    combine_splits_kernel<S><<<static_cast<unsigned>(blocks), combine_warps * 32, 0, stream>>>(args);
    throw_on_launch_error(function, "combine_splits_kernel");
  }
}

}  // namespace streamattn::detail::gpu

// Compiling the kernels once per program: every translation unit that
// includes <streamattn/cuda.cuh> instantiates (and nvcc compiles, per target
// architecture) the kernels of the element types it calls attention with.
// A program with many such files can define STREAMATTN_CUDA_EXTERN_KERNELS in
// all of them and instantiate each type once in a file of its own with
// STREAMATTN_CUDA_INSTANTIATE_KERNELS (kernel_instantiation.cuh).
#if defined(STREAMATTN_CUDA_EXTERN_KERNELS)
namespace streamattn::detail::gpu {
extern template void launch_attention<float>(kernel_args<float>, const attention_plan&, void*, cudaStream_t,
                                             const char*);
extern template void launch_attention<double>(kernel_args<double>, const attention_plan&, void*, cudaStream_t,
                                              const char*);
extern template void launch_attention<__half>(kernel_args<__half>, const attention_plan&, void*, cudaStream_t,
                                              const char*);
extern template void launch_attention<__nv_bfloat16>(kernel_args<__nv_bfloat16>, const attention_plan&, void*,
                                                     cudaStream_t, const char*);
}  // namespace streamattn::detail::gpu
#endif
