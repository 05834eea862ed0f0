// The kernels behind additive pooling and Fastformer on the GPU: block
// blockIdx.x of a step, as a block program (additive_programs.cuh) or, for
// the steps that stream, as warps streaming tokens (additive_stream.cuh,
// additive_stream_mma.cuh, additive_stream_causal.cuh), with the plan's
// dynamic shared memory. Four kernels per input storage type, whatever the
// step or the output type, keep nvcc's work small.
// Launched by additive_launch.cuh (and by the test suite's SIMT emulator,
// which is why no launch is here).
#pragma once

#include "additive_programs.cuh"
#include "additive_stream_causal.cuh"
#include "additive_stream_mma.cuh"
#include "dynamic_shared_memory.cuh"

namespace streamattn::detail::gpu {

template <class S>
__global__ void __launch_bounds__(additive_block_threads) additive_kernel(const additive_args<S> args,
                                                                          additive_step step) {
  run_additive_block(args, step, static_cast<index_t>(blockIdx.x),
                     reinterpret_cast<device_accum_t<S>*>(dynamic_shared_memory()));
}

/// The steps that stream (streams(), additive_stream.cuh). A kernel of its
/// own: the streaming pooling keeps a batch's scores in registers (one block
/// of 8 warps per multiprocessor), which would cost the block programs
/// their occupancy.
template <class S>
__global__ void __launch_bounds__(additive_block_threads, 1) additive_stream_kernel(const additive_args<S> args,
                                                                                    additive_step step) {
  run_stream_block(args, step, static_cast<index_t>(blockIdx.x),
                   reinterpret_cast<device_accum_t<S>*>(dynamic_shared_memory()));
}

/// The causal rescans that stream (additive_stream_causal.cuh). Their own
/// kernel too: in additive_stream_kernel they took it from 248 registers to
/// 255 with spills in the non-causal pooling's loop.
template <class S>
__global__ void __launch_bounds__(additive_block_threads, 1)
    additive_stream_causal_kernel(const additive_args<S> args, additive_step step) {
  run_stream_causal_block(args, step, static_cast<index_t>(blockIdx.x),
                          reinterpret_cast<device_accum_t<S>*>(dynamic_shared_memory()));
}

/// The chunk poolings that score on tensor cores (additive_stream_mma.cuh).
/// A kernel of its own too: in additive_stream_kernel its registers made
/// ptxas spill in the FMA poolings (255 registers, about 200 bytes).
template <class S>
__global__ void __launch_bounds__(additive_block_threads, 1) additive_stream_mma_kernel(const additive_args<S> args,
                                                                                        additive_step step) {
  run_stream_mma_block(args, step, static_cast<index_t>(blockIdx.x),
                       reinterpret_cast<device_accum_t<S>*>(dynamic_shared_memory()));
}

/// Which of the four kernels runs `step`.
enum class additive_kernel_kind : unsigned char { block_program, stream, stream_mma, stream_causal };
template <class S>
additive_kernel_kind kernel_for(const additive_args<S>& a, additive_step step) {
  if (!streams(a, step)) return additive_kernel_kind::block_program;
  const bool rescan = step == additive_step::causal_key_totals || step == additive_step::causal_outputs ||
                      step == additive_step::causal_prefix_pool;
  if (rescan) return additive_kernel_kind::stream_causal;
  // Every other step that streams but the outputs is a chunk pooling.
  return step != additive_step::outputs && a.stream.mma ? additive_kernel_kind::stream_mma
                                                        : additive_kernel_kind::stream;
}

}  // namespace streamattn::detail::gpu
