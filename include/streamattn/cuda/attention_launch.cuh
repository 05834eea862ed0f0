// Launches the planned kernels on a stream: the attention kernel the plan
// chose, then the split-KV combine when the key axis was split, in the
// sequence and with the arguments and grids of attention_launch_config.cuh.
// Kernel templates are instantiated per input storage type only (and, for
// the tensor-core kernel, per compiled head dim); the output type is a
// runtime value, which keeps nvcc's work proportional to what a program uses.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "attention_launch_config.cuh"
#include "attention_plan.hpp"
#include "error.cuh"
#include "host_upload.cuh"
#include "kernel_args.cuh"

namespace streamattn::detail::gpu {

/// `args` as made by make_kernel_args; `workspace` holds at least
/// plan.workspace_bytes() bytes of device memory, 256-byte aligned, when that
/// is not 0.
template <class S>
void launch_attention(kernel_args<S> args, const attention_plan& plan, void* workspace, cudaStream_t stream,
                      const char* function) {
  if (plan.grid_x == 0) return;
  const attention_launch_config<S> c = configure_attention_launch(args, plan, workspace, function);
  // Ordered before the kernels on the stream.
  upload_async(c.index_destination, c.index_values, stream, function, "cudaMemcpyAsync(packed starts and block table)");
  for_each_attention_kernel(
      c, plan, [&](const char* name, attention_kernel_fn<S> kernel, dim3 grid, dim3 block, std::size_t shared_bytes) {
        // Above 48 KiB a kernel's dynamic shared memory needs an explicit opt-in,
        // which is per device; setting it on every call keeps multi-GPU programs right.
        if (shared_bytes > 0)
          throw_on_error(
              cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes)),
              function, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
        kernel<<<grid, block, shared_bytes, stream>>>(c.args);
        throw_on_launch_error(function, name);
      });
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
