// additive_pool / additive_prefix_pool / fastformer_attention on
// streamattn::cuda: the overloads the public entry points find by
// argument-dependent lookup once <streamattn/cuda.cuh> is included. They
// check that every operand is device-readable, plan on the host, allocate
// the (N-independent) workspace in stream order and enqueue the steps;
// nothing synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include "../detail/additive_params.hpp"
#include "additive_args.cuh"
#include "additive_launch.cuh"
#include "additive_plan.hpp"
#include "backend.cuh"
#include "current_device.cuh"
#include "device_buffer.cuh"
#include "pointer_check.cuh"

namespace streamattn::detail {
namespace gpu {

template <class S>
const char* additive_function(const additive_args<S>& a) {
  switch (a.job) {
    case additive_job::pool: return "streamattn::additive_pool (cuda)";
    case additive_job::prefix_pool: return "streamattn::additive_prefix_pool (cuda)";
    default: return "streamattn::fastformer_attention (cuda)";
  }
}

/// Every pointer the kernels read or write. (The score biases cancel in the
/// softmax and are never read on the device.)
template <class S>
void check_additive_operands(const char* fn, const additive_args<S>& a, int device) {
  const bool fastformer = a.job == additive_job::fastformer;
  check_device_readable(fn, fastformer ? "q" : "x", a.q.data, device);
  check_device_readable(fn, fastformer ? "weights.query_att" : "w", a.query_att.data, device);
  check_device_readable(fn, "mask", a.mask.data, device);
  check_device_readable(fn, "out", a.out, device);
  if (!fastformer) return;
  check_device_readable(fn, "k", a.k.data, device);
  check_device_readable(fn, "v", a.v.data, device);
  check_device_readable(fn, "weights.key_att", a.key_att.data, device);
  check_device_readable(fn, "weights.transform", a.transform, device);
  check_device_readable(fn, "weights.transform_bias", a.transform_bias, device);
}

template <class S>
void run_additive(additive_args<S> a, cudaStream_t stream) {
  const char* const fn = additive_function(a);
  if (nothing_to_write(a)) return;
  const current_device device = query_current_device(fn);
  check_additive_operands(fn, a, device.id);
  const bool tensor_cores = a.tensor_cores && tensor_core_pooling_compiled<S>(fn);  // the plan checks the GPU
  const additive_plan plan = plan_additive(fn, a.shape, a.causal, sizeof(device_accum_t<S>), device.limits,
                                           {a.has_transform(), a.streaming, tensor_cores});
  const device_buffer workspace(plan.workspace_bytes(), stream, fn);
  apply_plan(a, plan, workspace.data());
  launch_additive(a, plan, stream, fn);
}

}  // namespace gpu

/// Additive pooling on the GPU; see additive.hpp. Views (and the mask and
/// weights) must be device-readable; asynchronous on `backend.stream`.
/// `threads` is a CPU option and is ignored.
template <class T, class W, class Tout>
void additive_pool_impl(cuda_t backend, const additive_pool_params<T, W, Tout>& p) {
  gpu::run_additive(gpu::make_additive_args(p), backend.stream);
}

/// Fastformer on the GPU; see additive.hpp.
template <class T, class W, class Tout>
void fastformer_impl(cuda_t backend, const fastformer_params<T, W, Tout>& p) {
  gpu::run_additive(gpu::make_additive_args(p), backend.stream);
}

}  // namespace streamattn::detail
