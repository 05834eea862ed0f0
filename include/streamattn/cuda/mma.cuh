// The sm_80 instructions the tensor-core kernels are built from, as inline
// PTX: mma.sync m16n8k16 (fp16/bf16 in, float accumulate) and m16n8k8 (TF32,
// the Fastformer pooling's scores), ldmatrix (transposed, for V) and
// cp.async (global -> shared without a register round trip).
// Compiled for an older architecture the kernel body is replaced by a trap;
// the dispatcher never launches it there (kernel_choice.hpp).
//
// STREAMATTN_CUDA_EMULATOR: the kernels are being compiled by a host
// compiler for the test suite's SIMT emulator (tests/cuda/emulator), which
// declares these instructions, defined from the PTX ISA, in namespace
// streamattn::detail::gpu::emulated before including any kernel.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../config.hpp"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define STREAMATTN_CUDA_NO_SM80 1
#endif

namespace streamattn::detail::gpu {

/// c += a * b for one 16x8x16 tile. Fragment ownership (PTX ISA, "Matrix
/// fragments for mma.m16n8k16"), with g = lane / 4 and t = lane % 4:
///   a[0]: A(g, 2t..2t+1)   a[1]: A(g+8, 2t..)   a[2]: A(g, 2t+8..)   a[3]: A(g+8, 2t+8..)
///   b0:   B(2t..2t+1, g)   b1:   B(2t+8.., g)
///   c[0], c[1]: C(g, 2t), C(g, 2t+1)            c[2], c[3]: C(g+8, 2t), C(g+8, 2t+1)
/// each 32-bit register holding two consecutive 16-bit elements, the lower
/// index in the low half.
template <class S>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                            std::uint32_t b1);

template <>
__device__ __forceinline__ void mma_16x8x16<__half>(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                                    std::uint32_t b1) {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::mma_m16n8k16(c, a, b0, b1, /*bfloat16=*/false);
#elif !defined(STREAMATTN_CUDA_NO_SM80)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

template <>
__device__ __forceinline__ void mma_16x8x16<__nv_bfloat16>(float (&c)[4], const std::uint32_t (&a)[4],
                                                           std::uint32_t b0, std::uint32_t b1) {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::mma_m16n8k16(c, a, b0, b1, /*bfloat16=*/true);
#elif !defined(STREAMATTN_CUDA_NO_SM80)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/// The bits of finite x rounded to TF32 (10 mantissa bits, to nearest, ties
/// away from zero, as cvt.rna.tf32.f32 rounds), the low 13 bits zero: half
/// a TF32 unit added to the magnitude, then truncated. Two integer
/// operations, where nvcc's cvt.rna.tf32 is four instructions on sm_90.
STREAMATTN_HOST_DEVICE std::uint32_t tf32_rounded_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits + 0x1000u) & 0xffffe000u;
}

STREAMATTN_HOST_DEVICE float float_of_bits(std::uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

/// x rounded to TF32 (tf32_rounded_bits; NaN and inf stay). A value and the
/// TF32 rounding of what this one loses (x - to_tf32(x), exact in float)
/// carry x to about 2^-22 through the 3xTF32 products of mma_16x8x8_tf32.
STREAMATTN_HOST_DEVICE float to_tf32(float x) {
  return std::isfinite(x) ? float_of_bits(tf32_rounded_bits(x)) : x;
}

/// x as the sum of two TF32 operands for mma_16x8x8_tf32: `big`, x rounded
/// to TF32 (tf32_rounded_bits), and `small` = x - big, exact in float, whose
/// low 13 bits the MMA ignores (so |x - big - small as read| < 2^-21 |x|):
/// three instructions in all. A NaN or infinite x leaves a NaN or infinite
/// part, so the products it meets are not finite either; so does a finite x
/// within 2^-12 of the largest float (big rounds to inf), where any score
/// would overflow anyway.
__device__ __forceinline__ void split_tf32(float x, float& big, float& small) {
  big = float_of_bits(tf32_rounded_bits(x));
  small = x - big;
}

/// c += a * b for one 16x8x8 tile of TF32 operands (to_tf32) with float
/// accumulation. Fragment ownership (PTX ISA, "Matrix fragments for
/// mma.m16n8k8" with .tf32), with g = lane / 4 and t = lane % 4:
///   a[0]: A(g, t)   a[1]: A(g+8, t)   a[2]: A(g, t+4)   a[3]: A(g+8, t+4)
///   b0:   B(t, g)   b1:   B(t+4, g)
///   c as mma_16x8x16's.
__device__ __forceinline__ void mma_16x8x8_tf32(float (&c)[4], const float (&a)[4], float b0, float b1) {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::mma_m16n8k8_tf32(c, a, b0, b1);
#elif !defined(STREAMATTN_CUDA_NO_SM80)
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
        "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)));
#endif
}

/// Two consecutive 16-bit elements of shared memory as one register (the
/// address must be 4-byte aligned: an even element index in an aligned row).
template <class S>
__device__ __forceinline__ std::uint32_t load_pair(const S* smem) {
  return *reinterpret_cast<const std::uint32_t*>(smem);
}

#if !defined(STREAMATTN_CUDA_EMULATOR)
__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
#endif

/// ldmatrix.x4.trans: lanes 8m..8m+7 give the 16-byte row addresses of 8x8
/// matrix m; r[m] receives that matrix transposed in fragment order, i.e.
/// lane (g, t) gets rows 2t and 2t+1 of column g. For V stored [key][dim]
/// this is exactly the B operand of P.V.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem_row) {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::ldmatrix_x4_trans(r, smem_row);
#elif !defined(STREAMATTN_CUDA_NO_SM80)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row)));
#else
  r[0] = r[1] = r[2] = r[3] = 0;
#endif
}

