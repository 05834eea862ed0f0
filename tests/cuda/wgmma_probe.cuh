// A probe of how a Hopper GPU reads the wgmma kernel's operands
// (attention_wgmma_kernel.cuh), for the first run on one: the kernel's
// readings of the PTX ISA (the descriptors' leading and stride offsets, the
// register fragments) are shared by the SIMT emulator, so the emulated suite
// cannot catch a misreading; only hardware can. This probe multiplies
// small integer matrices, exact in 16 bits and in float, with the kernel's
// own tile layout (core_matrix_tile.hpp), descriptor helpers (wgmma.cuh) and
// fragment steps (attention_tile_steps.cuh), one product of each kind:
//   scores  D = A B^T, A (128 x K, two warpgroups) and B (N x K) in shared
//           memory, K-major: Q K^T;
//   values  D = A B, A from registers (rounded accumulators, as P), B
//           (K x N) in shared memory, N-major: P V.
// Where the GPU's result differs from the exact product, the test runs the
// product again with each operand's offsets exchanged and says which
// reading the GPU has, so that one GPU run names the fix.
//
// The kernel compiles under nvcc (it traps on anything but sm_90a) and
// under the emulator, where the probe itself is checked.
#pragma once

#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <streamattn/cuda/attention_tile_steps.cuh>
#include <streamattn/cuda/core_matrix_tile.hpp>
#include <streamattn/cuda/dynamic_shared_memory.cuh>
#include <streamattn/cuda/mma_fragments.hpp>
#include <streamattn/cuda/wgmma.cuh>

namespace streamattn::testing {

/// Which operands' descriptors the probe gives with their leading and
/// stride byte offsets exchanged (the kernel's reading: neither).
struct wgmma_probe_swaps {
  bool a = false, b = false;
};

inline constexpr int wgmma_probe_rows = 128;  // two warpgroups of 64
inline constexpr int wgmma_probe_threads = 256;

/// A descriptor with its leading and stride byte offsets exchanged.
STREAMATTN_HOST_DEVICE std::uint64_t exchange_descriptor_offsets(std::uint64_t d, bool exchange) {
  if (!exchange) return d;
  constexpr std::uint64_t field = 0x3fff;
  const std::uint64_t leading = d >> 16 & field, stride = d >> 32 & field;
  return (d & ~(field << 16) & ~(field << 32)) | stride << 16 | leading << 32;
}

/// Shared memory the probe takes: A then B, 16-bit elements, and 64 KiB
/// more that descriptors with exchanged offsets may reach into (about
/// 5.3 KiB past the tiles at most, B's at N = 64, K = 128), so that no
/// reading the probe tries leaves the block's shared memory.
template <int N, int K>
constexpr std::size_t wgmma_probe_shared_bytes() {
  return static_cast<std::size_t>(wgmma_probe_rows * K + N * K) * 2 + 64 * 1024;
}

/// d = the product (row-major, 128 x N) of a (row-major, 128 x K) and b
/// (row-major; N x K for scores, K x N for values).
template <class S, bool Values, int N, int K>
__global__ void __launch_bounds__(wgmma_probe_threads, 1)
    wgmma_probe_kernel(const S* a, const S* b, float* d, wgmma_probe_swaps swaps) {
#if !defined(STREAMATTN_CUDA_SM90A) && !defined(STREAMATTN_CUDA_EMULATOR)
  (void)a, (void)b, (void)d, (void)swaps;
  __trap();  // the test runs it only where sm_90a code does
#else
  using namespace detail::gpu;
  constexpr int rows = wgmma_probe_rows;
  S* const a_tile = reinterpret_cast<S*>(dynamic_shared_memory());
  S* const b_tile = a_tile + rows * K;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32, warpgroup = warp / 4;
  const int warp_row0 = warpgroup * 64 + (warp % 4) * 16;

  // The tiles as the kernel lays out Q and K (rows x K) and V (K x N).
  for (int i = tid; i < rows * K; i += wgmma_probe_threads) a_tile[core_matrix_offset(rows, i / K, i % K)] = a[i];
  for (int i = tid; i < N * K; i += wgmma_probe_threads) {
    if constexpr (Values)
      b_tile[core_matrix_offset(K, i / N, i % N)] = b[i];
    else
      b_tile[core_matrix_offset(N, i / K, i % K)] = b[i];
  }
  fence_shared_for_wgmma();
  __syncthreads();

  float acc[N / 8][4];
  zero_fragments(acc);
  if constexpr (Values) {
    // A as the kernel forms P: this warp's rows of A in accumulator layout,
    // then weights_as_a's rounding into A fragments.
    float p[K / 8][4];
#pragma unroll
    for (int f = 0; f < K / 8; ++f)
#pragma unroll
      for (int r = 0; r < 4; ++r)
        p[f][r] = static_cast<float>(a[(warp_row0 + fragment::c_row(lane, r)) * K + 8 * f + fragment::c_col(lane, r)]);
    std::uint32_t a_regs[K / 16][4];
#pragma unroll
    for (int j = 0; j < K / 16; ++j) weights_as_a<S>(p, j, a_regs[j]);
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < K / 16; ++j)
      wgmma_rs<S, 1, N>(acc, a_regs[j], exchange_descriptor_offsets(mn_major_descriptor(b_tile, K, j * 16), swaps.b),
                        j > 0);
  } else {
    wgmma_fence();
#pragma unroll
    for (int k16 = 0; k16 < K / 16; ++k16)
      wgmma_ss<S, 0, N>(
          acc, exchange_descriptor_offsets(k_major_descriptor(a_tile, rows, warpgroup * 64, k16 * 16), swaps.a),
          exchange_descriptor_offsets(k_major_descriptor(b_tile, N, 0, k16 * 16), swaps.b), k16 > 0);
  }
  wgmma_commit();
  wgmma_wait<0>();

#pragma unroll
  for (int f = 0; f < N / 8; ++f)
#pragma unroll
    for (int r = 0; r < 4; ++r)
      d[(warp_row0 + fragment::c_row(lane, r)) * N + 8 * f + fragment::c_col(lane, r)] = acc[f][r];
#endif
}

