// Which attention kernel runs a problem and with which tile shape. Plain C++
// shared by the host dispatcher (which picks) and the kernels (whose tile
// constants come from here), so the two can never disagree, and testable
// without a GPU.
//
// Three families:
//  - `mma`: FlashAttention-2 style on tensor cores (mma.sync m16n8k16, fp16
//    or bf16 inputs, float accumulation), compiled for a few head dims. A
//    problem whose head dims fall between them runs on the next larger one
//    with the extra columns zero-filled in shared memory, which leaves every
//    dot product and every stored column unchanged.
//  - `wgmma`: the same algorithm on Hopper's warpgroup MMA, for builds that
//    include sm_90a code, on sm_90 GPUs, where the mma kernel would run at
//    head dim 64 or 128 over 16-bit K/V with more than one tile of queries
//    (attention_plan.hpp decides).
//  - `simt`: plain FMA in the accumulation type (float, or double for double
//    inputs) for any head dim: the float32/float64 path, and the fallback for
//    16-bit inputs whose head dims exceed the largest mma one or on GPUs
//    older than sm_80.
#pragma once

#include "../config.hpp"
#include "element_kind.hpp"

namespace streamattn::detail::gpu {

enum class kernel_family : unsigned char { mma, wgmma, simt };

/// Head dims the mma kernel is compiled for, ascending.
inline constexpr int mma_head_dims[] = {32, 64, 96, 128, 256};
inline constexpr int mma_max_head_dim = 256;

/// mma kernel: 4 warps, each owning 16 query rows (one m16 tile).
inline constexpr int mma_warps = 4;
inline constexpr int mma_query_rows = 16 * mma_warps;
/// Keys per shared-memory tile: 64, or 32 at head dim 256, where the float
/// accumulator already takes 128 registers per thread.
constexpr int mma_key_rows(int head_dim) { return head_dim <= 128 ? 64 : 32; }
/// The mma kernel's minimum resident blocks per multiprocessor, for
/// __launch_bounds__ (0: ptxas's own choice). Measured on an H200
/// (bench/cuda, bf16, B = 4, H = 16): the kernel is latency-bound at ptxas's
/// choice, e.g. 191 registers per thread at head dim 64, two blocks (8 warps)
/// per multiprocessor. Capping head dims up to 64 at 168 registers for three
/// blocks spills at most 8 bytes and ran prefills 20-25% faster. At head dim
/// 128 the same cap spills about 500 bytes: prefills gained 5-8%, but the
/// runs that had it showed the split-KV decode 15-20% slower (alongside
/// another change, so not pinned on the cap alone); 96 and 128 keep
/// ptxas's choice until that is measured apart. At 256
/// the float accumulator alone takes 128 registers; one block is enough,
/// which lets ptxas use all 255 (it still spills a little: CUDA 13.0
/// ptxas -v, bf16 24 bytes on sm_90, fp16 60).
/// GQA head packing (head_packing.hpp) and the skipping of row-less warps
/// changed the spills (bf16, sm_90): head dim 64 from 16 / 8 bytes (stored /
/// loaded) to 64 / 88, which in the key loop's code (cuobjdump) is 8 local
/// loads per key tile (was 2) against ~7000 instructions; 256 from 24 / 12
/// to none; 128 still none (231 registers). Since the shared tile steps
/// (attention_tile_steps.cuh) and the second P.V variant
/// (weights_in_input_type): 64 spills 80 / 96 bytes, 128 takes 244
/// registers and 256 255, neither spilling (CUDA 13.0, sm_90a). Not yet
/// timed on a GPU.
constexpr int mma_min_blocks_per_sm(int head_dim) { return head_dim > 128 ? 1 : head_dim <= 64 ? 3 : 0; }
/// Shared-memory row pitch in elements: 8 halves (16 bytes) of padding shift
/// consecutive rows by four banks, so the 8 rows that one ldmatrix phase or
/// one fragment load touches fall in distinct banks.
constexpr int mma_smem_pitch(int head_dim) { return head_dim + 8; }
/// Dynamic shared memory of the mma kernel: Q, K and V tiles of 2-byte
/// elements, then a float scale per key of the K and the V tile, which only
/// an int8 K/V cache uses (256 or 512 bytes; reserved always, so the plan's
/// check of the device's limit holds for both).
constexpr int mma_smem_bytes(int head_dim) {
  return (mma_query_rows + 2 * mma_key_rows(head_dim)) * mma_smem_pitch(head_dim) * 2 +
         2 * mma_key_rows(head_dim) * 4;
}

/// wgmma kernel: 2 warpgroups of 4 warps, each warpgroup owning 64 query
/// rows (one m64 wgmma), over 64-key tiles; head dims 64 and 128.
inline constexpr int wgmma_warps = 8;
inline constexpr int wgmma_query_rows = 128;
inline constexpr int wgmma_key_rows = 64;
constexpr bool is_wgmma_head_dim(int head_dim) { return head_dim == 64 || head_dim == 128; }
/// Its dynamic shared memory: a Q tile and two K and two V tiles of 2-byte
/// elements, unpadded (core-matrix layout, core_matrix_tile.hpp): 48 KiB at
/// 64, 96 KiB at 128.
constexpr int wgmma_smem_bytes(int head_dim) { return (wgmma_query_rows + 4 * wgmma_key_rows) * head_dim * 2; }

/// simt kernel: 4 warps of 4 query rows; a lane owns one key of a 32-key tile
/// when scoring and 1/32 of the block's output columns when accumulating.
inline constexpr int simt_warps = 4;
inline constexpr int simt_query_rows = 16;
inline constexpr int simt_key_rows = 32;
/// Head-dim columns of Q and K staged per step (any D streams through).
inline constexpr int simt_dim_chunk = 32;
/// Output columns per block; wider outputs are split over grid.z. 64 for
/// double keeps the static shared memory under 48 KiB.
constexpr int simt_out_cols(bool double_accumulator) { return double_accumulator ? 64 : 128; }

/// Split-KV combine kernel: 4 warps, one output row per warp.
inline constexpr int combine_warps = 4;

struct kernel_choice {
  kernel_family family = kernel_family::simt;
  int head_dim = 0;     // mma, wgmma: the compiled head dim used; simt: 0 (any)
  int query_rows = 0;   // query rows per thread block
  int key_rows = 0;     // keys per shared-memory tile
  int out_cols = 0;     // output columns per block (grid.z splits the rest); 0 = all
};

/// The smallest compiled mma head dim >= both head dims, or 0 when none is.
constexpr int mma_head_dim_for(index_t dim, index_t dim_v) {
  const index_t need = dim > dim_v ? dim : dim_v;
  for (int d : mma_head_dims)
    if (need <= d) return d;
  return 0;
}

/// `compute_capability` is major * 10 + minor (80 for sm_80).
constexpr kernel_choice choose_kernel(element_kind input, index_t dim, index_t dim_v, int compute_capability) {
  kernel_choice c;
  const int mma_dim = mma_head_dim_for(dim, dim_v);
  if (is_16bit(input) && mma_dim != 0 && compute_capability >= 80) {
    c.family = kernel_family::mma;
    c.head_dim = mma_dim;
    c.query_rows = mma_query_rows;
    c.key_rows = mma_key_rows(mma_dim);
    c.out_cols = 0;
    return c;
  }
  c.family = kernel_family::simt;
  c.head_dim = 0;
  c.query_rows = simt_query_rows;
  c.key_rows = simt_key_rows;
  c.out_cols = simt_out_cols(input == element_kind::f64);
  return c;
}

/// The wgmma kernel in place of mma choice `c`, at the same head dim.
constexpr kernel_choice as_wgmma(kernel_choice c) {
  c.family = kernel_family::wgmma;
  c.query_rows = wgmma_query_rows;
  c.key_rows = wgmma_key_rows;
  return c;
}

/// Number of output-column chunks (grid.z) a problem needs under `c`.
constexpr index_t out_col_chunks(const kernel_choice& c, index_t dim_v) {
  if (c.out_cols == 0 || dim_v <= c.out_cols) return 1;
  return (dim_v + c.out_cols - 1) / c.out_cols;
}

}  // namespace streamattn::detail::gpu
