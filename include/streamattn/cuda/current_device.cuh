// The current CUDA device and the limits the planners need.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "attention_plan.hpp"
#include "error.cuh"

namespace streamattn::detail::gpu {

struct current_device {
  int id = 0;
  device_limits limits;
};

inline current_device query_current_device(const char* function) {
  current_device d;
  throw_on_error(cudaGetDevice(&d.id), function, "cudaGetDevice");
  int sms = 0, major = 0, minor = 0, shared = 0;
  throw_on_error(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, d.id), function,
                 "cudaDeviceGetAttribute(MultiProcessorCount)");
  throw_on_error(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d.id), function,
                 "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
  throw_on_error(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d.id), function,
                 "cudaDeviceGetAttribute(ComputeCapabilityMinor)");
  throw_on_error(cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, d.id), function,
                 "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  d.limits.sm_count = sms;
  d.limits.compute_capability = major * 10 + minor;
  d.limits.max_shared_bytes = static_cast<std::size_t>(shared);
  // STREAMATTN_CUDA_WGMMA: the program's CUDA code includes sm_90a (the
  // CMake target defines it when STREAMATTN_CUDA_ARCHITECTURES lists 90a),
  // whose code runs on compute capability 9.0 only.
#if defined(STREAMATTN_CUDA_WGMMA)
  d.limits.wgmma = d.limits.compute_capability == 90;
#endif
  return d;
}

}  // namespace streamattn::detail::gpu
