// The plain struct every additive (Fastformer) block program receives: the
// validated additive_pool_params / fastformer_params with device element
// types and the output's type erased, the plan's sizes and the workspace.
#pragma once

#include "../detail/additive_params.hpp"
#include "additive_plan.hpp"
#include "device_types.cuh"
#include "element_kind.hpp"

namespace streamattn::detail::gpu {

/// What the call computes.
enum class additive_job : unsigned char {
  pool,         // additive_pool: (B, D) out
  prefix_pool,  // additive_prefix_pool: (B, N, D) out
  fastformer,   // fastformer_attention: (B, N, D) out
};

template <class S>
struct additive_args {
  using accum = device_accum_t<S>;

  additive_job job = additive_job::pool;
  additive_shape shape;
  /// q is the pooled x of the pooling jobs; v aliases q for V = Q.
  token_operand<const S> q, k, v;
  score_weights_ref<accum> query_att, key_att;
  accum scale = 1;
  keep_mask_ref mask;
  bool causal = false;
  bool pool_raw_keys = false;
  bool residual = true;

  /// W_t (D_out, D_in) and b_t, or null.
  const accum* transform = nullptr;
  index_t transform_row_stride = 0, transform_col_stride = 0;
  const accum* transform_bias = nullptr;
  index_t transform_bias_stride = 0;

  /// (B, N, D) output, or (B, D) with token_stride 0 for `pool`.
  void* out = nullptr;
  element_kind out_kind = element_kind::f32;
  index_t out_batch_stride = 0, out_token_stride = 0, out_feature_stride = 0;

  index_t chunks = 1, chunk_tokens = 0;
  additive_smem_layout smem;
  /// Whether the steps that can stream do (streams(), additive_programs.cuh);
  /// false runs every step as a block program, which tests compare against.
  bool streaming = true;
  /// Whether the streaming chunk poolings may score on tensor cores
  /// (additive_plan_options::tensor_cores); false keeps them on FMAs, which
  /// tests and benchmarks compare against.
  bool tensor_cores = true;
  bool stream_pooling = false;
  /// additive_plan::causal_streaming; the warps' span states are in
  /// query_warp_totals and key_warp_totals.
  bool causal_streaming = false;
  additive_stream_layout stream;
  accum* workspace = nullptr;
  index_t query_totals = 0, query_carries = 0, key_totals = 0, key_carries = 0, pooled_query = 0, pooled_key = 0,
          query_warp_totals = 0, key_warp_totals = 0, transposed_transform = 0;

  STREAMATTN_HOST_DEVICE bool has_transform() const { return transform != nullptr; }
  STREAMATTN_HOST_DEVICE index_t out_offset(index_t b, index_t t, index_t f) const {
    return b * out_batch_stride + t * out_token_stride + f * out_feature_stride;
  }
};

template <class S, class T>
token_operand<const S> device_operand(const token_operand<const T>& x) {
  token_operand<const S> d;
  d.data = reinterpret_cast<const S*>(x.data);
  d.batch_stride = x.batch_stride;
  d.token_stride = x.token_stride;
  d.feature_stride = x.feature_stride;
  return d;
}

/// True when the call has no output element to write.
template <class S>
bool nothing_to_write(const additive_args<S>& a) {
  return a.shape.batch == 0 || a.shape.dim == 0 || (a.job != additive_job::pool && a.shape.tokens == 0);
}

/// The plan's sizes and workspace offsets.
template <class S>
void apply_plan(additive_args<S>& a, const additive_plan& plan, void* workspace) {
  a.chunks = plan.chunks;
  a.chunk_tokens = plan.chunk_tokens;
  a.smem = plan.smem;
  a.stream_pooling = plan.stream_pooling;
  a.causal_streaming = plan.causal_streaming;
  a.stream = plan.stream;
  a.workspace = static_cast<typename additive_args<S>::accum*>(workspace);
  a.query_totals = plan.query_totals();
  a.query_carries = plan.query_carries();
  a.key_totals = plan.key_totals();
  a.key_carries = plan.key_carries();
  a.pooled_query = plan.pooled_query();
  a.pooled_key = plan.pooled_key();
  a.query_warp_totals = plan.query_warp_totals();
  a.key_warp_totals = plan.key_warp_totals();
  a.transposed_transform = plan.transposed_transform();
}

/// Field by field from the validated parameters of additive_pool /
/// additive_prefix_pool.
template <class T, class W, class Tout>
additive_args<storage_t<T>> make_additive_args(const additive_pool_params<T, W, Tout>& p) {
  using S = storage_t<T>;
  static_assert(std::is_same_v<W, device_accum_t<S>>, "weights come in the accumulation type");
  additive_args<S> a;
  a.job = p.causal ? additive_job::prefix_pool : additive_job::pool;
  a.shape = p.shape;
  a.q = a.k = a.v = device_operand<S>(p.x);
  a.query_att = p.w;
  a.scale = static_cast<device_accum_t<S>>(p.scale);
  a.mask = p.mask;
  a.causal = p.causal;
  a.out_kind = element_kind_of<Tout>();
  if (p.causal) {
    a.out = static_cast<void*>(p.prefix.data);
    a.out_batch_stride = p.prefix.batch_stride;
    a.out_token_stride = p.prefix.token_stride;
    a.out_feature_stride = p.prefix.feature_stride;
  } else {
    a.out = static_cast<void*>(p.out);
    a.out_batch_stride = p.out_batch_stride;
    a.out_feature_stride = p.out_feature_stride;
  }
  return a;
}

/// Field by field from the validated parameters of fastformer_attention.
template <class T, class W, class Tout>
additive_args<storage_t<T>> make_additive_args(const fastformer_params<T, W, Tout>& p) {
  using S = storage_t<T>;
  static_assert(std::is_same_v<W, device_accum_t<S>>, "weights come in the accumulation type");
  additive_args<S> a;
  a.job = additive_job::fastformer;
  a.shape = p.shape;
  a.q = device_operand<S>(p.q);
  a.k = device_operand<S>(p.k);
  a.v = device_operand<S>(p.v);
  a.query_att = p.query_att;
  a.key_att = p.key_att;
  a.scale = static_cast<device_accum_t<S>>(p.scale);
  a.mask = p.mask;
  a.causal = p.causal;
  a.pool_raw_keys = p.pool_raw_keys;
  a.residual = p.residual;
  a.transform = p.transform;
  a.transform_row_stride = p.transform_row_stride;
  a.transform_col_stride = p.transform_col_stride;
  a.transform_bias = p.transform_bias;
  a.transform_bias_stride = p.transform_bias_stride;
  a.out = static_cast<void*>(p.out.data);
  a.out_kind = element_kind_of<Tout>();
  a.out_batch_stride = p.out.batch_stride;
  a.out_token_stride = p.out.token_stride;
  a.out_feature_stride = p.out.feature_stride;
  return a;
}

}  // namespace streamattn::detail::gpu
