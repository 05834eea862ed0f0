// Launches the planned kernels on a stream: the attention kernel the plan
// chose, then the split-KV combine when the key axis was split, with the
// arguments and grids of attention_launch_config.cuh. Kernel templates are
// instantiated per input storage type only (and, for the tensor-core kernel,
// per compiled head dim); the output type is a runtime value, which keeps
// nvcc's work proportional to what a program uses.
#pragma once

#include <stdexcept>

#include <cuda_runtime_api.h>

#include "attention_kernel.cuh"
#include "attention_launch_config.cuh"
#include "attention_plan.hpp"
#include "attention_simt_kernel.cuh"
#include "attention_split_kv.cuh"
#include "error.cuh"
#include "kernel_args.cuh"

namespace streamattn::detail::gpu {

template <class S, int HeadDim>
void launch_mma_kernel(const attention_launch_config<S>& c, cudaStream_t stream, const char* function) {
  // Above 48 KiB a kernel's dynamic shared memory needs an explicit opt-in,
  // which is per device; setting it on every call keeps multi-GPU programs right.
  throw_on_error(cudaFuncSetAttribute(attention_mma_kernel<S, HeadDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(c.shared_bytes)),
                 function, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  attention_mma_kernel<S, HeadDim><<<c.grid, c.threads, c.shared_bytes, stream>>>(c.args);
  throw_on_launch_error(function, "attention_mma_kernel");
}

/// `args` as made by make_kernel_args; `workspace` holds at least
/// plan.workspace_bytes() bytes of device memory, 256-byte aligned, when the
/// plan splits the key axis.
template <class S>
void launch_attention(kernel_args<S> args, const attention_plan& plan, void* workspace, cudaStream_t stream,
                      const char* function) {
  if (plan.grid_x == 0) return;
  const attention_launch_config<S> c = configure_attention_launch(args, plan, workspace, function);
  if (plan.kernel.family == kernel_family::mma) {
    if constexpr (is_16bit_storage_v<S>) {
      with_mma_head_dim(plan.kernel.head_dim, [&](auto head_dim) {
        launch_mma_kernel<S, decltype(head_dim)::value>(c, stream, function);
      });
    } else {
      throw std::logic_error("streamattn: the tensor-core kernel was planned for a 32/64-bit input");
    }
  } else {
    attention_simt_kernel<S><<<c.grid, c.threads, 0, stream>>>(c.args);
    throw_on_launch_error(function, "attention_simt_kernel");
  }
  if (c.combine_blocks > 0) {
    combine_splits_kernel<S><<<c.combine_blocks, combine_warps * 32, 0, stream>>>(c.args);
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
