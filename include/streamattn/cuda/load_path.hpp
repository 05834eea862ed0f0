// Whether a tensor's rows can be copied into shared memory as 16-byte
// vectors (cp.async) or need the element-by-element path. Decided once per
// operand on the host; plain C++ so it is unit-tested without a GPU.
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../detail/attention_params.hpp"

namespace streamattn::detail::gpu {

/// 16-byte copies need: contiguous head dim, a head dim that is a whole
/// number of vectors (so a vector is either entirely inside the row or
/// entirely padding), and every row start 16-byte aligned, which holds for
/// all (batch, seq, head) when the base is aligned and those strides are
/// multiples of the vector.
inline bool rows_are_vector_aligned(const void* base, const bshd_strides& s, index_t dim, std::size_t element_bytes) {
  const index_t per_vector = static_cast<index_t>(16 / element_bytes);
  if (per_vector <= 0 || 16 % element_bytes != 0) return false;
  if (base == nullptr) return false;
  if (s.dim != 1) return false;
  if (dim % per_vector != 0) return false;
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0) return false;
  return s.batch % per_vector == 0 && s.seq % per_vector == 0 && s.head % per_vector == 0;
}

}  // namespace streamattn::detail::gpu
