// Explicit instantiation of the attention and additive kernels for one
// element type, for programs that compile the kernels once (see STREAMATTN_CUDA_EXTERN_KERNELS
// in attention_launch.cuh):
//
//     // attention_kernels_half.cu
//     #include <streamattn/cuda/kernel_instantiation.cuh>
//     STREAMATTN_CUDA_INSTANTIATE_KERNELS(Eigen::half)
//     STREAMATTN_CUDA_INSTANTIATE_INT8_KV_KERNELS(Eigen::half)  // if it runs on int8 K/V caches
#pragma once

#include <cstdint>

#include "additive_launch.cuh"
#include "attention_launch.cuh"
#include "device_types.cuh"

/// Instantiates every attention and additive kernel for inputs of element
/// type T (float, double, Eigen::half or Eigen::bfloat16). Use at namespace scope, once per
/// type and program.
#define STREAMATTN_CUDA_INSTANTIATE_KERNELS(T)                                                                \
  template void ::streamattn::detail::gpu::launch_attention<::streamattn::detail::gpu::storage_t<T>>(        \
      ::streamattn::detail::gpu::kernel_args<::streamattn::detail::gpu::storage_t<T>>,                       \
      const ::streamattn::detail::gpu::attention_plan&, void*, cudaStream_t, const char*);                 \
  template void ::streamattn::detail::gpu::launch_additive<::streamattn::detail::gpu::storage_t<T>>(         \
      const ::streamattn::detail::gpu::additive_args<::streamattn::detail::gpu::storage_t<T>>&,              \
      const ::streamattn::detail::gpu::additive_plan&, cudaStream_t, const char*);                          \
  template bool ::streamattn::detail::gpu::tensor_core_pooling_compiled<                                      \
      ::streamattn::detail::gpu::storage_t<T>>(const char*);

/// Instantiates the attention kernels for queries of element type T over an
/// int8 (quantised) K/V cache. Use at namespace scope, once per type and
/// program, beside STREAMATTN_CUDA_INSTANTIATE_KERNELS(T).
#define STREAMATTN_CUDA_INSTANTIATE_INT8_KV_KERNELS(T)                                                        \
  template void                                                                                               \
  ::streamattn::detail::gpu::launch_attention<::streamattn::detail::gpu::storage_t<T>, ::std::int8_t>(        \
      ::streamattn::detail::gpu::kernel_args<::streamattn::detail::gpu::storage_t<T>, ::std::int8_t>,         \
      const ::streamattn::detail::gpu::attention_plan&, void*, cudaStream_t, const char*);
