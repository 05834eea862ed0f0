// The sm_90a instructions of the Hopper attention kernel, as inline PTX:
// wgmma.mma_async (a warpgroup of 4 warps multiplies a 64 x 16 A by a
// 16 x N B from shared memory, float accumulation), its fence / commit /
// wait, and the proxy fence that orders cp.async writes before wgmma reads.
// Compiled for anything but sm_90a the bodies are empty and the kernel that
// uses them traps; the dispatcher never launches it there (kernel_choice.hpp).
//
// STREAMATTN_CUDA_EMULATOR: compiled by a host compiler for the SIMT
// emulator (tests/cuda/emulator), which defines these instructions from the
// PTX ISA in namespace streamattn::detail::gpu::emulated.
//
// Operands in shared memory are described by a 64-bit matrix descriptor
// (PTX ISA, "Matrix Descriptor Format"). This kernel uses the layout without
// swizzling: the matrix is cut into "core matrices" of 8 rows x 16 bytes
// (8 x 8 16-bit elements), each stored as 128 contiguous bytes, and the
// descriptor gives the byte distance between core matrices adjacent along K
// (the leading byte offset) and along M or N (the stride byte offset), for
// operands stored K-major (a core-matrix row runs along K) and MN-major (it
// runs along M or N) alike. core_matrix_tile.hpp lays the tiles out so.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core_matrix_tile.hpp"
#include "mma.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define STREAMATTN_CUDA_SM90A 1
#endif

