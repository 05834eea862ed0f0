// The one kernel behind additive pooling and Fastformer on the GPU: block
// blockIdx.x of a step (additive_programs.cuh), with the plan's dynamic
// shared memory. One kernel per input storage type, whatever the step or
// the output type, keeps nvcc's work small. Launched by additive_launch.cuh
// (and by the test suite's SIMT emulator, which is why no launch is here).
#pragma once

#include "additive_programs.cuh"
#include "dynamic_shared_memory.cuh"

namespace streamattn::detail::gpu {

template <class S>
__global__ void __launch_bounds__(additive_block_threads) additive_kernel(const additive_args<S> args,
                                                                          additive_step step) {
  run_additive_block(args, step, static_cast<index_t>(blockIdx.x),
                     reinterpret_cast<device_accum_t<S>*>(dynamic_shared_memory()));
}

}  // namespace streamattn::detail::gpu
