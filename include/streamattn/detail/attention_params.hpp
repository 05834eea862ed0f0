// The plain parameter struct every attention kernel reads: pointers, sizes and
// strides, filled once after validation (CUTLASS style).
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../options.hpp"
#include "visibility.hpp"

namespace streamattn::detail {

/// Strides of an attention tensor in logical (batch, seq, head, dim) order.
struct bshd_strides {
  index_t batch = 0, seq = 0, head = 0, dim = 0;
};

/// Strides of a bias or mask in logical (batch, head, query, key) order; 0 on
/// broadcast axes.
struct bhqk_strides {
  index_t batch = 0, head = 0, query = 0, key = 0;
};

/// The rows of one (batch item, head) of a tensor laid out like k (or like
/// q): row j at `operator()(j)`, `seq` apart, or in the page a block table
/// names. Kernels make one per head and ask it for each row they load.
template <class E>
struct row_locator {
  E* head = nullptr;  // row 0, or (paged) page 0's row 0 of this head
  index_t seq = 0;
  const index_t* table = nullptr;  // this item's block table row, or null
  index_t table_stride = 0, page_size = 0, page_stride = 0;
  /// > 0: the table's entries were not checked, and one outside
  /// [0, pool_pages) reads page 0 (see attention_params::unchecked_table).
  index_t pool_pages = 0;

  STREAMATTN_HOST_DEVICE E* operator()(index_t j) const {
    if (!table) return head + j * seq;
    // 64-bit division is a long software routine on a GPU; key counts and
    // page sizes below 2^31 take the 32-bit one.
    const bool narrow = ((j | page_size) >> 31) == 0;
    const index_t page_of =
        narrow ? static_cast<index_t>(static_cast<unsigned>(j) / static_cast<unsigned>(page_size)) : j / page_size;
    index_t page = table[page_of * table_stride];
    // One unsigned compare also catches negative entries.
    if (pool_pages > 0 && static_cast<std::uint64_t>(page) >= static_cast<std::uint64_t>(pool_pages)) page = 0;
    return head + page * page_stride + (j - page_of * page_size) * seq;
  }
};

/// T: the element type of q (and of k and v unless they are quantised);
/// Tkv: that of k and v, T or std::int8_t (see `key_scale`).
template <class T, class Tout, class Tkv = T>
struct attention_params {
  const T* q = nullptr;
  const Tkv* k = nullptr;
  const Tkv* v = nullptr;
  Tout* out = nullptr;
  bshd_strides q_stride, k_stride, v_stride, out_stride;

  index_t batch = 0;
  index_t nq = 0, nk = 0;        // query and key sequence lengths (the longest item's when packed)
  index_t hq = 0, hk = 0;        // query and key/value heads (hq % hk == 0)
  index_t dim = 0, dim_v = 0;    // head dims of q/k and of v/out

  float scale = 1.0f;
  float softcap = 0.0f;
  visibility visible;

  const float* bias = nullptr;
  bhqk_strides bias_stride;
  const bool* mask = nullptr;
  bhqk_strides mask_stride;
  const float* alibi_slopes = nullptr;
  index_t alibi_stride = 0;
  const index_t* key_lengths = nullptr;  // per batch item, or null: every item has nk keys
  index_t key_lengths_stride = 0;
  // Packed sequences (cu_seqlens, validated on the host): item b's queries
  // are rows [query_starts[b], query_starts[b + 1]) of the seq axis of q, out
  // and lse, whose batch axis then has extent 1; key_starts does the same
  // for k and v. Null: item b is index b of the batch axis.
  const index_t* query_starts = nullptr;
  index_t query_starts_stride = 0;
  const index_t* key_starts = nullptr;
  index_t key_starts_stride = 0;

  // Paged KV cache (validated on the host): key j of item b is row
  // j % page_size of page block_table[b][j / page_size] of k and v, whose
  // batch axis then counts pages. Null: item b's keys are rows of its own.
  const index_t* block_table = nullptr;
  index_t block_table_stride_batch = 0, block_table_stride_page = 0;
  index_t page_size = 0, pages = 0;
  /// Set by the cuda backend for a block table in device memory, whose
  /// entries the host cannot check: an entry outside [0, pages) then reads
  /// page 0, so no value makes a kernel read outside k and v.
  bool unchecked_table = false;
  /// attention_options::weights_in_input_type (the cuda tensor-core kernels).
  bool weights_in_input_type = false;

  // Quantised K/V (Tkv = int8): the scale of each key's row of k and v,
  // addressed like those rows (key_row) with a dim stride of 0; broadcast
  // axes have stride 0. Null otherwise.
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  bshd_strides k_scale_stride, v_scale_stride;

  float* lse = nullptr;
  index_t lse_stride_batch = 0, lse_stride_head = 0, lse_stride_query = 0;

  index_t q_chunk = 0, kv_chunk = 0;
  int threads = 0;
  workspace scratch;

