// Backend tags. Every public call takes one of these objects as its first
// argument and the implementation is found by overload on its type, the way
// Thrust picks an execution policy.
#pragma once

namespace streamattn {

/// O(N^2) reference: materialises the score matrix and accumulates in double
/// (long double for double inputs). The test oracle and the "what users would
/// write" baseline in benchmarks.
struct naive_t {};
inline constexpr naive_t naive{};

/// The streaming algorithm in plain loops, one query row at a time. Readable,
/// single-threaded, the second oracle.
struct scalar_t {};
inline constexpr scalar_t scalar{};

/// The fast CPU path: tiled, vectorised for the instruction set the compiler
/// targets (AVX-512, AVX2, SSE2, NEON), multithreaded. Derives from scalar_t so
/// an operation without a simd overload falls back to the scalar one.
struct simd_t : scalar_t {};
inline constexpr simd_t simd{};

/// The backend used by the overloads that take none.
using default_backend_t = simd_t;
inline constexpr default_backend_t default_backend{};

// The `cuda` tag lives in <streamattn/cuda/backend.cuh> and exists only in
// translation units compiled by nvcc.

}  // namespace streamattn
