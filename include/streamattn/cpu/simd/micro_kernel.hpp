// The register-tiled GEMM at the heart of the simd backend. Both products of
// attention run through it:
//
//     S^T (keys x queries)  = K   (keys x D)   . Q^T (D x queries)
//     O^T (dims x queries) += V^T (dims x keys) . P^T (keys x queries)
//
// Keeping queries as the vector (column) dimension means K and V are read
// straight from the caller's memory as broadcast scalars, with any strides,
// so nothing of K or V is repacked; only the small Q^T panel is. It also makes
// the softmax over keys a column-wise, purely vertical (shuffle-free) pass.
#pragma once

#include <algorithm>
#include <utility>

#include "../../config.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "../../detail/visibility.hpp"
#include "packet.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd {

/// Register tile: MR rows of A (broadcast) times NR packets of B columns.
/// 24 accumulators fit 32-register ISAs (AVX-512, NEON) with room for the B
/// packets and a broadcast; 16-register ISAs (SSE2, AVX2) get 12 (6 x 2),
/// which leaves 2 for B and 1 for the broadcast. On an AVX2 core 6 x 2 ran
/// attention (N = 4096, D = 64 and 128) at 61 GFLOP/s against 42 for 4 x 2:
/// 8 accumulators are just the FMA latency times its throughput, and 4 rows
/// load a B packet for every 2 FMAs.
struct tile_shape {
  static constexpr int rows = vector_registers >= 32 ? 8 : 6;
  static constexpr int col_packets = vector_registers >= 32 ? 3 : 2;
};

/// A strided read-only matrix: element (r, d) at data[r * row_stride + d * depth_stride].
template <class Acc>
struct strided_operand {
  const Acc* data;
  index_t row_stride;
  index_t depth_stride;
};

/// C[r][0 .. NR*W) for r < MR, with C = (accumulate ? C * col_scale : 0) + A . B
/// where A is MR x depth (strided) and B is depth x NR*W with rows `ldb` apart.
/// `col_scale` (NR packets) rescales the old C per column: the online softmax
/// correction exp(m_old - m_new) of each query. Null means 1.
template <class Acc, int MR, int NR>
EIGEN_STRONG_INLINE void micro_tile(index_t depth, strided_operand<Acc> a, const Acc* b, index_t ldb, Acc* c,
                                    index_t ldc, const Acc* col_scale, bool accumulate) {
  using P = packet<Acc>;
  constexpr int W = packet_size<Acc>;
  P acc[MR][NR];
  STREAMATTN_UNROLL_REGISTER_TILE
  for (int i = 0; i < MR; ++i)
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int j = 0; j < NR; ++j) acc[i][j] = ei::pzero(P());
  const Acc* a_row[MR];
  STREAMATTN_UNROLL_REGISTER_TILE
  for (int i = 0; i < MR; ++i) a_row[i] = a.data + i * a.row_stride;
  for (index_t d = 0; d < depth; ++d) {
    P bv[NR];
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int j = 0; j < NR; ++j) bv[j] = ei::ploadu<P>(b + j * W);
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int i = 0; i < MR; ++i) {
      const P av = ei::pset1<P>(*a_row[i]);
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int j = 0; j < NR; ++j) acc[i][j] = ei::pmadd(av, bv[j], acc[i][j]);
      a_row[i] += a.depth_stride;
    }
    b += ldb;
  }
  // The products are summed from zero and only then combined with C, so a
  // long depth split into blocks is a blocked (more accurate) summation.
  if (accumulate) {
    P scale[NR];
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int j = 0; j < NR; ++j) scale[j] = col_scale ? ei::ploadu<P>(col_scale + j * W) : ei::pset1<P>(Acc(1));
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int i = 0; i < MR; ++i)
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int j = 0; j < NR; ++j)
        ei::pstoreu(c + i * ldc + j * W, ei::pmadd(ei::ploadu<P>(c + i * ldc + j * W), scale[j], acc[i][j]));
  } else {
    STREAMATTN_UNROLL_REGISTER_TILE
    for (int i = 0; i < MR; ++i)
      STREAMATTN_UNROLL_REGISTER_TILE
      for (int j = 0; j < NR; ++j) ei::pstoreu(c + i * ldc + j * W, acc[i][j]);
  }
}

namespace detail_kernel {
template <class Acc, int NR, int... MRs>
EIGEN_STRONG_INLINE void rows_dispatch(int mr, std::integer_sequence<int, MRs...>, index_t depth,
                                       strided_operand<Acc> a, const Acc* b, index_t ldb, Acc* c, index_t ldc,
                                       const Acc* col_scale, bool accumulate) {
  // Calls the instantiation with MR == mr (the row tail of a block).
  ((mr == MRs + 1 ? micro_tile<Acc, MRs + 1, NR>(depth, a, b, ldb, c, ldc, col_scale, accumulate) : void()), ...);
}
}  // namespace detail_kernel

