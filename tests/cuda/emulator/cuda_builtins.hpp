// What nvcc gives device code for free, for a host compiler: threadIdx and
// friends, __syncthreads, __syncwarp, __shfl_xor_sync, __all_sync and shared memory,
// backed by the SIMT emulator (scheduler.hpp). Include this before any
// streamattn kernel header; it also defines STREAMATTN_CUDA_EMULATOR, which
// makes the kernels' PTX helpers (mma.cuh) and dynamic shared memory
// (device_types.cuh) call the emulated forms declared at the end.
#pragma once

#if defined(__CUDACC__)
#error "cuda_builtins.hpp emulates CUDA for host compilers; nvcc has the real built-ins"
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>

// CUDA's headers know host compilers: they define __device__, __global__,
// __forceinline__ and __align__ for them, and the half/bfloat16 conversions
// have host implementations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "scheduler.hpp"

#define STREAMATTN_CUDA_EMULATOR 1

// Static shared memory: one instance per OS thread, shared by the fibers of
// the block running on it (blocks run one after another).
#undef __shared__
#define __shared__ thread_local
#define __launch_bounds__(...)

#define threadIdx (::streamattn::testing::emulator::thread_index())
#define blockIdx (::streamattn::testing::emulator::block_index())
#define blockDim (::streamattn::testing::emulator::block_dim())
#define gridDim (::streamattn::testing::emulator::grid_dim())

inline void __syncthreads() {
  ::streamattn::testing::emulator::block_barrier();
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::streamattn::testing::emulator::warp_collective(
      "__syncwarp", mask,
      [](const ::streamattn::testing::emulator::lane_data*, ::streamattn::testing::emulator::lane_data*,
         std::uint64_t) {},
      0, nullptr, 0, nullptr, 0);
}

/// Lane l receives `value` of lane l ^ lane_mask.
template <class T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "a shuffled value is one or two registers");
  using namespace ::streamattn::testing::emulator;
  if (width != warp_size) kernel_fault("__shfl_xor_sync with a width below 32, which the emulator does not model");
  T result;
  warp_collective(
      "__shfl_xor_sync", mask,
      [](const lane_data* in, lane_data* out, std::uint64_t xor_mask) {
        for (std::uint64_t lane = 0; lane < warp_size; ++lane) out[lane] = in[(lane ^ xor_mask) % warp_size];
      },
      static_cast<std::uint64_t>(lane_mask), &value, sizeof value, &result, sizeof result);
  return result;
}

/// Bit l set for every lane l whose `predicate` is nonzero, in every lane.
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  using namespace ::streamattn::testing::emulator;
  unsigned result = 0;
  warp_collective(
      "__ballot_sync", mask,
      [](const lane_data* in, lane_data* out, std::uint64_t) {
        unsigned bits = 0;
        for (int lane = 0; lane < warp_size; ++lane) {
          int p = 0;
          std::memcpy(&p, in[lane].bytes, sizeof p);
          bits |= (p != 0 ? 1u : 0u) << lane;
        }
        for (int lane = 0; lane < warp_size; ++lane) std::memcpy(out[lane].bytes, &bits, sizeof bits);
      },
      0, &predicate, sizeof predicate, &result, sizeof result);
  return result;
}

/// Nonzero for every lane when `predicate` is nonzero in every lane.
inline int __all_sync(unsigned mask, int predicate) {
  using namespace ::streamattn::testing::emulator;
  int result = 0;
  warp_collective(
      "__all_sync", mask,
      [](const lane_data* in, lane_data* out, std::uint64_t) {
        int all = 1;
        for (int lane = 0; lane < warp_size; ++lane) {
          int p = 0;
          std::memcpy(&p, in[lane].bytes, sizeof p);
          all &= p != 0 ? 1 : 0;
        }
        for (int lane = 0; lane < warp_size; ++lane) std::memcpy(out[lane].bytes, &all, sizeof all);
      },
      0, &predicate, sizeof predicate, &result, sizeof result);
  return result;
}

namespace streamattn::detail::gpu::emulated {

/// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 {c}, {a}, {b0, b1}, {c}.
void mma_m16n8k16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1, bool bfloat16);
/// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {c}, {a}, {b0, b1}, {c}.
void mma_m16n8k8_tf32(float (&c)[4], const float (&a)[4], float b0, float b1);
/// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {r}, [row].
void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row);
/// cp.async.cg.shared.global [shared], [global], 16, valid ? 16 : 0.
void copy_16_async(void* shared, const void* global, bool valid);
/// cp.async.wait_group 0.
void copy_async_wait_all();
/// The offset of `p` in the block's dynamic shared memory (the shared
/// window address a matrix descriptor holds).
unsigned shared_address(const void* p);
/// wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}: the calling warp's
/// 16 rows of d (+)= A B, d being N / 2 floats in mma.sync's accumulator
/// layout; A from `a` (4 registers, mma.sync's A layout) or, when a is null,
/// from a_desc; B from b_desc, N-major when trans_b. Performed, reading d, a
/// and shared memory then, at the wgmma_wait that covers it.
void wgmma(float* d, int n, const std::uint32_t* a, std::uint64_t a_desc, std::uint64_t b_desc, bool accumulate,
           bool trans_b, bool bfloat16);
/// wgmma.fence, wgmma.commit_group and wgmma.wait_group (which performs the
/// committed wgmmas but those of the newest `pending_groups` groups).
void wgmma_fence();
void wgmma_commit();
void wgmma_wait(int pending_groups);
/// The block's `extern __shared__` bytes.
inline unsigned char* dynamic_shared_memory() {
  return ::streamattn::testing::emulator::dynamic_shared_memory();
}

}  // namespace streamattn::detail::gpu::emulated