namespace streamattn::detail::gpu {

/// The address of shared memory `p` in the shared window (what descriptors hold).
__device__ __forceinline__ unsigned shared_window_address(const void* p) {
#if defined(STREAMATTN_CUDA_EMULATOR)
  return emulated::shared_address(p);
#else
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
#endif
}

/// Descriptor of a matrix at `smem` in the no-swizzle core-matrix layout.
__device__ __forceinline__ std::uint64_t matrix_descriptor(const void* smem, unsigned k_step_bytes,
                                                           unsigned mn_step_bytes) {
  return encode_matrix_descriptor(shared_window_address(smem), k_step_bytes, mn_step_bytes);
}

/// Descriptor of a K-major operand (Q or K of Q K^T): the 16 columns from
/// `col` of a core-matrix tile of `rows` rows, from row `row` on. Core
/// matrices are Rows * 16 bytes apart along K, 128 along M or N.
template <class S>
__device__ __forceinline__ std::uint64_t k_major_descriptor(const S* tile, int rows, int row, int col) {
  return matrix_descriptor(tile + core_matrix_offset(rows, row, col), core_matrix_column_step_bytes(rows),
                           core_matrix_bytes);
}

/// Descriptor of an N-major operand (V of P V): the 16 rows (keys) from
/// `row` of a core-matrix tile of `rows` rows, every column. Core matrices
/// are 128 bytes apart along K (the rows), Rows * 16 along N.
template <class S>
__device__ __forceinline__ std::uint64_t mn_major_descriptor(const S* tile, int rows, int row) {
  return matrix_descriptor(tile + core_matrix_offset(rows, row, 0), core_matrix_bytes,
                           core_matrix_column_step_bytes(rows));
}

/// Orders this thread's completed generic-proxy writes of shared memory
/// (stores, cp.async) before later wgmma reads of it (the async proxy); a
/// barrier must still follow before other threads' wgmmas read the data.
__device__ __forceinline__ void fence_shared_for_wgmma() {
#if defined(STREAMATTN_CUDA_SM90A)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// wgmma.fence: required before the first wgmma of a sequence whose
/// accumulator or A registers other instructions have written.
__device__ __forceinline__ void wgmma_fence() {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::wgmma_fence();
#elif defined(STREAMATTN_CUDA_SM90A)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

/// Closes the wgmmas issued since the last commit into one group.
__device__ __forceinline__ void wgmma_commit() {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::wgmma_commit();
#elif defined(STREAMATTN_CUDA_SM90A)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

/// Waits until at most `Pending` committed groups are still running; until
/// then their accumulator and A registers must not be touched.
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
  static_assert(Pending >= 0 && Pending <= 7, "wgmma.wait_group takes 0..7");
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::wgmma_wait(Pending);
#elif defined(STREAMATTN_CUDA_SM90A)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
#endif
}

/// wgmma_wait<0>, kept after the instructions that compute `x`. ptxas
/// places a wait where its latency model says the wgmmas are done, which
/// put the attention kernel's softmax (exponents and row sums) after the
/// wait for P V it is meant to overlap, so that the tensor cores sat idle
/// through it. A branch on a warp vote over x makes the wait depend on x:
/// both ways wait, and the second is never taken, since x is a sum of
/// softmax weights and float arithmetic on the GPU never yields the bit
/// pattern 0xffffffff (its NaNs are 0x7fffffff). The vote keeps the branch
/// warp-uniform, so ptxas does not serialise the wgmmas as it does around
/// a wait in divergent code.
__device__ __forceinline__ void wgmma_wait_all_after(float x) {
#if defined(STREAMATTN_CUDA_EMULATOR)
  (void)x;
  emulated::wgmma_wait(0);
#elif defined(STREAMATTN_CUDA_SM90A)
  if (__all_sync(0xffffffffu, __float_as_uint(x) != 0xffffffffu)) {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  } else {
    __threadfence_block();  // makes this way differ, so that no compiler merges the two
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
#else
  (void)x;
#endif
}

/// A compiler-only barrier on registers a wgmma reads or writes
/// asynchronously: the asm "reads and writes" them, so no ordinary
/// instruction on them moves across the wgmma issue or the wait it is
/// placed beside (CUTLASS's warpgroup_fence_operand). Emits no instruction.
template <int N>
__device__ __forceinline__ void pin_operands(float (&x)[N][4]) {
#if defined(STREAMATTN_CUDA_SM90A) && !defined(STREAMATTN_CUDA_EMULATOR)
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int c = 0; c < 4; ++c) asm volatile("" : "+f"(x[n][c])::"memory");
#else
  (void)x;
#endif
}
template <int N>
__device__ __forceinline__ void pin_operands(std::uint32_t (&x)[N][4]) {
#if defined(STREAMATTN_CUDA_SM90A) && !defined(STREAMATTN_CUDA_EMULATOR)
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int c = 0; c < 4; ++c) asm volatile("" : "+r"(x[n][c])::"memory");
#else
  (void)x;
#endif
}

/// The PTX operand types of a 16-bit input type, float accumulation.
template <class S>
inline constexpr bool is_bf16_v = std::is_same_v<S, __nv_bfloat16>;

#define STREAMATTN_WGMMA_ACC8(d, n)                                                                                    \
  "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3]), "+f"(d[n + 1][0]), "+f"(d[n + 1][1]), "+f"(d[n + 1][2]), \
      "+f"(d[n + 1][3])
#define STREAMATTN_WGMMA_ACC32(d) \
  STREAMATTN_WGMMA_ACC8(d, 0), STREAMATTN_WGMMA_ACC8(d, 2), STREAMATTN_WGMMA_ACC8(d, 4), STREAMATTN_WGMMA_ACC8(d, 6)
#define STREAMATTN_WGMMA_ACC64(d)                                                                                     \
  STREAMATTN_WGMMA_ACC32(d), STREAMATTN_WGMMA_ACC8(d, 8), STREAMATTN_WGMMA_ACC8(d, 10), STREAMATTN_WGMMA_ACC8(d, 12), \
      STREAMATTN_WGMMA_ACC8(d, 14)
#define STREAMATTN_WGMMA_REGS32                                                                                \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define STREAMATTN_WGMMA_REGS64                                                                                \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "  \
  "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d (+)= A B for the warpgroup, A (64 x 16) and B (16 x N) both in shared
// memory, K-major (TransB = 0) or B N-major (1). `accumulate` false: d = A B.
#define STREAMATTN_WGMMA_SS(N, REGS, ACC, TYPES, A, B, SCALE, TRANS)                                                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " SCALE                                                            \
               ", 0;\n"                                                                                             \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32" TYPES " " REGS ", " A ", " B ", p, 1, 1, 0, " TRANS \
               ";\n}\n"                                                                                             \
               : ACC(d)                                                                                             \
               : "l"(a_desc), "l"(b_desc), "r"(static_cast<int>(accumulate)), "n"(TransB))
// The same with A from registers, in mma.sync's A fragment layout per warp.
#define STREAMATTN_WGMMA_RS(N, REGS, ACC, TYPES, A, B, SCALE, TRANS)                                             \
  asm volatile(                                                                                                  \
      "{\n.reg .pred p;\nsetp.ne.b32 p, " SCALE                                                                  \
      ", 0;\n"                                                                                                   \
      "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32" TYPES " " REGS ", " A ", " B ", p, 1, 1, " TRANS ";\n}\n" \
      : ACC(d)                                                                                                   \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(static_cast<int>(accumulate)), "n"(TransB))

/// d (+)= A B, A and B described in shared memory; d holds the warp's
/// 16 x N slice of the 64 x N result in mma.sync's accumulator layout
/// (d[n] is columns [8n, 8n + 8)).
template <class S, int TransB, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], std::uint64_t a_desc, std::uint64_t b_desc,
                                         bool accumulate) {
  static_assert(N == 64 || N == 128, "compiled for N = 64 and 128");
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::wgmma(&d[0][0], N, nullptr, a_desc, b_desc, accumulate, TransB != 0, is_bf16_v<S>);
#elif defined(STREAMATTN_CUDA_SM90A)
  if constexpr (N == 64) {
    if constexpr (is_bf16_v<S>)
      STREAMATTN_WGMMA_SS(64, STREAMATTN_WGMMA_REGS32, STREAMATTN_WGMMA_ACC32, ".bf16.bf16", "%32", "%33", "%34",
                          "%35");
    else
      STREAMATTN_WGMMA_SS(64, STREAMATTN_WGMMA_REGS32, STREAMATTN_WGMMA_ACC32, ".f16.f16", "%32", "%33", "%34", "%35");
  } else {
    if constexpr (is_bf16_v<S>)
      STREAMATTN_WGMMA_SS(128, STREAMATTN_WGMMA_REGS64, STREAMATTN_WGMMA_ACC64, ".bf16.bf16", "%64", "%65", "%66",
                          "%67");
    else
      STREAMATTN_WGMMA_SS(128, STREAMATTN_WGMMA_REGS64, STREAMATTN_WGMMA_ACC64, ".f16.f16", "%64", "%65", "%66", "%67");
  }
#endif
}