/// One product's operands, small integers drawn from `seed`, and its exact
/// result.
template <class S, bool Values, int N, int K>
struct wgmma_probe_problem {
  std::vector<S> a, b;
  std::vector<double> exact;

  explicit wgmma_probe_problem(std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::uniform_int_distribution<int> value(-8, 8);  // products sum exactly in float
    std::vector<int> ai(wgmma_probe_rows * K), bi(N * K);
    for (int& x : ai) x = value(gen);
    for (int& x : bi) x = value(gen);
    for (int x : ai) a.push_back(S(static_cast<float>(x)));
    for (int x : bi) b.push_back(S(static_cast<float>(x)));
    exact.assign(static_cast<std::size_t>(wgmma_probe_rows * N), 0.0);
    for (int m = 0; m < wgmma_probe_rows; ++m)
      for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k)
          exact[static_cast<std::size_t>(m * N + n)] +=
              ai[static_cast<std::size_t>(m * K + k)] * bi[static_cast<std::size_t>(Values ? k * N + n : n * K + k)];
  }

  /// "" where d is the exact product, else the count of wrong elements and the first.
  std::string mismatch(const std::vector<float>& d) const {
    int wrong = 0;
    std::ostringstream first;
    for (std::size_t i = 0; i < exact.size(); ++i) {
      if (static_cast<double>(d[i]) == exact[i]) continue;
      if (wrong++ == 0) first << "(" << i / N << ", " << i % N << ") is " << d[i] << " instead of " << exact[i];
    }
    if (wrong == 0) return {};
    std::ostringstream s;
    s << wrong << " of " << exact.size() << " elements wrong, first " << first.str();
    return s.str();
  }
};

/// The probe's verdict on one product: "" where `run(problem, swaps)` (the
/// product on some GPU, as a 128 x N row-major vector) gives the exact
/// result with the kernel's reading, else what went wrong and which
/// exchanged offsets, if any, give it.
template <class S, bool Values, int N, int K, class Run>
std::string wgmma_probe_verdict(std::uint64_t seed, Run&& run) {
  const wgmma_probe_problem<S, Values, N, K> problem(seed);
  const std::string as_read = problem.mismatch(run(problem, wgmma_probe_swaps{}));
  if (as_read.empty()) return {};
  std::ostringstream s;
  s << (Values ? "values (A from registers, B N-major)" : "scores (A and B K-major)") << ", N = " << N << ", K = " << K
    << ": " << as_read << ". ";
  bool any = false;
  for (const wgmma_probe_swaps swaps :
       {wgmma_probe_swaps{true, false}, wgmma_probe_swaps{false, true}, wgmma_probe_swaps{true, true}}) {
    if (Values && swaps.a) continue;  // A comes from registers
    if (!problem.mismatch(run(problem, swaps)).empty()) continue;
    s << "Exact with the leading and stride offsets exchanged in the descriptors of "
      << (swaps.a && swaps.b ? "A and B"
          : swaps.a          ? "A"
                             : "B")
      << ". ";
    any = true;
  }
  if (!any) s << "No exchange of the offsets helps: suspect the fragments, the fences or the tile layout.";
  return s.str();
}

}  // namespace streamattn::testing
