// The official Fastformer module's output transform on the GPU,
// Y = U W_tᵀ + b_t (+ Q), for a tile of U rows staged in shared memory.
//
// A D x D product per token: at D = 256 it is most of the call's
// arithmetic. A multiprocessor's shared memory and L1 deliver 128 bytes a
// cycle (one warp-wide broadcast, or one line) against four warp-wide FMAs,
// so the first version (a thread per output element, with a shared and a
// global load per FMA) held the FMA units to about an eighth of their rate.
//
// Here each thread owns a register tile of 4 tokens x 4 outputs and a warp
// a block of 4 x 8 such tiles (16 tokens x 32 outputs), as in a SIMT GEMM
// (2 x 16 tiles when the staged tile holds 5 to 12 tokens, 1 x 32 up to 4):
// per feature f a warp loads 4 U values per lane (in float each is one
// shared memory access: the 4 token tiles' rows, 4 (D + 1) numbers apart,
// fall in distinct banks unless (D + 1) % 4 == 0, a 2- or 4-way conflict)
// and one 16-byte vector of weights per lane (128 distinct bytes in float,
// one line when D % 32 == 0), 5 accesses for 16 FMAs: about four-fifths of
// the FMA rate, if the weights hit in L1. (W_tᵀ is 256 KiB at D = 256 and
// each block reads all of it per tile of 16 tokens, so many will come from
// L2.)
//
// The weights are read from W_tᵀ, which the transpose_transform step copies
// into the workspace once per call (D rows of transform_pitch(D) numbers,
// zero past D; independent of N), so a thread's 4 outputs are one aligned
// vector and the lanes of a warp read one row.
#pragma once

#include "../config.hpp"
#include "additive_plan.hpp"
#include "block_team.hpp"

namespace streamattn::detail::gpu {

/// One thread's weights of one feature (16-byte aligned: one or two vector
/// loads).
template <class Acc>
struct alignas(16) transform_weights {
  Acc w[transform_tile_outputs];
};

/// Row f of W_tᵀ: to[f * transform_pitch(dim) + o] = W_t[o][f], 0 for
/// o >= dim. One block per row f (the transpose_transform step); the reads
/// are strided, but W_t is read once per call.
template <class Acc>
STREAMATTN_HOST_DEVICE void transpose_transform_row(const block_team& team, const Acc* transform,
                                                    index_t row_stride, index_t col_stride, index_t dim, index_t f,
                                                    Acc* to) {
  const index_t pitch = transform_pitch(dim);
  team.for_each(pitch, [&](index_t o) {
    to[f * pitch + o] = o < dim ? transform[o * row_stride + f * col_stride] : Acc(0);
  });
}

/// For every token t < n and output o < dim, with u the staged rows
/// (u[t * pitch + f]) and wt = W_tᵀ as transpose_transform_row leaves it
/// (16-byte aligned):
///   finish(t, o, bias(o) + sum_f u[t][f] W_t[o][f]),
/// the sum taken in increasing f after the bias, as the scalar backend's is.
/// One phase (team.for_each).
template <class Acc, class Bias, class Finish>
STREAMATTN_HOST_DEVICE void transform_rows(const block_team& team, const Acc* u, index_t pitch, index_t n,
                                           const Acc* wt, index_t dim, Bias&& bias, Finish&& finish) {
  constexpr int tt = transform_tile_tokens, to = transform_tile_outputs;
  // Features per step of the loop (immediate offsets, fewer branches). In
  // double, 4 features' loads in flight took the kernel from 128 to 222
  // registers; nvcc unrolling either loop further costs the same way.
  constexpr int unroll = sizeof(Acc) == 4 ? 4 : 1;
  const auto groups = static_cast<unsigned>(transform_pitch(dim) / to);
  const auto token_tiles = static_cast<unsigned>((n + tt - 1) / tt);
  // Fewer token tiles a warp where the staged tile is short (wide D, double,
  // a chunk's last tokens), so that no lane repeats another's work.
  const unsigned warp_token_tiles = token_tiles >= transform_max_warp_token_tiles ? transform_max_warp_token_tiles
                                    : token_tiles >= 2                           ? 2
                                                                                 : 1;
  const unsigned warp_groups = 32 / warp_token_tiles;
  const unsigned group_blocks = (groups + warp_groups - 1) / warp_groups;
  const unsigned token_blocks = (token_tiles + warp_token_tiles - 1) / warp_token_tiles;
  team.for_each(index_t{token_blocks} * group_blocks * 32, [&](index_t index) {
    const auto flat = static_cast<unsigned>(index), warp = flat / 32, lane = flat % 32;
    const unsigned token_tile = warp / group_blocks * warp_token_tiles + lane / warp_groups;
    const unsigned group = warp % group_blocks * warp_groups + lane % warp_groups;
    // Tiles past the edge are clamped to the last valid one (every load in
    // bounds, no branch in the loop) and not written.
    const index_t first_output = index_t{group < groups ? group : groups - 1} * to;
    const Acc* rows[tt];
    Acc y[tt][to];
    for (int i = 0; i < tt; ++i) {
      const index_t t = index_t{token_tile} * tt + i;
      rows[i] = u + (t < n ? t : n - 1) * pitch;
      for (int j = 0; j < to; ++j) y[i][j] = bias(first_output + j < dim ? first_output + j : dim - 1);
    }
    const auto* w = reinterpret_cast<const transform_weights<Acc>*>(wt + first_output);
    const auto accumulate = [&](index_t f) {
      const transform_weights<Acc> wf = w[f * groups];
      for (int i = 0; i < tt; ++i) {
        const Acc uf = rows[i][f];
        for (int j = 0; j < to; ++j) y[i][j] += uf * wf.w[j];
      }
    };
    index_t f = 0;
    STREAMATTN_NO_UNROLL
    for (; f + unroll <= dim; f += unroll)
      for (int k = 0; k < unroll; ++k) accumulate(f + k);
    STREAMATTN_NO_UNROLL
    for (; f < dim; ++f) accumulate(f);
    if (group >= groups) return;
    for (int i = 0; i < tt; ++i) {
      const index_t t = index_t{token_tile} * tt + i;
      for (int j = 0; j < to; ++j)
        if (t < n && first_output + j < dim) finish(t, first_output + j, y[i][j]);
    }
  });
}

}  // namespace streamattn::detail::gpu