  STREAMATTN_HOST_DEVICE index_t group_size() const { return hq / hk; }
  /// Query rows of batch item b: nq, or its packed sequence's length.
  STREAMATTN_HOST_DEVICE index_t queries_in(index_t b) const {
    return query_starts ? query_starts[(b + 1) * query_starts_stride] - query_starts[b * query_starts_stride] : nq;
  }
  /// Key rows that belong to batch item b: nk, or its packed sequence's
  /// length. (Its keys: see keys_in.)
  STREAMATTN_HOST_DEVICE index_t key_rows_in(index_t b) const {
    return key_starts ? key_starts[(b + 1) * key_starts_stride] - key_starts[b * key_starts_stride] : nk;
  }
  /// Keys of batch item b: its key rows, or its key_lengths entry clamped to
  /// [0, key rows] (validated on the host where the host can read it;
  /// clamped so that no value ever makes a kernel read outside k and v).
  STREAMATTN_HOST_DEVICE index_t keys_in(index_t b) const {
    const index_t rows = key_rows_in(b);
    if (!key_lengths) return rows;
    const index_t n = key_lengths[b * key_lengths_stride];
    return n < 0 ? 0 : n > rows ? rows : n;
  }
  /// The causal/window visibility of batch item b: aligned to its own
  /// queries and keys.
  STREAMATTN_HOST_DEVICE visibility visible_in(index_t b) const {
    visibility v = visible;
    v.nq = queries_in(b);
    v.nk = keys_in(b);
    return v;
  }
  /// Offset of batch item b's first row in a tensor laid out like q (q, out,
  /// and the backward's dout and dq), or like k (k, v, dk, dv).
  STREAMATTN_HOST_DEVICE index_t query_rows_at(index_t b, const bshd_strides& s) const {
    return query_starts ? query_starts[b * query_starts_stride] * s.seq : b * s.batch;
  }
  STREAMATTN_HOST_DEVICE index_t key_rows_at(index_t b, const bshd_strides& s) const {
    return key_starts ? key_starts[b * key_starts_stride] * s.seq : b * s.batch;
  }
  /// Row 0 of head h of batch item b in a tensor laid out like q / like k.
  template <class E>
  STREAMATTN_HOST_DEVICE E* query_head(E* data, const bshd_strides& s, index_t b, index_t h) const {
    return data + query_rows_at(b, s) + h * s.head;
  }
  template <class E>
  STREAMATTN_HOST_DEVICE E* key_head(E* data, const bshd_strides& s, index_t b, index_t h) const {
    return data + key_rows_at(b, s) + h * s.head;
  }
  /// Key j of head h of batch item b in a tensor laid out like k (k, v):
  /// in the item's rows, or in the page the block table names. (Reads only
  /// the table entry of key j's page, so only keys the item has may be asked for.)
  template <class E>
  STREAMATTN_HOST_DEVICE E* key_row(E* data, const bshd_strides& s, index_t b, index_t h, index_t j) const {
    return key_rows(data, s, b, h)(j);
  }
  /// All keys of head h of batch item b, as key_row finds them.
  template <class E>
  STREAMATTN_HOST_DEVICE row_locator<E> key_rows(E* data, const bshd_strides& s, index_t b, index_t h) const {
    if (!block_table) return {key_head(data, s, b, h), s.seq};
    row_locator<E> rows{data + h * s.head, s.seq};
    rows.table = block_table + b * block_table_stride_batch;
    rows.table_stride = block_table_stride_page;
    rows.page_size = page_size;
    rows.page_stride = s.batch;
    rows.pool_pages = unchecked_table ? pages : 0;
    return rows;
  }
  /// All query rows of head h of batch item b in a tensor laid out like q.
  template <class E>
  STREAMATTN_HOST_DEVICE row_locator<E> query_rows(E* data, const bshd_strides& s, index_t b, index_t h) const {
    return {query_head(data, s, b, h), s.seq};
  }
  /// The scale of key j's row of k (or v, given v_scale and its strides):
  /// 1 when K/V are not quantised.
  STREAMATTN_HOST_DEVICE float key_scale(const float* scale, const bshd_strides& s, index_t b, index_t h,
                                         index_t j) const {
    return scale ? *key_row(scale, s, b, h, j) : 1.0f;
  }
  /// Whether keys [first, first + n) are rows of one page, equally spaced
  /// from key_row(first) on (always, without a block table).
  STREAMATTN_HOST_DEVICE bool keys_in_one_page(index_t first, index_t n) const {
    return !block_table || n <= 1 || first / page_size == (first + n - 1) / page_size;
  }
  STREAMATTN_HOST_DEVICE index_t kv_head_of(index_t query_head) const { return query_head / group_size(); }
  /// True when some score needs more than `scale * q.k` and the causal/window range.
  STREAMATTN_HOST_DEVICE bool has_score_terms() const {
    return softcap > 0.0f || bias != nullptr || mask != nullptr || alibi_slopes != nullptr;
  }
};

}  // namespace streamattn::detail