/// d (+)= A B with A from registers (this warp's 16 x 16 slice, mma.sync's
/// A fragment layout) and B described in shared memory.
template <class S, int TransB, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 8][4], const std::uint32_t (&a)[4], std::uint64_t b_desc,
                                         bool accumulate) {
  static_assert(N == 64 || N == 128, "compiled for N = 64 and 128");
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::wgmma(&d[0][0], N, a, 0, b_desc, accumulate, TransB != 0, is_bf16_v<S>);
#elif defined(STREAMATTN_CUDA_SM90A)
  if constexpr (N == 64) {
    if constexpr (is_bf16_v<S>)
      STREAMATTN_WGMMA_RS(64, STREAMATTN_WGMMA_REGS32, STREAMATTN_WGMMA_ACC32, ".bf16.bf16", "{%32, %33, %34, %35}",
                          "%36", "%37", "%38");
    else
      STREAMATTN_WGMMA_RS(64, STREAMATTN_WGMMA_REGS32, STREAMATTN_WGMMA_ACC32, ".f16.f16", "{%32, %33, %34, %35}",
                          "%36", "%37", "%38");
  } else {
    if constexpr (is_bf16_v<S>)
      STREAMATTN_WGMMA_RS(128, STREAMATTN_WGMMA_REGS64, STREAMATTN_WGMMA_ACC64, ".bf16.bf16", "{%64, %65, %66, %67}",
                          "%68", "%69", "%70");
    else
      STREAMATTN_WGMMA_RS(128, STREAMATTN_WGMMA_REGS64, STREAMATTN_WGMMA_ACC64, ".f16.f16", "{%64, %65, %66, %67}",
                          "%68", "%69", "%70");
  }
#endif
}

#undef STREAMATTN_WGMMA_SS
#undef STREAMATTN_WGMMA_RS
#undef STREAMATTN_WGMMA_REGS32
#undef STREAMATTN_WGMMA_REGS64
#undef STREAMATTN_WGMMA_ACC64
#undef STREAMATTN_WGMMA_ACC32
#undef STREAMATTN_WGMMA_ACC8

}  // namespace streamattn::detail::gpu
