// The shared-memory layout of the Hopper kernel's tiles and the wgmma matrix
// descriptors that describe them: plain host/device functions, so a host
// test checks them against the PTX ISA's canonical layouts.
//
// A tile of Rows x Cols 16-bit elements (rows: queries or keys, columns:
// head-dim features) is cut into 8 x 8 core matrices of 128 contiguous
// bytes, row by row within one. Core matrices follow each other down the
// rows first, so element (r, c) sits at
//   ((c / 8) * (Rows / 8) + r / 8) * 64 + (r % 8) * 8 + c % 8.
// Read as a wgmma operand without swizzling (wgmma.cuh):
//   - Q and K (A and B of Q K^T, K-major: K runs along the columns): core
//     matrices 128 bytes apart along M or N (the rows), Rows * 16 bytes apart
//     along K (8 columns);
//   - V (B of P V, N-major: N runs along the columns, K = the keys down the
//     rows): 128 bytes apart along K, Rows * 16 bytes apart along N.
// cp.async writes whole 16-byte core-matrix rows, and a wgmma reads whole
// 128-byte core matrices, neither with bank conflicts.
#pragma once

#include <cstdint>

#include "../config.hpp"

namespace streamattn::detail::gpu {

/// Element offset of (row, col) in a core-matrix tile of `rows` rows.
STREAMATTN_HOST_DEVICE int core_matrix_offset(int rows, int row, int col) {
  return ((col / 8) * (rows / 8) + row / 8) * 64 + (row % 8) * 8 + col % 8;
}

/// Bytes between core matrices adjacent down the rows, and across 8 columns.
inline constexpr unsigned core_matrix_bytes = 128;
STREAMATTN_HOST_DEVICE constexpr unsigned core_matrix_column_step_bytes(int rows) {
  return static_cast<unsigned>(rows) * 16u;
}

/// A wgmma shared-memory matrix descriptor without swizzling (PTX ISA,
/// "Matrix Descriptor Format"): bits 0-13 the start address, 16-29 the
/// leading byte offset (between core matrices adjacent along K), 32-45 the
/// stride byte offset (along M or N), each in 16-byte units; base offset
/// (bits 49-51) and swizzle mode (bits 62-63) zero. `shared_address` is the
/// operand's address in the shared window, 16-byte aligned.
STREAMATTN_HOST_DEVICE std::uint64_t encode_matrix_descriptor(unsigned shared_address, unsigned k_step_bytes,
                                                              unsigned mn_step_bytes) {
  const auto field = [](unsigned bytes) { return static_cast<std::uint64_t>((bytes & 0x3ffffu) >> 4); };
  return field(shared_address) | field(k_step_bytes) << 16 | field(mn_step_bytes) << 32;
}

}  // namespace streamattn::detail::gpu
