// Enqueues the steps of additive pooling or Fastformer on a stream, one
// launch of additive_kernel, additive_stream_kernel,
// additive_stream_mma_kernel or additive_stream_causal_kernel per step
// (kernel_for), with the plan's grid and shared memory.
#pragma once

#include <cuda_runtime_api.h>

#include "additive_kernel.cuh"
#include "additive_plan.hpp"
#include "error.cuh"

namespace streamattn::detail::gpu {

/// Whether the code of additive_stream_mma_kernel that runs on the current
/// device was compiled for sm_80 or newer. A program built for older
/// architectures only runs there PTX compiled without the tensor-core
/// instructions (mma.cuh: STREAMATTN_CUDA_NO_SM80), whose kernel traps.
/// Beside launch_additive, so that programs compiling the kernels once
/// (STREAMATTN_CUDA_EXTERN_KERNELS) take the kernel's address there too.
template <class S>
bool tensor_core_pooling_compiled(const char* function) {
  cudaFuncAttributes attributes{};
  throw_on_error(cudaFuncGetAttributes(&attributes, additive_stream_mma_kernel<S>), function,
                 "cudaFuncGetAttributes(additive_stream_mma_kernel)");
  return attributes.ptxVersion >= 80;
}

/// Enqueues every step of the call on `stream`. `args` carries the plan and
/// its workspace (apply_plan).
template <class S>
void launch_additive(const additive_args<S>& args, const additive_plan& plan, cudaStream_t stream,
                     const char* function) {
  const auto shared = static_cast<int>(plan.shared_bytes);
  if (plan.shared_bytes > additive_default_shared_bytes) {
    throw_on_error(cudaFuncSetAttribute(additive_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, shared),
                   function, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    throw_on_error(
        cudaFuncSetAttribute(additive_stream_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, shared),
        function, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    throw_on_error(
        cudaFuncSetAttribute(additive_stream_causal_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, shared),
        function, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    throw_on_error(
        cudaFuncSetAttribute(additive_stream_mma_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, shared),
        function, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  }
  for_each_additive_step(args, [&](additive_step step, index_t blocks) {
    if (blocks == 0) return;
    const auto grid = static_cast<unsigned>(blocks);
    switch (kernel_for(args, step)) {
      case additive_kernel_kind::stream:
        additive_stream_kernel<S><<<grid, additive_block_threads, shared, stream>>>(args, step);
        throw_on_launch_error(function, "additive_stream_kernel");
        break;
      case additive_kernel_kind::stream_mma:
        additive_stream_mma_kernel<S><<<grid, additive_block_threads, shared, stream>>>(args, step);
        throw_on_launch_error(function, "additive_stream_mma_kernel");
        break;
      case additive_kernel_kind::stream_causal:
        additive_stream_causal_kernel<S><<<grid, additive_block_threads, shared, stream>>>(args, step);
        throw_on_launch_error(function, "additive_stream_causal_kernel");
        break;
      default:
        additive_kernel<S><<<grid, additive_block_threads, shared, stream>>>(args, step);
        throw_on_launch_error(function, "additive_kernel");
    }
  });
}

}  // namespace streamattn::detail::gpu

#if defined(STREAMATTN_CUDA_EXTERN_KERNELS)
namespace streamattn::detail::gpu {
extern template void launch_additive<float>(const additive_args<float>&, const additive_plan&, cudaStream_t,
                                            const char*);
extern template void launch_additive<double>(const additive_args<double>&, const additive_plan&, cudaStream_t,
                                             const char*);
extern template void launch_additive<__half>(const additive_args<__half>&, const additive_plan&, cudaStream_t,
                                             const char*);
extern template void launch_additive<__nv_bfloat16>(const additive_args<__nv_bfloat16>&, const additive_plan&,
                                                    cudaStream_t, const char*);
extern template bool tensor_core_pooling_compiled<float>(const char*);
extern template bool tensor_core_pooling_compiled<double>(const char*);
extern template bool tensor_core_pooling_compiled<__half>(const char*);
extern template bool tensor_core_pooling_compiled<__nv_bfloat16>(const char*);
}  // namespace streamattn::detail::gpu
#endif
