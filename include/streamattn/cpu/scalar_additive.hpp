// The scalar backend of additive pooling and Fastformer: the streaming
// algorithm in plain loops, single-threaded, the second oracle.
//
// Non-causal Fastformer is three passes over a sequence, none of which
// allocates anything that grows with N:
//   1. pool Q with the scores Q_j . W_qa[h]                       -> q̄
//   2. pool K with the scores K_j . (W_ka[h] ⊙ q̄), which are the
//      official P_j . W_ka[h] without forming P                     -> k̄ (= q̄ ⊙ pooled K)
//   3. U_i = V_i ⊙ k̄, then Y_i = W_t U_i + b_t (+ Q_i).
// Passes 1 and 2 accumulate leaves of tokens and merge them in the fixed
// tree of additive_tree.hpp. The causal form is one pass of `causal_scan`.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "../backend.hpp"
#include "../detail/additive_params.hpp"
#include "../detail/additive_state.hpp"
#include "../detail/additive_tree.hpp"
#include "../detail/element.hpp"

namespace streamattn::detail::scalar_additive {

/// One token's D features, converted to the accumulation type.
template <class Acc, class T>
void load_row(const T* row, index_t feature_stride, index_t dim, Acc* out) {
  for (index_t f = 0; f < dim; ++f) out[f] = convert<Acc>(row[f * feature_stride]);
}

/// Score weights copied to a contiguous (heads x weight_length) matrix.
template <class Acc, class W>
std::vector<Acc> load_weights(const score_weights_ref<W>& w, const additive_shape& s) {
  std::vector<Acc> m(static_cast<std::size_t>(s.heads * s.weight_length()));
  for (index_t h = 0; h < s.heads; ++h)
    for (index_t f = 0; f < s.weight_length(); ++f)
      m[static_cast<std::size_t>(h * s.weight_length() + f)] = static_cast<Acc>(w.at(h, f));
  return m;
}

/// scores[h] = scale * (x . weights[h]); the bias is left out (it cancels).
template <class Acc>
void score_token(const Acc* x, const Acc* weights, const additive_shape& s, Acc scale, Acc* scores) {
  const index_t length = s.weight_length();
  for (index_t h = 0; h < s.heads; ++h) {
    const Acc* w = weights + h * length;
    const Acc* xs = x + s.weight_offset(h);
    Acc dot = 0;
    for (index_t f = 0; f < length; ++f) dot += xs[f] * w[f];
    scores[h] = scale * dot;
  }
}

/// Owns the states of the reduction tree of one sequence.
template <class Acc>
struct tree_states {
  std::vector<std::unique_ptr<head_softmax_states<Acc>>> owned;
  std::vector<head_softmax_states<Acc>*> levels;

  tree_states(const additive_shape& s, index_t tokens) {
    const int depth = tree_depth(leaf_count(tokens)) + 1;
    for (int d = 0; d < depth; ++d) {
      owned.push_back(std::make_unique<head_softmax_states<Acc>>(s.heads, s.head_dim));
      levels.push_back(owned.back().get());
    }
  }
  head_softmax_states<Acc>& result() { return *levels[0]; }
};

/// Pools tokens x[b, :] of a sequence with the given weights into `pooled` (D).
template <class Acc, class T>
void pool_sequence(const token_operand<const T>& x, index_t b, const additive_shape& s, const Acc* weights,
                   Acc scale, const keep_mask_ref& mask, tree_states<Acc>& tree, Acc* pooled) {
  head_softmax_states<Acc>& result = tree.result();
  result.reset();
  if (s.tokens > 0) {
    std::vector<Acc> row(static_cast<std::size_t>(s.dim)), scores(static_cast<std::size_t>(s.heads));
    auto leaf = [&](index_t index, head_softmax_states<Acc>& state) {
      state.reset();
      const index_t first = index * additive_leaf_tokens;
      const index_t end = std::min(s.tokens, first + additive_leaf_tokens);
      for (index_t j = first; j < end; ++j) {
        const bool keep = mask.keep(b, j);
        if (!keep && mask.exclude) continue;
        load_row(x.row(b, j), x.feature_stride, s.dim, row.data());
        score_token(row.data(), weights, s, scale, scores.data());
        state.update(scores.data(), keep, mask.exclude, row.data(), 1);
      }
    };
    reduce_tree(leaf_range{0, leaf_count(s.tokens)}, result, tree.levels.data() + 1, leaf);
  }
  result.finalize(pooled);
}

/// The causal recurrence of one sequence, a token at a time (see
/// `fastformer_options`): prefix states of both poolings, each kept as the
/// merged state of the finished leaves ("carry") plus the running state of
/// the current leaf, so float sums never run over more than one leaf.
/// Also the engine of `fastformer_decoder` on the scalar backend.
template <class Acc>
class causal_scan {
 public:
  /// `key_weights` may be null for a scan of the first pooling only.
  template <class W>
  causal_scan(const additive_shape& s, const score_weights_ref<W>& query_att, const score_weights_ref<W>* key_att,
              Acc scale, bool exclude_masked, bool pool_raw_keys)
      : s_(s),
        scale_(scale),
        exclude_(exclude_masked),
        pool_raw_keys_(pool_raw_keys),
        query_weights_(load_weights<Acc>(query_att, s)),
        key_weights_(key_att ? load_weights<Acc>(*key_att, s) : std::vector<Acc>{}),
        query_carry_(s.heads, s.head_dim),
        query_leaf_(s.heads, s.head_dim),
        key_carry_(s.heads, s.head_dim),
        key_leaf_(s.heads, s.head_dim),
        merged_(s.heads, s.head_dim),
        scores_(static_cast<std::size_t>(s.heads)),
        query_(static_cast<std::size_t>(s.dim)),
        keyed_(static_cast<std::size_t>(s.dim)),
        key_(static_cast<std::size_t>(s.dim)) {}

