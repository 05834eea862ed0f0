// Stream-ordered temporary device memory (cudaMallocAsync / cudaFreeAsync):
// the split-KV workspace when the caller passes no scratch big enough, and
// the per-chunk states of additive pooling. Freed in stream order, so it is
// safe to drop right after enqueueing its users.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "error.cuh"

namespace streamattn::detail::gpu {

class device_buffer {
 public:
  device_buffer() = default;
  device_buffer(std::size_t bytes, cudaStream_t stream, const char* function) : stream_(stream) {
    if (bytes == 0) return;
    throw_on_error(cudaMallocAsync(&data_, bytes, stream), function, "cudaMallocAsync of the workspace");
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() {
    // A destructor cannot throw; a failing free leaves the error for the
    // caller's next CUDA call to report.
    if (data_) (void)cudaFreeAsync(data_, stream_);
  }

  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace streamattn::detail::gpu
