// The vector types of the simd backend. Eigen's packet layer already maps the
// compiler's target flags to AVX-512, AVX2/FMA, AVX, SSE2 or NEON registers,
// so the kernels are written once against it; with vectorisation disabled the
// packet is a plain scalar and everything still works.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <Eigen/Core>

#include "../../config.hpp"
#include "../../detail/simd_diagnostics.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd {

namespace ei = Eigen::internal;

template <class Acc>
using packet = typename ei::packet_traits<Acc>::type;

template <class Acc>
inline constexpr int packet_size = ei::unpacket_traits<packet<Acc>>::size;

/// Full unrolling of the small fixed-trip loops over a micro-kernel's
/// register tile. Without it GCC keeps `P acc[Rows][Packs]` in memory and
/// every multiply-add goes through the stack (measured 1.35x slower in the
/// Fastformer scores, 2x in the decode kernels). In translation units
/// compiled by nvcc (which defines __GNUC__ too) neither nvcc's front end nor
/// its host compiler takes both spellings, so there is none: the CPU kernels
/// are meant to be compiled by the host compiler.
#if defined(__CUDACC__)
#define STREAMATTN_UNROLL_REGISTER_TILE
#elif defined(__clang__)
#define STREAMATTN_UNROLL_REGISTER_TILE _Pragma("unroll")
#elif defined(__GNUC__)
#define STREAMATTN_UNROLL_REGISTER_TILE _Pragma("GCC unroll 16")
#else
#define STREAMATTN_UNROLL_REGISTER_TILE
#endif

/// Architectural vector registers: how large a register tile a micro-kernel
/// may keep live without spilling.
inline constexpr int vector_registers = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS;

/// e^x for x <= 0, the only case softmax needs once the running max has been
/// subtracted. Results below e^-86 (about 4e-38) are returned as exactly 0,
/// so masked scores (-inf) get weight 0 and no subnormal (slow on x86) is ever
/// produced. NaN propagates. Relative error about 1 ulp for float.
///
/// Range reduction x = n ln2 + r with |r| <= ln2/2, then e^r by its degree-7
/// (float) or degree-12 (double) Taylor polynomial and 2^n built from the
/// exponent bits directly: n is in [-125, 0] for float after the cut-off, so
/// 2^n is always a normal number.
///
/// Always inlined: GCC at -O3 sometimes left it out of line inside the
/// softmax loops, a call per packet that took 13% of a causal call.
template <class P>
EIGEN_ALWAYS_INLINE P exp_nonpositive(const P& x) {
  using scalar = typename ei::unpacket_traits<P>::type;
  if constexpr (ei::unpacket_traits<P>::size == 1) {
    return x < scalar(-86) ? scalar(0) : std::exp(x);
  } else if constexpr (std::is_same_v<scalar, float>) {
    using PI = typename ei::unpacket_traits<P>::integer_packet;
    const P lowest = ei::pset1<P>(-86.0f);
    const P keep = ei::pcmp_le(lowest, x);  // false for x < -86 and for NaN
    const P xc = ei::pmax(x, lowest);
    const P n = ei::pfloor(ei::pmadd(xc, ei::pset1<P>(1.44269504088896341f), ei::pset1<P>(0.5f)));
    // ln 2 split in two so n * ln2_hi is exact.
    P r = ei::pmadd(n, ei::pset1<P>(-0.693145751953125f), xc);
    r = ei::pmadd(n, ei::pset1<P>(-1.428606765330187045e-06f), r);
    P poly = ei::pset1<P>(1.0f / 5040);
    poly = ei::pmadd(poly, r, ei::pset1<P>(1.0f / 720));
    poly = ei::pmadd(poly, r, ei::pset1<P>(1.0f / 120));
    poly = ei::pmadd(poly, r, ei::pset1<P>(1.0f / 24));
    poly = ei::pmadd(poly, r, ei::pset1<P>(1.0f / 6));
    poly = ei::pmadd(poly, r, ei::pset1<P>(0.5f));
    poly = ei::pmadd(poly, r, ei::pset1<P>(1.0f));
    poly = ei::pmadd(poly, r, ei::pset1<P>(1.0f));
    const PI biased = ei::padd(ei::pcast<P, PI>(n), ei::pset1<PI>(127));
    const P two_n = ei::preinterpret<P>(ei::plogical_shift_left<23>(biased));
    const P result = ei::pmul(poly, two_n);
    // Lanes below the cut-off become 0; NaN lanes (keep is false there too)
    // take x itself, so a NaN score still poisons its row visibly.
    const P not_nan = ei::pcmp_eq(x, x);
    return ei::por(ei::pand(result, keep), ei::pandnot(x, not_nan));
  } else {
    // double: Eigen's exp is accurate to about 1 ulp; zero the cut-off region
    // explicitly so masked scores get exactly 0.
    const P lowest = ei::pset1<P>(-700.0);
    const P keep = ei::pcmp_le(lowest, x);
    const P not_nan = ei::pcmp_eq(x, x);
    const P result = ei::pexp(ei::pmax(x, lowest));
    return ei::por(ei::pand(result, keep), ei::pandnot(x, not_nan));
  }
}