  void reset() {
    query_carry_.reset();
    query_leaf_.reset();
    key_carry_.reset();
    key_leaf_.reset();
    position_ = 0;
  }

  index_t position() const { return position_; }

  /// Feeds token t's query row (D, contiguous); returns q̄_t (D).
  const Acc* push_query(const Acc* q, bool keep) {
    start_token();
    advance_query(q, keep);
    finish_token();
    return query_.data();
  }

  /// Feeds token t's query and key rows; returns k̄_t (D).
  const Acc* push(const Acc* q, const Acc* k, bool keep) {
    start_token();
    advance_query(q, keep);
    // P_t = K_t ⊙ q̄_t, scored by W_ka.
    for (index_t f = 0; f < s_.dim; ++f) keyed_[static_cast<std::size_t>(f)] = k[f] * query_[static_cast<std::size_t>(f)];
    score_token(keyed_.data(), key_weights_.data(), s_, scale_, scores_.data());
    key_leaf_.update(scores_.data(), keep, exclude_, pool_raw_keys_ ? k : keyed_.data(), 1);
    finalize_prefix(key_carry_, key_leaf_, key_.data());
    finish_token();
    return key_.data();
  }

 private:
  void start_token() {
    if (position_ > 0 && position_ % additive_leaf_tokens == 0) {
      query_carry_.merge(query_leaf_);
      query_leaf_.reset();
      key_carry_.merge(key_leaf_);
      key_leaf_.reset();
    }
  }
  void finish_token() { ++position_; }

  void advance_query(const Acc* q, bool keep) {
    score_token(q, query_weights_.data(), s_, scale_, scores_.data());
    query_leaf_.update(scores_.data(), keep, exclude_, q, 1);
    finalize_prefix(query_carry_, query_leaf_, query_.data());
  }

  void finalize_prefix(const head_softmax_states<Acc>& carry, const head_softmax_states<Acc>& leaf, Acc* out) {
    merged_.assign(carry);
    merged_.merge(leaf);
    merged_.finalize(out);
  }

  additive_shape s_;
  Acc scale_;
  bool exclude_, pool_raw_keys_;
  std::vector<Acc> query_weights_, key_weights_;
  head_softmax_states<Acc> query_carry_, query_leaf_, key_carry_, key_leaf_, merged_;
  std::vector<Acc> scores_, query_, keyed_, key_;
  index_t position_ = 0;
};

/// Writes one output row from U_t (D): U itself, or W_t U_t + b_t (+ Q_t).
template <class Acc, class Params, class Q, class Out>
void write_output_row(const Params& p, const Acc* u, const Q* q_row, index_t q_stride, Out* out_row,
                      index_t out_stride) {
  const index_t dim = p.shape.dim;
  for (index_t o = 0; o < dim; ++o) {
    Acc y = u[o];
    if (p.has_transform()) {
      y = static_cast<Acc>(p.transform_bias_of(o));
      for (index_t i = 0; i < dim; ++i) y += static_cast<Acc>(p.transform_at(o, i)) * u[i];
      if (p.residual) y += convert<Acc>(q_row[o * q_stride]);
    }
    out_row[o * out_stride] = convert<Out>(y);
  }
}

}  // namespace streamattn::detail::scalar_additive

