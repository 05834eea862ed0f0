// The block's dynamic shared memory (the launch's third <<<>>> argument),
// reached through one function so that every kernel declares it the same way
// and the test suite's SIMT emulator can hand out its own: under
// STREAMATTN_CUDA_EMULATOR, tests/cuda/emulator/cuda_builtins.hpp must come
// first, declaring emulated::dynamic_shared_memory (as for mma.cuh).
#pragma once

namespace streamattn::detail::gpu {

__device__ __forceinline__ unsigned char* dynamic_shared_memory() {
#if defined(STREAMATTN_CUDA_EMULATOR)
  return emulated::dynamic_shared_memory();
#else
  extern __shared__ __align__(16) unsigned char dynamic_shared_bytes[];
  return dynamic_shared_bytes;
#endif
}

}  // namespace streamattn::detail::gpu