/// 16-byte asynchronous copy global -> shared; with `valid` false nothing is
/// read and the destination is zero-filled (out-of-range rows and padding
/// columns), so the address must merely be a valid one.
__device__ __forceinline__ void copy_16_async(void* smem, const void* gmem, bool valid) {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::copy_16_async(smem, gmem, valid);
#elif !defined(STREAMATTN_CUDA_NO_SM80)
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(smem)), "l"(gmem),
               "r"(bytes)
               : "memory");
#endif
}

/// copy_16_async of 16 bytes that are all there: no source size operand.
__device__ __forceinline__ void copy_16_async(void* smem, const void* gmem) {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::copy_16_async(smem, gmem, true);
#elif !defined(STREAMATTN_CUDA_NO_SM80)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(smem)), "l"(gmem) : "memory");
#endif
}

__device__ __forceinline__ void copy_async_commit() {
#if !defined(STREAMATTN_CUDA_EMULATOR) && !defined(STREAMATTN_CUDA_NO_SM80)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

/// Waits for every committed cp.async group of this thread; a __syncthreads
/// must follow before other threads read the data.
__device__ __forceinline__ void copy_async_wait_all() {
#if defined(STREAMATTN_CUDA_EMULATOR)
  emulated::copy_async_wait_all();
#elif !defined(STREAMATTN_CUDA_NO_SM80)
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#endif
}

/// The two-element vector type of 16-bit type S, rounded from and widened
/// to floats.
template <class S>
struct pair_of;

template <>
struct pair_of<__half> {
  __device__ static __half2 round(float x0, float x1) { return __floats2half2_rn(x0, x1); }
  __device__ static float2 widen(__half2 h) { return __half22float2(h); }
};

template <>
struct pair_of<__nv_bfloat16> {
  __device__ static __nv_bfloat162 round(float x0, float x1) { return __floats2bfloat162_rn(x0, x1); }
  __device__ static float2 widen(__nv_bfloat162 h) { return float2{__bfloat162float(h.x), __bfloat162float(h.y)}; }
};

/// Two probabilities rounded to the nearest 16-bit pair, the lower index in
/// the low half (attention_options::weights_in_input_type).
template <class S>
__device__ __forceinline__ std::uint32_t round_pair(float x0, float x1) {
  const auto h = pair_of<S>::round(x0, x1);
  std::uint32_t r;
  std::memcpy(&r, &h, sizeof r);
  return r;
}

/// Splits two probabilities into a 16-bit "high" pair and the 16-bit rounding
/// of what that pair lost: x = hi + lo up to u^2 (u = the format's unit
/// roundoff). Rounding P to bf16 alone moves each weight by up to 2^-9, which
/// puts near-zero outputs of long rows 10% off the float result (measured on
/// the test shapes by a host simulation); feeding hi and lo through two MMAs
/// keeps P.V at float-like accuracy for the price of a second P.V MMA.
template <class S>
__device__ __forceinline__ void split_pair(float x0, float x1, std::uint32_t& hi, std::uint32_t& lo) {
  const auto h = pair_of<S>::round(x0, x1);
  const float2 back = pair_of<S>::widen(h);
  const auto l = pair_of<S>::round(x0 - back.x, x1 - back.y);  // the differences are exact in float
  std::memcpy(&hi, &h, sizeof hi);
  std::memcpy(&lo, &l, sizeof lo);
}

}  // namespace streamattn::detail::gpu