namespace streamattn::detail {

template <class T, class W, class Tout>
void additive_pool_impl(scalar_t, const additive_pool_params<T, W, Tout>& p) {
  using Acc = accum_t<T>;
  using namespace scalar_additive;
  const additive_shape& s = p.shape;
  const Acc scale = static_cast<Acc>(p.scale);
  std::vector<Acc> row(static_cast<std::size_t>(s.dim));

  if (p.causal) {
    causal_scan<Acc> scan(s, p.w, static_cast<const score_weights_ref<W>*>(nullptr), scale, p.mask.exclude, false);
    for (index_t b = 0; b < s.batch; ++b) {
      scan.reset();
      for (index_t t = 0; t < s.tokens; ++t) {
        load_row(p.x.row(b, t), p.x.feature_stride, s.dim, row.data());
        const Acc* pooled = scan.push_query(row.data(), p.mask.keep(b, t));
        for (index_t f = 0; f < s.dim; ++f) p.prefix.at(b, t, f) = convert<Tout>(pooled[f]);
      }
    }
    return;
  }

  const std::vector<Acc> weights = load_weights<Acc>(p.w, s);
  tree_states<Acc> tree(s, s.tokens);
  for (index_t b = 0; b < s.batch; ++b) {
    pool_sequence(p.x, b, s, weights.data(), scale, p.mask, tree, row.data());
    for (index_t f = 0; f < s.dim; ++f) p.out[b * p.out_batch_stride + f * p.out_feature_stride] = convert<Tout>(row[f]);
  }
}

template <class T, class W, class Tout>
void fastformer_impl(scalar_t, const fastformer_params<T, W, Tout>& p) {
  using Acc = accum_t<T>;
  using namespace scalar_additive;
  const additive_shape& s = p.shape;
  const Acc scale = static_cast<Acc>(p.scale);
  std::vector<Acc> u(static_cast<std::size_t>(s.dim));

  if (p.causal) {
    std::vector<Acc> q(static_cast<std::size_t>(s.dim)), k(static_cast<std::size_t>(s.dim));
    causal_scan<Acc> scan(s, p.query_att, &p.key_att, scale, p.mask.exclude, p.pool_raw_keys);
    for (index_t b = 0; b < s.batch; ++b) {
      scan.reset();
      for (index_t t = 0; t < s.tokens; ++t) {
        load_row(p.q.row(b, t), p.q.feature_stride, s.dim, q.data());
        load_row(p.k.row(b, t), p.k.feature_stride, s.dim, k.data());
        const Acc* kbar = scan.push(q.data(), k.data(), p.mask.keep(b, t));
        const T* v_row = p.v.row(b, t);
        for (index_t f = 0; f < s.dim; ++f) u[static_cast<std::size_t>(f)] = convert<Acc>(v_row[f * p.v.feature_stride]) * kbar[f];
        write_output_row(p, u.data(), p.q.row(b, t), p.q.feature_stride, p.out.row(b, t), p.out.feature_stride);
      }
    }
    return;
  }

  const std::vector<Acc> query_weights = load_weights<Acc>(p.query_att, s);
  const std::vector<Acc> key_att = load_weights<Acc>(p.key_att, s);
  std::vector<Acc> key_weights(key_att.size());
  std::vector<Acc> qbar(static_cast<std::size_t>(s.dim)), kbar(static_cast<std::size_t>(s.dim));
  tree_states<Acc> tree(s, s.tokens);
  const index_t length = s.weight_length();
  for (index_t b = 0; b < s.batch; ++b) {
    pool_sequence(p.q, b, s, query_weights.data(), scale, p.mask, tree, qbar.data());
    // c_j = P_j . W_ka[h] = K_j . (W_ka[h] ⊙ q̄): fold q̄ into the weights once.
    for (index_t h = 0; h < s.heads; ++h)
      for (index_t f = 0; f < length; ++f)
        key_weights[static_cast<std::size_t>(h * length + f)] =
            key_att[static_cast<std::size_t>(h * length + f)] * qbar[static_cast<std::size_t>(s.weight_offset(h) + f)];
    pool_sequence(p.k, b, s, key_weights.data(), scale, p.mask, tree, kbar.data());
    // Pooling P = K ⊙ q̄ is q̄ ⊙ (pooled K): q̄ is the same for every token.
    if (!p.pool_raw_keys)
      for (index_t f = 0; f < s.dim; ++f) kbar[static_cast<std::size_t>(f)] *= qbar[static_cast<std::size_t>(f)];
    for (index_t i = 0; i < s.tokens; ++i) {
      const T* v_row = p.v.row(b, i);
      for (index_t f = 0; f < s.dim; ++f)
        u[static_cast<std::size_t>(f)] = convert<Acc>(v_row[f * p.v.feature_stride]) * kbar[static_cast<std::size_t>(f)];
      write_output_row(p, u.data(), p.q.row(b, i), p.q.feature_stride, p.out.row(b, i), p.out.feature_stride);
    }
  }
}

}  // namespace streamattn::detail
