// Whether a tensor's rows can be copied into shared memory as 16-byte
// vectors (cp.async) or need the element-by-element path. Decided once per
// operand on the host; plain C++ so it is unit-tested without a GPU.
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../detail/attention_params.hpp"

namespace streamattn::detail::gpu {

/// Copies of `vector_bytes` (16 for cp.async; 8 for int8 rows, see
/// tile_load.cuh) need: contiguous head dim, a head dim that is a whole
/// number of vectors (so a vector is either entirely inside the row or
/// entirely padding), and every row start aligned to the vector, which holds
/// for all (batch, seq, head) when the base is aligned and those strides are
/// multiples of the vector.
inline bool rows_are_vector_aligned(const void* base, const bshd_strides& s, index_t dim, std::size_t element_bytes,
                                    std::size_t vector_bytes = 16) {
  const index_t per_vector = static_cast<index_t>(vector_bytes / element_bytes);
  if (per_vector <= 0 || vector_bytes % element_bytes != 0) return false;
  if (base == nullptr) return false;
  if (s.dim != 1) return false;
  if (dim % per_vector != 0) return false;
  if (reinterpret_cast<std::uintptr_t>(base) % vector_bytes != 0) return false;
  return s.batch % per_vector == 0 && s.seq % per_vector == 0 && s.head % per_vector == 0;
}

}  // namespace streamattn::detail::gpu
