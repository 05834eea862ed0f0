// attention(streamattn::cuda, ...): the overloads the public entry point finds
// by argument-dependent lookup once <streamattn/cuda.cuh> is included. They
// check what only the GPU side can check (operands readable by the device),
// plan on the host from the device's limits, find or allocate the workspace
// (split-KV partials, packed starts and block table) and launch; all before
// returning, nothing synchronises.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include <cuda_runtime_api.h>

#include "../attention.hpp"
#include "../detail/attention_params.hpp"
#include "../detail/validate_attention.hpp"
#include "attention_launch.cuh"
#include "attention_launch_config.cuh"
#include "attention_plan.hpp"
#include "backend.cuh"
#include "current_device.cuh"
#include "device_buffer.cuh"
#include "element_kind.hpp"
#include "error.cuh"
#include "kernel_args.cuh"
#include "pointer_check.cuh"

namespace streamattn::detail {
namespace gpu {

/// Whether `ptr` is device memory (cudaMalloc), which the host must not
/// read. False for host, pinned and managed memory, and where the runtime
/// cannot tell (no device: the call itself will then say what is wrong).
inline bool is_device_memory(const void* ptr) {
  if (ptr == nullptr) return false;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, ptr) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice;
}

/// The whole GPU call with explicit plan overrides (tests force split-KV and
/// the FMA kernel through this; attention_impl passes none).
template <class T, class Tout, class Tkv>
void run_attention(const attention_params<T, Tout, Tkv>& p, cudaStream_t stream, const plan_overrides& overrides = {}) {
  const char* const fn = attention_function;
  // A block table in device memory is read where it is and its entries are
  // not checked (the kernels clamp them); one in host memory is checked and
  // copied. Without key_lengths an item reads every page its table row
  // lists, so the host checks them all, as the CPU backends do. key_lengths
  // live in device memory: the host cannot tell which entries a call reads,
  // so the copy the kernels get has entries outside the pool replaced
  // (index_tables.hpp).
  const bool table_on_device = is_device_memory(p.block_table);
  if (!p.key_lengths && !table_on_device) check_index_values(fn, p);
  // Nothing to write: no launch, and no CUDA call that could fail.
  if (p.batch == 0 || p.hq == 0 || p.nq == 0) return;
  const current_device device = query_current_device(fn);
  check_operands_on_device(fn, p, device.id);
  if (table_on_device) check_device_readable(fn, "block_table", p.block_table, device.id);
  const attention_plan plan = plan_for(p, device.limits, overrides, table_on_device);
  if (plan.index_tables.count() > 0) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    throw_on_error(cudaStreamIsCapturing(stream, &capture), fn, "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone)
      fail(fn,
           "a call with packed sequences or a block table in host memory cannot be captured into a CUDA graph: it "
           "copies their values from host memory, which a replay would read again after the call has freed it "
           "(a block table in device memory is read where it is)");
  }

  void* workspace = nullptr;
  std::optional<device_buffer> owned;
  const std::size_t need = plan.workspace_bytes();
  if (need > 0) {
    if (p.scratch.data != nullptr && p.scratch.bytes >= need &&
        reinterpret_cast<std::uintptr_t>(p.scratch.data) % 256 == 0) {
      check_device_readable(fn, "scratch", p.scratch.data, device.id);
      workspace = p.scratch.data;
    } else {
      owned.emplace(need, stream, fn);
      workspace = owned->data();
    }
  }
  launch_attention(make_kernel_args(p), plan, workspace, stream, fn);
}

}  // namespace gpu

/// The cuda backend reads packed starts on the host (it checks them, sizes
/// the grid by the longest item and copies them to the device itself), where
/// FlashAttention takes them in device memory with the longest length beside
/// them: such a pointer is refused before anything reads it. (A block table
/// may be either: see run_attention.)
inline void check_host_arrays(cuda_t, const char* fn, const attention_options& opts, host_arrays_check) {
  auto check = [&](const char* name, const void* ptr) {
    if (gpu::is_device_memory(ptr))
      fail(fn, name,
           " points to device memory, but the cuda backend reads packed starts on the host (it checks them, sizes "
           "the grid by the longest sequence and copies them to the device itself): pass them in host memory");
  };
  check("query_starts", opts.query_starts.data);
  check("key_starts", opts.key_starts.data);
}

/// Softmax attention on the GPU; see attention.hpp. Views must point to
/// memory the current device can read; the call is asynchronous on
/// `backend.stream`. `q_chunk`, `kv_chunk` and `threads` are CPU tiling
/// hints and are ignored here.
template <class T, class Tout, class Tkv>
void attention_impl(cuda_t backend, const attention_params<T, Tout, Tkv>& p) {
  gpu::run_attention(p, backend.stream);
}

/// Device bytes of `opts.scratch` that let a call run without allocating
/// (nonzero when the key axis is split or the call has packed starts or a
/// block table; 256-byte aligned scratch).
template <class T, class Tout, class Tkv>
std::size_t attention_workspace_bytes(cuda_t, const attention_params<T, Tout, Tkv>& p) {
  if (p.batch == 0 || p.hq == 0 || p.nq == 0) return 0;
  const gpu::current_device device = gpu::query_current_device(gpu::attention_function);
  return gpu::plan_for(p, device.limits, {}, gpu::is_device_memory(p.block_table)).workspace_bytes();
}

}  // namespace streamattn::detail