/// Stores packet `v` at `to` (aligned to the packet size) bypassing the
/// caches where the instruction set has such a store: output that is written
/// once and not read back then skips the read-for-ownership of every line,
/// a third of the memory traffic of a copy-like pass. Plain store elsewhere.
/// Call `stream_fence()` after the last one. (Keyed on Eigen's vectorisation
/// macros: they are set only where Eigen has included the intrinsics.)
template <class P, class Acc>
EIGEN_STRONG_INLINE void stream_packet(Acc* to, const P& v) {
  ei::pstore(to, v);
}
#if defined(EIGEN_VECTORIZE_AVX512)
EIGEN_STRONG_INLINE void stream_packet(float* to, const __m512& v) { _mm512_stream_ps(to, v); }
EIGEN_STRONG_INLINE void stream_packet(double* to, const __m512d& v) { _mm512_stream_pd(to, v); }
#endif
#if defined(EIGEN_VECTORIZE_AVX)
EIGEN_STRONG_INLINE void stream_packet(float* to, const __m256& v) { _mm256_stream_ps(to, v); }
EIGEN_STRONG_INLINE void stream_packet(double* to, const __m256d& v) { _mm256_stream_pd(to, v); }
#endif
#if defined(EIGEN_VECTORIZE_SSE2)
EIGEN_STRONG_INLINE void stream_packet(float* to, const __m128& v) { _mm_stream_ps(to, v); }
EIGEN_STRONG_INLINE void stream_packet(double* to, const __m128d& v) { _mm_stream_pd(to, v); }
#endif

/// Orders earlier streaming stores before anything that follows (they are
/// weakly ordered); a no-op where `stream_packet` is a plain store.
EIGEN_STRONG_INLINE void stream_fence() {
#if defined(EIGEN_VECTORIZE_SSE2)
  _mm_sfence();
#endif
}

/// A packet of the Acc values at `x`: loaded as they are, or widened from
/// int8 codes (an int8 KV cache, whose scales the caller applies). Reads
/// exactly one packet's worth of elements, so a row's last full packet
/// never reads past the row.
template <class Acc>
EIGEN_STRONG_INLINE packet<Acc> load_widened(const Acc* x) {
  return ei::ploadu<packet<Acc>>(x);
}
/// Element by element: the instruction sets (and element types) below
/// have no widening load.
template <class Acc>
EIGEN_STRONG_INLINE packet<Acc> load_widened_elementwise(const std::int8_t* x) {
  Acc wide[packet_size<Acc>];
  for (int i = 0; i < packet_size<Acc>; ++i) wide[i] = static_cast<Acc>(x[i]);
  return ei::ploadu<packet<Acc>>(wide);
}

/// The 4 bytes at x in the low lane of an SSE register.
#if defined(EIGEN_VECTORIZE_SSE2)
EIGEN_STRONG_INLINE __m128i load_4_bytes(const std::int8_t* x) {
  std::int32_t bytes;
  std::memcpy(&bytes, x, sizeof bytes);
  return _mm_cvtsi32_si128(bytes);
}
#endif

template <class Acc>
EIGEN_STRONG_INLINE packet<Acc> load_widened(const std::int8_t* x) {
  // Sign-extend to 32-bit integers, convert. One branch per instruction
  // set, each ending in the element-by-element load for what it lacks.
  constexpr int W = packet_size<Acc>;
  [[maybe_unused]] constexpr bool is_float = std::is_same_v<Acc, float>, is_double = std::is_same_v<Acc, double>;
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (is_float && W == 16)
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x))));
  else if constexpr (is_double && W == 8)
    return _mm512_cvtepi32_pd(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x))));
  else
    return load_widened_elementwise<Acc>(x);
