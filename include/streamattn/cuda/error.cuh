// CUDA failures become exceptions: an API call's or a launch's error code is
// turned into a `streamattn::cuda_error` whose message names the operation
// and carries CUDA's own name and description of the error.
#pragma once

#include <stdexcept>
#include <string>

#include <cuda_runtime_api.h>

namespace streamattn {

/// Thrown when a CUDA runtime call or a kernel launch fails. Invalid
/// arguments are reported as std::invalid_argument before anything is
/// launched; this is for what only the device can tell.
class cuda_error : public std::runtime_error {
 public:
  cuda_error(cudaError_t code, const std::string& message) : std::runtime_error(message), code_(code) {}
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

namespace detail::gpu {

/// Throws cuda_error for anything but cudaSuccess. Clears the runtime's
/// last-error slot first so a later launch check does not report this
/// error again (sticky errors, which poison the context, stay).
inline void throw_on_error(cudaError_t status, const char* function, const char* operation) {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();
  throw cuda_error(status, std::string(function) + ": " + operation + " failed: " + cudaGetErrorString(status) +
                               " (" + cudaGetErrorName(status) + ")");
}

/// After `kernel<<<...>>>`: reports a launch that did not start (bad
/// configuration, no kernel image for this GPU, ...). Errors raised while the
/// kernel runs surface at the next synchronising call, as with any CUDA call.
inline void throw_on_launch_error(const char* function, const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return;
  throw cuda_error(status, std::string(function) + ": launching " + kernel + " failed: " +
                               cudaGetErrorString(status) + " (" + cudaGetErrorName(status) + ")");
}

}  // namespace detail::gpu
}  // namespace streamattn
