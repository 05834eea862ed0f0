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
  return d;
}

}  // namespace streamattn::detail::gpu
