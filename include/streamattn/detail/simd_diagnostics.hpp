// Silences one known false warning around the simd kernels, and nothing else.
//
// GCC 12's AVX-512 intrinsic headers implement _mm512_undefined_ps() and
// friends as a self-initialised local; once those intrinsics are inlined into
// our kernels at -O2, -Wuninitialized / -Wmaybe-uninitialized report that
// local as used uninitialised (GCC PR 105593, fixed in GCC 13) - about a
// hundred warnings per translation unit, in users' builds too, even with
// -isystem. The pragmas are pushed and popped around our simd code only.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define STREAMATTN_SIMD_DIAGNOSTICS_BEGIN                          \
  _Pragma("GCC diagnostic push")                                    \
  _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")             \
  _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define STREAMATTN_SIMD_DIAGNOSTICS_END _Pragma("GCC diagnostic pop")
#else
#define STREAMATTN_SIMD_DIAGNOSTICS_BEGIN
#define STREAMATTN_SIMD_DIAGNOSTICS_END
#endif