/// A (rows x cols) matrix stored as column panels of `tile_shape` width:
/// panel p holds columns [p * width, (p + 1) * width) row-major, and the last
/// panel may be narrower. A micro-kernel's B operand (or C tile) is then one
/// contiguous block that stays in L1 while every row block sweeps over it.
template <class Acc>
struct panels {
  static constexpr index_t width = tile_shape::col_packets * packet_size<Acc>;
  Acc* data;
  index_t rows, cols;  // cols: a multiple of the packet size

  index_t panel_width(index_t col) const { return std::min(width, cols - col / width * width); }
  Acc* panel(index_t col) const { return data + col / width * width * rows; }
  /// Address of element (r, c).
  Acc* at(index_t r, index_t c) const { return panel(c) + r * panel_width(c) + c % width; }
};

/// Sums over the depth are carried out in blocks of this many terms, each
/// summed from zero and then added to C: a blocked summation. Plain sequential
/// float dot products of length 256 were 6x less accurate than Eigen's GEMM
/// (which the tests hold us to within 4x of); blocks of 32 bring that to ~2x.
inline constexpr index_t depth_block = 32;

/// Which rows (or depth) of a product a column panel needs: all of them.
struct whole_span {
  key_range operator()(index_t /*col*/, index_t extent) const { return {0, extent}; }
};

/// C (+)= A . B over whole panels: C (rows x cols) and B (depth x cols) are
/// panel matrices, A is MR-row strided blocks. For each column panel, every
/// register tile of rows reuses the same L1-resident B panel.
///
/// `row_span(col, rows)` and `depth_span(col, depth)` narrow the rows
/// computed and the depth summed for the panel holding column `col`: a
/// causal tile's panels need only the keys their queries see. Rows outside
/// the row span are left as they were; depth outside the depth span is
/// taken to contribute nothing.
template <class Acc, class RowSpan = whole_span, class DepthSpan = whole_span>
inline void gemm_tiles(index_t rows, strided_operand<Acc> a, panels<Acc> b, panels<Acc> c, const Acc* col_scale,
                       bool accumulate, RowSpan row_span = {}, DepthSpan depth_span = {}) {
  constexpr int MR = tile_shape::rows, NR = tile_shape::col_packets, W = packet_size<Acc>;
  for (index_t col = 0; col < c.cols; col += panels<Acc>::width) {
    const index_t wp = c.panel_width(col);
    const int nr = static_cast<int>(wp / W);
    Acc* c_panel = c.panel(col);
    const key_range row_range = row_span(col, rows);
    const key_range depth_range = depth_span(col, b.rows);
    // An empty depth range still runs one empty block: it applies the scale.
    const index_t depth_end = std::max(depth_range.end, depth_range.begin + 1);
    for (index_t r = row_range.begin; r < row_range.end; r += MR) {
      const int mr = static_cast<int>(std::min<index_t>(row_range.end - r, MR));
      Acc* c_tile = c_panel + r * wp;
      for (index_t d0 = depth_range.begin; d0 < depth_end; d0 += depth_block) {
        const index_t dn = std::min(depth_block, depth_range.end - d0);
        const strided_operand<Acc> a_block{a.data + r * a.row_stride + d0 * a.depth_stride, a.row_stride,
                                           a.depth_stride};
        const Acc* b_panel = b.panel(col) + d0 * wp;
        // Only the first depth block applies the caller's accumulate/scale.
        const bool first_block = d0 == depth_range.begin;
        const bool acc = !first_block || accumulate;
        const Acc* scale = first_block && col_scale ? col_scale + col : nullptr;
        if (mr == MR && nr == NR) {
          micro_tile<Acc, MR, NR>(dn, a_block, b_panel, wp, c_tile, wp, scale, acc);
        } else if (nr == NR) {
          detail_kernel::rows_dispatch<Acc, NR>(mr, std::make_integer_sequence<int, MR>{}, dn, a_block, b_panel, wp,
                                                c_tile, wp, scale, acc);
        } else if (nr == 2) {
          detail_kernel::rows_dispatch<Acc, 2>(mr, std::make_integer_sequence<int, MR>{}, dn, a_block, b_panel, wp,
                                               c_tile, wp, scale, acc);
        } else {
          detail_kernel::rows_dispatch<Acc, 1>(mr, std::make_integer_sequence<int, MR>{}, dn, a_block, b_panel, wp,
                                               c_tile, wp, scale, acc);
        }
      }
    }
  }
}

}  // namespace streamattn::detail::simd

STREAMATTN_SIMD_DIAGNOSTICS_END
