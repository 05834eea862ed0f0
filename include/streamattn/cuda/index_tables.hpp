// Packed sequences and paged KV caches on the GPU. The cuda backend takes
// query_starts and key_starts in host memory, as the CPU backends do (the
// host validates them, and the starts size the problem), and block_table in
// host or device memory; it copies the host values, compacted, into the
// call's device workspace, where the kernels read them. A table in device
// memory stays where it is: nothing is copied, and the kernels clamp its
// entries (attention_params::unchecked_table). Plain C++ on the host side,
// so the emulated suite gathers and re-points exactly as a GPU call does.
#pragma once

#include <cstddef>
#include <vector>

#include "../config.hpp"
#include "../detail/attention_params.hpp"

namespace streamattn::detail::gpu {

/// The index values one call copies to the device, in this order: B + 1
/// query starts, B + 1 key starts, B x pages-per-item table entries (each
/// present only when the call has it).
struct index_tables_layout {
  index_t batch = 0;
  bool query_starts = false, key_starts = false;
  index_t pages_per_item = 0;  // > 0: a host block table of that many columns to copy
  bool table_on_device = false;  // a block table the kernels read where it is

  index_t starts_count() const { return batch + 1; }
  index_t key_starts_offset() const { return query_starts ? starts_count() : 0; }
  index_t table_offset() const { return key_starts_offset() + (key_starts ? starts_count() : 0); }
  index_t count() const { return table_offset() + batch * pages_per_item; }
  std::size_t bytes() const { return static_cast<std::size_t>(count()) * sizeof(index_t); }
};

/// `table_on_device`: p.block_table is device memory (the caller asked the
/// CUDA runtime), so it is not copied.
template <class T, class Tout, class Tkv>
index_tables_layout index_tables_of(const attention_params<T, Tout, Tkv>& p, bool table_on_device = false) {
  index_tables_layout l;
  l.batch = p.batch;
  l.query_starts = p.query_starts != nullptr;
  l.key_starts = p.key_starts != nullptr;
  l.table_on_device = p.block_table != nullptr && table_on_device;
  if (p.block_table && !l.table_on_device && p.page_size > 0) l.pages_per_item = p.nk / p.page_size;
  return l;
}

/// The values `l` describes, read from the host arrays `p` points at. A
/// table entry outside the pool becomes page 0: the host cannot tell which
/// entries a call reads when key_lengths are in device memory, and a kernel
/// must never read outside k and v (valid entries are unchanged, and the
/// entries a call reads must be valid).
template <class S, class Skv>
std::vector<index_t> gather_index_tables(const attention_params<S, void, Skv>& p, const index_tables_layout& l) {
  std::vector<index_t> values;
  values.reserve(static_cast<std::size_t>(l.count()));
  if (l.query_starts)
    for (index_t b = 0; b <= l.batch; ++b) values.push_back(p.query_starts[b * p.query_starts_stride]);
  if (l.key_starts)
    for (index_t b = 0; b <= l.batch; ++b) values.push_back(p.key_starts[b * p.key_starts_stride]);
  for (index_t b = 0; b < l.batch; ++b)
    for (index_t i = 0; i < l.pages_per_item; ++i) {
      const index_t page = p.block_table[b * p.block_table_stride_batch + i * p.block_table_stride_page];
      values.push_back(page >= 0 && page < p.pages ? page : 0);
    }
  return values;
}

/// Points p's starts and table at their copies at `device` (laid out as `l`
/// says, contiguous); a table already in device memory stays, its entries
/// clamped by the kernels. A block table over an empty pool leaves every
/// item without keys: no entry of it could be read.
template <class S, class Skv>
void point_at_index_tables(attention_params<S, void, Skv>& p, const index_tables_layout& l, const index_t* device) {
  if (l.query_starts) {
    p.query_starts = device;
    p.query_starts_stride = 1;
  }
  if (l.key_starts) {
    p.key_starts = device + l.key_starts_offset();
    p.key_starts_stride = 1;
  }
  if (p.block_table) {
    if (l.table_on_device) {
      p.unchecked_table = true;
    } else {
      p.block_table = device + l.table_offset();
      p.block_table_stride_batch = l.pages_per_item;
      p.block_table_stride_page = 1;
    }
    if (p.pages == 0) p.nk = 0;
  }
}

}  // namespace streamattn::detail::gpu
