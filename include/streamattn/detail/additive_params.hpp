// The plain parameter structs every additive-pooling / Fastformer kernel
// reads: pointers, sizes and strides, filled once after validation. Their
// accessors are host/device functions: the CUDA kernels read the same structs.
#pragma once

#include "../config.hpp"

namespace streamattn::detail {

/// The official module's mask term: (1 - mask) * -10000, added after scaling.
inline constexpr double additive_mask_penalty = -10000.0;

/// A (batch, token, feature) operand.
template <class T>
struct token_operand {
  T* data = nullptr;
  index_t batch_stride = 0, token_stride = 0, feature_stride = 0;

  STREAMATTN_HOST_DEVICE T* row(index_t b, index_t j) const { return data + b * batch_stride + j * token_stride; }
  STREAMATTN_HOST_DEVICE T& at(index_t b, index_t j, index_t f) const { return row(b, j)[f * feature_stride]; }
};

/// Score weights of one pooling stage: dense (heads, dim) or per-head
/// (heads, head_dim), with an optional bias per head.
template <class W>
struct score_weights_ref {
  const W* data = nullptr;
  index_t head_stride = 0, feature_stride = 0;
  const W* bias = nullptr;  // null: no bias
  index_t bias_stride = 0;

  STREAMATTN_HOST_DEVICE W at(index_t h, index_t f) const { return data[h * head_stride + f * feature_stride]; }
  STREAMATTN_HOST_DEVICE W bias_of(index_t h) const { return bias ? bias[h * bias_stride] : W(0); }
};

/// The (batch, token) keep-mask; null keeps every token.
struct keep_mask_ref {
  const bool* data = nullptr;
  index_t batch_stride = 0, token_stride = 0;
  /// false: official additive mode (padded scores get -10000);
  /// true: padded tokens are excluded (weight exactly 0).
  bool exclude = false;

  STREAMATTN_HOST_DEVICE bool keep(index_t b, index_t j) const {
    return data == nullptr || data[b * batch_stride + j * token_stride];
  }
  STREAMATTN_HOST_DEVICE bool any() const { return data != nullptr; }
};

/// Sizes shared by every additive kernel. `per_head`: a head's score reads
/// only its own head_dim features (weights (heads, head_dim)); otherwise the
/// weights are dense (heads, dim).
struct additive_shape {
  index_t batch = 0, tokens = 0, dim = 0, heads = 1, head_dim = 0;
  bool per_head = false;

  /// Length of one head's weight row.
  STREAMATTN_HOST_DEVICE index_t weight_length() const { return per_head ? head_dim : dim; }
  /// First feature a head's weight row applies to (0 for dense weights).
  STREAMATTN_HOST_DEVICE index_t weight_offset(index_t h) const { return per_head ? h * head_dim : 0; }
};

/// `additive_pool` (out is (B, D)) and `additive_prefix_pool` (prefix is
/// (B, N, D)).
template <class T, class W, class Tout>
struct additive_pool_params {
  additive_shape shape;
  token_operand<const T> x;
  score_weights_ref<W> w;
  double scale = 1.0;
  keep_mask_ref mask;
  int threads = 0;

  bool causal = false;            // true: write every prefix pooling to `prefix`
  Tout* out = nullptr;            // (B, D) when !causal
  index_t out_batch_stride = 0, out_feature_stride = 0;
  token_operand<Tout> prefix;     // (B, N, D) when causal
};

/// `fastformer_attention`.
template <class T, class W, class Tout>
struct fastformer_params {
  additive_shape shape;
  token_operand<const T> q, k, v;  // v aliases q for the official V = Q
  token_operand<Tout> out;
  score_weights_ref<W> query_att, key_att;
  double scale = 1.0;
  keep_mask_ref mask;

  const W* transform = nullptr;   // (D_out, D_in) = (D, D): y = W_t u
  index_t transform_row_stride = 0, transform_col_stride = 0;
  const W* transform_bias = nullptr;
  index_t transform_bias_stride = 0;

  bool pool_raw_keys = false;
  bool causal = false;
  bool residual = true;           // only with a transform
  int threads = 0;

  bool has_transform() const { return transform != nullptr; }
  W transform_at(index_t row, index_t col) const {
    return transform[row * transform_row_stride + col * transform_col_stride];
  }
  W transform_bias_of(index_t row) const {
    return transform_bias ? transform_bias[row * transform_bias_stride] : W(0);
  }
};

}  // namespace streamattn::detail
