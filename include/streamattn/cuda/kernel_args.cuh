// The plain struct every attention kernel receives by value: the validated
// attention_params with device element types and the output's type erased,
// plus what the host decided once (folded scale, load paths, split-KV slice
// and workspace). Filled by `make_kernel_args` after validation.
#pragma once

#include <cmath>
#include <limits>

#include "../detail/attention_params.hpp"
#include "../detail/element.hpp"
#include "device_types.cuh"
#include "element_kind.hpp"
#include "load_path.hpp"

namespace streamattn::detail::gpu {

/// S: the device storage type of q (and of k and v); Skv: that of k and v,
/// S or std::int8_t (a quantised KV cache, with p.k_scale and p.v_scale).
template <class S, class Skv = S>
struct kernel_args {
  using accum = device_accum_t<S>;

  /// q, k, v in device storage types; `out` is void*, its type is `out_kind`.
  attention_params<S, void, Skv> p;
  element_kind out_kind = element_kind::f32;

  /// scale * log2(e): scores go straight into exp2, one multiply per score.
  accum scale_log2 = 0;
  /// Softcap, bias, ALiBi or mask present: scores take the per-element path.
  bool has_terms = false;
  /// Whether the tensor-core kernels keep the scores unscaled until the
  /// softmax folds scale * log2(e) into the FFMA before each exponent (one
  /// instruction per score less; attention_tile_steps.cuh): wherever no
  /// score term needs the scaled score and scale * log2(e) is a positive
  /// normal float, so that the raw scores' maximum is the scaled scores'
  /// maximum. The factor the softmax applies: scale * log2(e) then, else 1
  /// (scores in log2 units). Both live in the kernel's parameters, which
  /// every thread shares, so the factor takes no register of a thread's.
  /// (scale_folds is softmax_factor != 1 but for a factor of exactly 1,
  /// which gives the same scores either way; testing the float in the
  /// kernel instead cost the wgmma kernel 156 bytes of spills at D = 128.)
  bool scale_folds = false;
  float softmax_factor = 1.0f;
  /// 16-byte cp.async copies allowed for these operands (see load_path.hpp).
  bool vector_q = false, vector_k = false, vector_v = false;

  /// Query tiles per (batch, head): blockIdx.x enumerates (batch, head, tile).
  /// With packed_heads > 1 (tensor-core kernel only) a block's rows hold
  /// that many heads (head_packing.hpp) and blockIdx.x enumerates (batch,
  /// K/V head, tile of the packed rows).
  index_t query_tiles = 0;
  index_t packed_heads = 1;

  /// Split-KV: slice blockIdx.y covers key tiles
  /// [y * tiles_per_split, (y + 1) * tiles_per_split). With splits > 1 the
  /// kernel writes normalised partial outputs and lses to the workspace
  /// (split_workspace_layout) instead of `out`/`lse`.
  int splits = 1;
  index_t tiles_per_split = 0;
  accum* partial_out = nullptr;
  accum* partial_lse = nullptr;
};

/// Field by field, so a field added to attention_params must be added here.
template <class T, class Tout, class Tkv>
kernel_args<storage_t<T>, storage_t<Tkv>> make_kernel_args(const attention_params<T, Tout, Tkv>& p) {
  using S = storage_t<T>;
  using Skv = storage_t<Tkv>;
  kernel_args<S, Skv> a;
  attention_params<S, void, Skv>& d = a.p;
  d.q = reinterpret_cast<const S*>(p.q);
  d.k = reinterpret_cast<const Skv*>(p.k);
  d.v = reinterpret_cast<const Skv*>(p.v);
  d.out = static_cast<void*>(p.out);
  d.q_stride = p.q_stride;
  d.k_stride = p.k_stride;
  d.v_stride = p.v_stride;
  d.out_stride = p.out_stride;
  d.batch = p.batch;
  d.nq = p.nq;
  d.nk = p.nk;
  d.hq = p.hq;
  d.hk = p.hk;
  d.dim = p.dim;
  d.dim_v = p.dim_v;
  d.scale = p.scale;
  d.softcap = p.softcap;
  d.visible = p.visible;
  d.bias = p.bias;
  d.bias_stride = p.bias_stride;
  d.mask = p.mask;
  d.mask_stride = p.mask_stride;
  d.alibi_slopes = p.alibi_slopes;
  d.alibi_stride = p.alibi_stride;
  d.key_lengths = p.key_lengths;
  d.key_lengths_stride = p.key_lengths_stride;
  // Packed starts and the block table still point at host memory here;
  // configure_attention_launch points them at their device copies.
  d.query_starts = p.query_starts;
  d.query_starts_stride = p.query_starts_stride;
  d.key_starts = p.key_starts;
  d.key_starts_stride = p.key_starts_stride;
  d.block_table = p.block_table;
  d.block_table_stride_batch = p.block_table_stride_batch;
  d.block_table_stride_page = p.block_table_stride_page;
  d.page_size = p.page_size;
  d.pages = p.pages;
  d.unchecked_table = p.unchecked_table;
  d.weights_in_input_type = p.weights_in_input_type;
  d.k_scale = p.k_scale;
  d.v_scale = p.v_scale;
  d.k_scale_stride = p.k_scale_stride;
  d.v_scale_stride = p.v_scale_stride;
  d.lse = p.lse;
  d.lse_stride_batch = p.lse_stride_batch;
  d.lse_stride_head = p.lse_stride_head;
  d.lse_stride_query = p.lse_stride_query;
  d.q_chunk = p.q_chunk;
  d.kv_chunk = p.kv_chunk;
  d.threads = p.threads;
  d.scratch = p.scratch;

  a.out_kind = element_kind_of<Tout>();
  using accum = typename kernel_args<S>::accum;
  // log2(e) in the accumulation type's precision.
  const accum log2e = static_cast<accum>(1.44269504088896340735992468100189214L);
  a.scale_log2 = static_cast<accum>(p.scale) * log2e;
  a.has_terms = p.has_score_terms();
  // A normal float (a subnormal factor would read as 0 under -ftz).
  const float factor = static_cast<float>(a.scale_log2);
  a.scale_folds =
      !a.has_terms && factor >= std::numeric_limits<float>::min() && factor <= std::numeric_limits<float>::max();
  a.softmax_factor = a.scale_folds ? factor : 1.0f;
  a.vector_q = rows_are_vector_aligned(p.q, p.q_stride, p.dim, sizeof(T));
  // int8 rows are read 8 bytes (8 keys' elements) at a time: each widens to
  // 16 bytes of 16-bit elements in shared memory (tile_load.cuh).
  const std::size_t kv_vector = is_quantised_v<Tkv> ? 8 : 16;
  a.vector_k = rows_are_vector_aligned(p.k, p.k_stride, p.dim, sizeof(Tkv), kv_vector);
  a.vector_v = rows_are_vector_aligned(p.v, p.v_stride, p.dim_v, sizeof(Tkv), kv_vector);
  return a;
}

}  // namespace streamattn::detail::gpu
