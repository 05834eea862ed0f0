// The `cuda` backend tag. Like thrust::cuda::par, it carries the stream the
// work is enqueued on: `streamattn::cuda` uses the default stream,
// `streamattn::cuda.on(s)` stream s. Calls are asynchronous with respect to
// the host; every view must point to memory the current device can read
// (device, managed, or mapped pinned host memory).
#pragma once

#include <cuda_runtime_api.h>

namespace streamattn {

struct cuda_t {
  cudaStream_t stream = nullptr;

  /// The same backend enqueueing on `s`.
  constexpr cuda_t on(cudaStream_t s) const { return cuda_t{s}; }
};

inline constexpr cuda_t cuda{};

}  // namespace streamattn