#elif defined(EIGEN_VECTORIZE_AVX)
  // (AVX implies SSE4.1's 4-byte widening; AVX2 widens 8 bytes at once.)
  if constexpr (is_float && W == 8) {
#if defined(EIGEN_VECTORIZE_AVX2)
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x))));
#else
    const __m128i low = _mm_cvtepi8_epi32(load_4_bytes(x)), high = _mm_cvtepi8_epi32(load_4_bytes(x + 4));
    return _mm256_cvtepi32_ps(_mm256_insertf128_si256(_mm256_castsi128_si256(low), high, 1));
#endif
  } else if constexpr (is_double && W == 4) {
    return _mm256_cvtepi32_pd(_mm_cvtepi8_epi32(load_4_bytes(x)));
  } else {
    return load_widened_elementwise<Acc>(x);
  }
#elif defined(EIGEN_VECTORIZE_SSE2)
  if constexpr (is_float && W == 4) {
    __m128i b = load_4_bytes(x);
    b = _mm_unpacklo_epi8(b, b);  // each byte at the top of a 32-bit lane...
    b = _mm_unpacklo_epi16(b, b);
    return _mm_cvtepi32_ps(_mm_srai_epi32(b, 24));  // ...shifted down with its sign
  } else {
    return load_widened_elementwise<Acc>(x);
  }
#elif defined(EIGEN_VECTORIZE_NEON) && !defined(EIGEN_VECTORIZE_SVE) && !defined(__ARM_BIG_ENDIAN)
  if constexpr (is_float && W == 4) {
    // Exactly 4 bytes (vld1_s8 would read 8, past a row's end), as the
    // low lanes of a vector: byte i is lane i on little-endian ARM.
    std::int32_t bytes;
    std::memcpy(&bytes, x, sizeof bytes);
    const int16x8_t halves = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(bytes)));
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(halves)));
  } else {
    return load_widened_elementwise<Acc>(x);
  }
#else
  return load_widened_elementwise<Acc>(x);
#endif
}

/// Makes the compiler hold `v` in a vector register from here on (an empty
/// asm that claims to change it). GCC otherwise folds the loads of a
/// register tile's shared operand into every FMA that uses it, reloading it
/// once per row or column, and a tile meant to need one load per FMA pair
/// needs two loads per FMA: the load ports, not the FMA units, set the pace.
/// Only real vector packets (more than one lane) take the asm; scalar
/// "packets" (no vectorisation, nvcc) and other targets leave it out.
template <class P>
EIGEN_STRONG_INLINE void keep_in_register(P& v) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    defined(EIGEN_VECTORIZE_SSE)
  if constexpr (ei::unpacket_traits<P>::size > 1) __asm__("" : "+v"(v));
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__) && defined(EIGEN_VECTORIZE_NEON) && \
    !defined(EIGEN_VECTORIZE_SVE)
  if constexpr (ei::unpacket_traits<P>::size > 1) __asm__("" : "+w"(v));
#else
  (void)v;
#endif
}

/// Transposes in place the W x W tile held as W packets (packet i: row i),
/// with Eigen's in-register transpose; nothing for scalar "packets".
/// GCC warns that a vector type's attributes are ignored when it is a
/// template argument (PacketBlock's), which is harmless here as it is in
/// Eigen's own code: the warning is silenced around this function alone.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
template <class P>
EIGEN_STRONG_INLINE void transpose_packets(P* rows) {
  constexpr int W = ei::unpacket_traits<P>::size;
  if constexpr (W > 1) {
    ei::PacketBlock<P, W> tile;
    for (int i = 0; i < W; ++i) tile.packet[i] = rows[i];
    ei::ptranspose(tile);
    for (int i = 0; i < W; ++i) rows[i] = tile.packet[i];
  }
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/// Asks for the cache line holding `p` (a hint; free where the compiler has
/// no prefetch builtin).
EIGEN_STRONG_INLINE void prefetch_line(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

}  // namespace streamattn::detail::simd

STREAMATTN_SIMD_DIAGNOSTICS_END
