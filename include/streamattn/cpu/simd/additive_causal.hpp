// The causal (prefix) scan of the simd backend, a tile of tokens at a time;
// also the engine of `fastformer_decoder` on simd, fed one token per call.
//
// Per tile: the first pooling's scores of all rows come from one
// micro-kernel call; then, row by row, the running state takes the row and
// q̄_t is read off (carry of finished leaves ⊕ the current leaf), giving
// P_t = K_t ⊙ q̄_t; the second pooling's scores of all rows come from a
// second micro-kernel call on the P rows; then, row by row again, the second
// state takes them and k̄_t is read off. The definition is in
// `fastformer_options`. Cost O(H*D) per token, state O(D).
#pragma once

#include <vector>

#include "../../config.hpp"
#include "../../detail/additive_params.hpp"
#include "../../detail/additive_tree.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "additive_rows.hpp"
#include "additive_scores.hpp"
#include "additive_state.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd_additive {

template <class Acc>
class causal_engine {
 public:
  /// `key_att` null: a scan of the first pooling only (prefix pooling).
  template <class W>
  causal_engine(const additive_shape& s, const score_weights_ref<W>& query_att, const score_weights_ref<W>* key_att,
                Acc scale, bool exclude_masked, bool pool_raw_keys)
      : s_(s), exclude_(exclude_masked), pool_raw_keys_(pool_raw_keys), keys_(key_att != nullptr) {
    lanes_ = round_up_to_packets<Acc>(s.heads);
    query_weights_.reshape(s);
    query_weights_.fill(query_att, scale);
    if (keys_) {
      key_weights_.reshape(s);
      key_weights_.fill(*key_att, scale);
    }
    for (pool_state<Acc>* st : {&query_carry_, &query_leaf_, &key_carry_, &key_leaf_}) st->reshape(s);
    scores_.resize(static_cast<std::size_t>(tile_tokens * lanes_));
    keyed_.resize(static_cast<std::size_t>(tile_tokens * s.dim));
    query_.resize(static_cast<std::size_t>(s.dim));
    scratch_.reshape(s);
  }

  void reset() {
    for (pool_state<Acc>* st : {&query_carry_, &query_leaf_, &key_carry_, &key_leaf_}) st->reset();
    position_ = 0;
  }

  index_t position() const { return position_; }

  /// Feeds up to tile_tokens consecutive tokens that do not cross a leaf
  /// boundary: their query and key rows and their mask bits. Writes row r's
  /// prefix result (q̄_t for a first-pooling-only engine, k̄_t otherwise) to
  /// results + r * D.
  void push(const row_tile<Acc>& q, const row_tile<Acc>& k, const bool* keep, Acc* results) {
    if (position_ > 0 && position_ % additive_leaf_tokens == 0) {
      query_carry_.merge(query_leaf_);
      query_leaf_.reset();
      if (keys_) {
        key_carry_.merge(key_leaf_);
        key_leaf_.reset();
      }
    }
    const index_t dim = s_.dim, count = q.count;
    score_rows(query_weights_, q, scores_.data(), lanes_);
    for (index_t r = 0; r < count; ++r) {
      take_token(query_leaf_, scores_.data() + r * lanes_, keep[r], exclude_, q.row(r), scratch_);
      Acc* qbar = keys_ ? query_.data() : results + r * dim;
      finalize_pair(query_carry_, query_leaf_, qbar, scratch_);
      if (!keys_) continue;
      // P_t = K_t ⊙ q̄_t: the key row seen through the query of its own prefix.
      Acc* keyed = keyed_.data() + r * dim;
      const Acc* key = k.row(r);
      for (index_t f = 0; f < dim; ++f) keyed[f] = key[f] * qbar[f];
    }
    if (keys_) {
      const row_tile<Acc> keyed{keyed_.data(), dim, count};
      score_rows(key_weights_, keyed, scores_.data(), lanes_);
      for (index_t r = 0; r < count; ++r) {
        take_token(key_leaf_, scores_.data() + r * lanes_, keep[r], exclude_, pool_raw_keys_ ? k.row(r) : keyed.row(r),
                   scratch_);
        finalize_pair(key_carry_, key_leaf_, results + r * dim, scratch_);
      }
    }
    position_ += count;
  }

 private:
  additive_shape s_;
  bool exclude_, pool_raw_keys_, keys_;
  index_t lanes_ = 0;
  score_weights_packed<Acc> query_weights_, key_weights_;
  pool_state<Acc> query_carry_, query_leaf_, key_carry_, key_leaf_;
  std::vector<Acc> scores_, keyed_, query_;
  row_scratch<Acc> scratch_;
  index_t position_ = 0;
};

}  // namespace streamattn::detail::simd_additive

STREAMATTN_SIMD_DIAGNOSTICS_END
