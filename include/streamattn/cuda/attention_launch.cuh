// Launches the planned kernels on a stream: the attention kernel the plan
// chose, then the split-KV combine when the key axis was split, in the
// sequence and with the arguments and grids of attention_launch_config.cuh.
// Kernel templates are instantiated per input storage type only (q's, and
// int8 for a quantised K/V cache; for the tensor-core kernel also per
// compiled head dim); the output type is a runtime value, which keeps nvcc's
// work proportional to what a program uses.
#pragma once

#include <cstddef>
#include <cstdint>

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
template <class S, class Skv>
void launch_attention(kernel_args<S, Skv> args, const attention_plan& plan, void* workspace, cudaStream_t stream,
                      const char* function) {
  if (plan.grid_x == 0) return;
  const attention_launch_config<S, Skv> c = configure_attention_launch(args, plan, workspace, function);
  // Ordered before the kernels on the stream.
  upload_async(c.index_destination, c.index_values, stream, function, "cudaMemcpyAsync(packed starts and block table)");
  for_each_attention_kernel(
      c, plan,
      [&](const char* name, attention_kernel_fn<S, Skv> kernel, dim3 grid, dim3 block, std::size_t shared_bytes) {
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
// STREAMATTN_CUDA_INSTANTIATE_KERNELS, and with
// STREAMATTN_CUDA_INSTANTIATE_INT8_KV_KERNELS for calls on int8 K/V caches
// (kernel_instantiation.cuh).
#if defined(STREAMATTN_CUDA_EXTERN_KERNELS)
// One declaration per (q, K/V) storage pair: STREAMATTN_CUDA_INSTANTIATE_KERNELS(T)
// defines (T, T), STREAMATTN_CUDA_INSTANTIATE_INT8_KV_KERNELS(T) (T, int8).
#define STREAMATTN_CUDA_EXTERN_ATTENTION(S, Skv)                                                                  \
  extern template void launch_attention<S, Skv>(kernel_args<S, Skv>, const attention_plan&, void*, cudaStream_t, \
                                                const char*);
namespace streamattn::detail::gpu {
STREAMATTN_CUDA_EXTERN_ATTENTION(float, float)
STREAMATTN_CUDA_EXTERN_ATTENTION(double, double)
STREAMATTN_CUDA_EXTERN_ATTENTION(__half, __half)
STREAMATTN_CUDA_EXTERN_ATTENTION(__nv_bfloat16, __nv_bfloat16)
STREAMATTN_CUDA_EXTERN_ATTENTION(float, std::int8_t)
STREAMATTN_CUDA_EXTERN_ATTENTION(double, std::int8_t)
STREAMATTN_CUDA_EXTERN_ATTENTION(__half, std::int8_t)
STREAMATTN_CUDA_EXTERN_ATTENTION(__nv_bfloat16, std::int8_t)
}  // namespace streamattn::detail::gpu
#undef STREAMATTN_CUDA_EXTERN_ATTENTION
#endif
