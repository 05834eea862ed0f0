// Copying host values to the device without making the caller wait.
// cudaMemcpyAsync from pageable memory does not promise to have read its
// source when it returns (where the GPU can address pageable memory it may
// read it in place, later), so the values must outlive the copy, not the
// call: they move to a heap buffer that a host function enqueued after the
// copy frees once the copy has run.
#pragma once

#include <vector>

#include <cuda_runtime_api.h>

#include "error.cuh"

namespace streamattn::detail::gpu {

template <class T>
void CUDART_CB free_staged_values(void* staged) {
  delete static_cast<std::vector<T>*>(staged);
}

/// Enqueues on `stream` the copy of `values` to `device` (values.size()
/// elements); returns without waiting for it.
template <class T>
void upload_async(T* device, std::vector<T> values, cudaStream_t stream, const char* function, const char* what) {
  if (values.empty()) return;
  auto* staged = new std::vector<T>(std::move(values));
  const cudaError_t copied =
      cudaMemcpyAsync(device, staged->data(), staged->size() * sizeof(T), cudaMemcpyHostToDevice, stream);
  if (copied != cudaSuccess) {
    delete staged;
    throw_on_error(copied, function, what);
  }
  const cudaError_t queued = cudaLaunchHostFunc(stream, &free_staged_values<T>, staged);
  if (queued != cudaSuccess) {
    (void)cudaStreamSynchronize(stream);  // the copy may still read `staged`
    delete staged;
    throw_on_error(queued, function, "cudaLaunchHostFunc");
  }
}

}  // namespace streamattn::detail::gpu
