// Where each lane's mma.sync m16n8k16 operands live in the shared-memory
// tiles, and where its accumulator elements sit: the index arithmetic of the
// tensor-core kernel in one place, as plain host/device functions so a host
// test can run a whole warp's worth of it against the PTX ISA's fragment
// tables ("Matrix fragments for mma.m16n8k16 with floating point type").
//
// Notation: g = lane / 4 (the "group"), t = lane % 4. Every 32-bit operand
// register holds two consecutive 16-bit elements along k, the lower k in the
// low half. Offsets are in elements, for row-major tiles with `pitch`
// elements per row.
#pragma once

#include "../config.hpp"

namespace streamattn::detail::gpu::fragment {

/// A (16 x 16, row-major in shared memory, e.g. the Q tile): register r holds
/// A(g + 8 * (r % 2), 2t + 8 * (r / 2) + {0, 1}).
STREAMATTN_HOST_DEVICE int a_offset(int lane, int r, int pitch) {
  return (lane / 4 + 8 * (r & 1)) * pitch + (lane % 4) * 2 + 8 * (r >> 1);
}

/// B = M^T (16 x 8) where M (8 x 16) is stored row-major, e.g. the K tile
/// with one key per row: register r holds B(2t + 8r + {0, 1}, g) =
/// M(g, 2t + 8r + {0, 1}), two consecutive elements of row g.
STREAMATTN_HOST_DEVICE int bt_offset(int lane, int r, int pitch) { return (lane / 4) * pitch + (lane % 4) * 2 + 8 * r; }

/// Accumulator (16 x 8, float): register r holds C(g + 8 * (r / 2), 2t + r % 2).
STREAMATTN_HOST_DEVICE int c_row(int lane, int r) { return lane / 4 + 8 * (r >> 1); }
STREAMATTN_HOST_DEVICE int c_col(int lane, int r) { return (lane % 4) * 2 + (r & 1); }

/// The accumulators of two horizontally adjacent 16 x 8 tiles (columns
/// [0, 8) and [8, 16)) hold, lane for lane, the A operand of one 16 x 16 k
/// step: A register r is the pair (c[r / 2 tile][2 * (r % 2)], ... + 1).
/// Returns the tile (0 or 1) and the first of the two accumulator registers.
STREAMATTN_HOST_DEVICE int a_from_c_tile(int r) { return r >> 1; }
STREAMATTN_HOST_DEVICE int a_from_c_first_register(int r) { return 2 * (r & 1); }

/// ldmatrix.x4.trans over a 16 x 16 block of a row-major [k][n] tile (the V
/// tile: k = key, n = head-dim column): lanes 8m..8m+7 give the rows of 8 x 8
/// matrix m, which covers k in [8 * (m % 2), +8) and n in [8 * (m / 2), +8).
/// Then r[0], r[1] are the B registers of columns [0, 8) and r[2], r[3]
/// those of columns [8, 16).
STREAMATTN_HOST_DEVICE int ldmatrix_x4_trans_row_offset(int lane, int pitch) {
  return ((lane & 7) + ((lane >> 3) & 1) * 8) * pitch + (lane >> 4) * 8;
}

}  // namespace streamattn::detail::gpu::fragment
