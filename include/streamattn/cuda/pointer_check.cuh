// Host-side argument checks specific to the GPU: every operand must be memory
// the current device can read. Catching a host pointer here gives a sentence
// instead of an "illegal memory access" from a kernel that already ran.
#pragma once

#include <cuda_runtime_api.h>

#include "../detail/attention_params.hpp"
#include "../detail/check.hpp"
#include "error.cuh"

namespace streamattn::detail::gpu {

/// Throws std::invalid_argument unless `ptr` (if not null) is device memory of
/// `device`, managed memory, or pinned host memory mapped at the same address.
inline void check_device_readable(const char* function, const char* name, const void* ptr, int device) {
  if (ptr == nullptr) return;
  cudaPointerAttributes a{};
  throw_on_error(cudaPointerGetAttributes(&a, ptr), function, "cudaPointerGetAttributes");
  switch (a.type) {
    case cudaMemoryTypeUnregistered:
      fail(function, name,
           " points to ordinary host memory, which the GPU cannot read; the cuda backend needs device memory "
           "(cudaMalloc), managed memory (cudaMallocManaged) or mapped pinned host memory");
    case cudaMemoryTypeHost:
      if (a.devicePointer != ptr)
        fail(function, name, " is pinned host memory that the device sees at another address; pass its device pointer");
      break;
    case cudaMemoryTypeDevice:
      if (a.device != device)
        fail(function, name, " lives on device ", a.device, " but the current device is ", device,
             " (cudaSetDevice before the call)");
      break;
    case cudaMemoryTypeManaged:
      break;
  }
}

template <class T, class Tout, class Tkv>
void check_operands_on_device(const char* function, const attention_params<T, Tout, Tkv>& p, int device) {
  check_device_readable(function, "q", p.q, device);
  check_device_readable(function, "k", p.k, device);
  check_device_readable(function, "v", p.v, device);
  check_device_readable(function, "out", p.out, device);
  check_device_readable(function, "bias", p.bias, device);
  check_device_readable(function, "mask", p.mask, device);
  check_device_readable(function, "alibi_slopes", p.alibi_slopes, device);
  check_device_readable(function, "key_lengths", p.key_lengths, device);
  check_device_readable(function, "k_scale", p.k_scale, device);
  check_device_readable(function, "v_scale", p.v_scale, device);
  check_device_readable(function, "lse", p.lse, device);
}

}  // namespace streamattn::detail::gpu
