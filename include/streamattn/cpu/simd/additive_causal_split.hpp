// The causal scan of one long sequence on several threads, bitwise the
// sequential scan of `causal_engine` (and so of `fastformer_decoder`).
//
// The sequential scan's result for token t is finalize(carry ⊕ leaf-so-far),
// where the carry is the left-to-right merge of the finished leaves' totals.
// A leaf's total depends on its own tokens only, so threads take leaves in
// order and each runs three passes over its leaf:
//   1. score the leaf for the first pooling (the scores are kept) and sum
//      its total; hand it down the first relay, receiving the carry of the
//      leaves before it;
//   2. replay the first pooling from the kept scores, reading q̄_t off
//      carry ⊕ leaf, form P_t = K_t ⊙ q̄_t (kept), score P for the second
//      pooling (kept) and sum its total; hand it down the second relay;
//   3. replay the second pooling, reading k̄_t off its carry (written over
//      P_t), and hand the rows to the output.
// Every score is computed once, as in the sequential scan; the extra work is
// the replays, O(D) per token against the scores' O(H·D), and a second read
// of the leaf's tokens (Q; K too with pool_raw_keys). A relay waits only for
// leaves handed out earlier, which are being worked on, so it cannot
// deadlock. The extra memory per thread is one leaf of P rows and scores
// (plus the caller's output tile): it depends on D and H, never on N.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "../../config.hpp"
#include "../../detail/additive_params.hpp"
#include "../../detail/additive_tree.hpp"
#include "../../detail/parallel.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "additive_rows.hpp"
#include "additive_scores.hpp"
#include "additive_state.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail::simd_additive {

/// Passes the carry (merged totals of all earlier leaves) from leaf to leaf,
/// in leaf order, between threads.
template <class Acc>
class carry_relay {
 public:
  void reshape(const additive_shape& s) {
    carry_.reshape(s);
    reset();
  }

  void reset() {
    carry_.reset();
    next_ = 0;
    failed_ = false;
  }

  /// Waits until every leaf before `leaf` has passed, copies their carry
  /// into `before` and adds `total` (leaf's own) to it for the next leaf.
  /// False when another leaf failed: then nothing more will pass.
  bool pass(index_t leaf, const pool_state<Acc>& total, pool_state<Acc>& before) {
    std::unique_lock<std::mutex> lock(mutex_);
    turn_.wait(lock, [&] { return next_ == leaf || failed_; });
    if (failed_) return false;
    before.assign(carry_);
    carry_.merge(total);
    ++next_;
    lock.unlock();
    turn_.notify_all();
    return true;
  }

  /// Releases every waiter (a leaf threw: the leaves after it never pass).
  void fail() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      failed_ = true;
    }
    turn_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable turn_;
  pool_state<Acc> carry_;
  index_t next_ = 0;
  bool failed_ = false;
};

/// The read-only part of a split causal scan, shared by its threads.
template <class Acc>
struct split_scan_setup {
  additive_shape shape;
  const score_weights_packed<Acc>* query_weights = nullptr;
  const score_weights_packed<Acc>* key_weights = nullptr;  // null: the first pooling only (prefix pool)
  keep_mask_ref mask;
  bool pool_raw_keys = false;
};

/// One thread's buffers for whole leaves.
template <class Acc, class T>
class leaf_scanner {
 public:
  leaf_scanner(const split_scan_setup<Acc>& setup, const token_operand<const T>& q, const token_operand<const T>& k)
      : setup_(setup), queries_(q, setup.shape.dim, tile_tokens) {
    const additive_shape& s = setup.shape;
    lanes_ = round_up_to_packets<Acc>(s.heads);
    const std::size_t leaf = static_cast<std::size_t>(additive_leaf_tokens);
    query_scores_.resize(leaf * static_cast<std::size_t>(lanes_));
    token_scores_.resize(static_cast<std::size_t>(lanes_));
    rows_.resize(leaf * static_cast<std::size_t>(s.dim));
    keep_.reset(new bool[leaf]);
    for (pool_state<Acc>* st : {&first_leaf_, &first_carry_, &second_leaf_, &second_carry_}) st->reshape(s);
    scratch_.reshape(s);
    if (setup.key_weights) {
      keys_.reshape(k, s.dim, tile_tokens);
      key_scores_.resize(query_scores_.size());
      query_.resize(static_cast<std::size_t>(s.dim));
    }
  }

  /// Runs leaf `leaf` of sequence b; `emit(first, count, rows)` then gets its
  /// results: row t - first of `rows` (D apart) is q̄_t for a prefix pool,
  /// k̄_t otherwise. False when a relay failed (nothing was emitted).
  template <class Emit>
  bool run(index_t b, index_t leaf, carry_relay<Acc>& first_relay, carry_relay<Acc>& second_relay, Emit&& emit) {
    const index_t first = leaf * additive_leaf_tokens;
    const index_t count = std::min(setup_.shape.tokens, first + additive_leaf_tokens) - first;
    sum_first_pooling(b, first, count);
    if (!first_relay.pass(leaf, first_leaf_, first_carry_)) return false;
    replay_first_pooling(b, first, count);
    if (setup_.key_weights) {
      if (!second_relay.pass(leaf, second_leaf_, second_carry_)) return false;
      replay_second_pooling(b, first, count);
    }
    emit(first, count, static_cast<const Acc*>(rows_.data()));
    return true;
  }

 private:
  auto keep_of(index_t b) const {
    return [this, b](index_t j) { return setup_.mask.keep(b, j); };
  }

  /// A copy of token t's kept scores for take_token, which may shift them.
  Acc* token_scores(const std::vector<Acc>& scores, index_t t) {
    std::copy_n(scores.data() + t * lanes_, lanes_, token_scores_.data());
    return token_scores_.data();
  }

  void take(pool_state<Acc>& state, const std::vector<Acc>& scores, index_t t, const Acc* row) {
    take_token(state, token_scores(scores, t), keep_[t], setup_.mask.exclude, row, scratch_);
  }

  // Pass 1: the leaf's first-pooling scores, kept, and its total.
  void sum_first_pooling(index_t b, index_t first, index_t count) {
    first_leaf_.reset();
    for (index_t t0 = 0; t0 < count; t0 += tile_tokens) {
      const index_t t1 = std::min(count, t0 + tile_tokens);
      const row_tile<Acc> q = queries_.tile(b, first + t0, first + t1, keep_of(b), false, keep_.get() + t0);
      score_rows(*setup_.query_weights, q, query_scores_.data() + t0 * lanes_, lanes_);
      for (index_t r = 0; r < q.count; ++r) take(first_leaf_, query_scores_, t0 + r, q.row(r));
    }
  }

  // Pass 2: q̄_t per token; for a prefix pool that is the result, otherwise
  // P_t = K_t ⊙ q̄_t goes to rows_, its scores are kept and the second
  // pooling's total is summed.
  void replay_first_pooling(index_t b, index_t first, index_t count) {
    const index_t dim = setup_.shape.dim;
    const bool keys = setup_.key_weights != nullptr;
    bool key_keep[tile_tokens];
    first_leaf_.reset();
    second_leaf_.reset();
    for (index_t t0 = 0; t0 < count; t0 += tile_tokens) {
      const index_t t1 = std::min(count, t0 + tile_tokens);
      const row_tile<Acc> q = queries_.tile(b, first + t0, first + t1, keep_of(b), false, keep_.get() + t0);
      row_tile<Acc> k{};
      if (keys) k = keys_.tile(b, first + t0, first + t1, keep_of(b), false, key_keep);
      for (index_t r = 0; r < q.count; ++r) {
        take(first_leaf_, query_scores_, t0 + r, q.row(r));
        Acc* row = rows_.data() + (t0 + r) * dim;
        if (!keys) {
          finalize_pair(first_carry_, first_leaf_, row, scratch_);
          continue;
        }
        finalize_pair(first_carry_, first_leaf_, query_.data(), scratch_);
        const Acc* key = k.row(r);
        for (index_t f = 0; f < dim; ++f) row[f] = key[f] * query_[static_cast<std::size_t>(f)];
      }
      if (!keys) continue;
      const row_tile<Acc> keyed{rows_.data() + t0 * dim, dim, q.count};
      score_rows(*setup_.key_weights, keyed, key_scores_.data() + t0 * lanes_, lanes_);
      for (index_t r = 0; r < q.count; ++r)
        take(second_leaf_, key_scores_, t0 + r, setup_.pool_raw_keys ? k.row(r) : keyed.row(r));
    }
  }

  // Pass 3: k̄_t per token, written over P_t once P_t has been pooled.
  void replay_second_pooling(index_t b, index_t first, index_t count) {
    const index_t dim = setup_.shape.dim;
    bool key_keep[tile_tokens];
    second_leaf_.reset();
    for (index_t t0 = 0; t0 < count; t0 += tile_tokens) {
      const index_t t1 = std::min(count, t0 + tile_tokens);
      row_tile<Acc> k{};
      if (setup_.pool_raw_keys) k = keys_.tile(b, first + t0, first + t1, keep_of(b), false, key_keep);
      for (index_t r = 0; r < t1 - t0; ++r) {
        Acc* row = rows_.data() + (t0 + r) * dim;
        take(second_leaf_, key_scores_, t0 + r, setup_.pool_raw_keys ? k.row(r) : row);
        finalize_pair(second_carry_, second_leaf_, row, scratch_);
      }
    }
  }

  const split_scan_setup<Acc>& setup_;
  row_reader<Acc, T> queries_, keys_;
  index_t lanes_ = 0;
  std::vector<Acc> query_scores_, key_scores_, token_scores_, rows_, query_;
  std::unique_ptr<bool[]> keep_;  // the leaf's mask bits
  pool_state<Acc> first_leaf_, first_carry_, second_leaf_, second_carry_;
  row_scratch<Acc> scratch_;
};

/// A causal scan that runs each sequence on several threads, leaf by leaf.
template <class Acc, class T>
class split_causal_scan {
 public:
  split_causal_scan(const split_scan_setup<Acc>& setup, const token_operand<const T>& q,
                    const token_operand<const T>& k, int threads)
      : setup_(setup), threads_(threads) {
    first_relay_.reshape(setup.shape);
    second_relay_.reshape(setup.shape);
    scanners_.reserve(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) scanners_.push_back(std::make_unique<leaf_scanner<Acc, T>>(setup_, q, k));
  }
  split_causal_scan(const split_causal_scan&) = delete;
  split_causal_scan& operator=(const split_causal_scan&) = delete;

  /// Scans sequence b; `emit(worker, first, count, rows)` receives every
  /// leaf's results (see leaf_scanner::run) on the thread that computed them.
  template <class Emit>
  void run(index_t b, Emit&& emit) {
    first_relay_.reset();
    second_relay_.reset();
    parallel_for(leaf_count(setup_.shape.tokens), threads_, [&](index_t leaf, int worker) {
      try {
        scanners_[static_cast<std::size_t>(worker)]->run(
            b, leaf, first_relay_, second_relay_,
            [&](index_t first, index_t count, const Acc* rows) { emit(worker, first, count, rows); });
      } catch (...) {
        first_relay_.fail();  // the leaves after this one would wait forever
        second_relay_.fail();
        throw;
      }
    });
  }

 private:
  split_scan_setup<Acc> setup_;
  int threads_;
  carry_relay<Acc> first_relay_, second_relay_;
  std::vector<std::unique_ptr<leaf_scanner<Acc, T>>> scanners_;
};

}  // namespace streamattn::detail::simd_additive

STREAMATTN_SIMD_DIAGNOSTICS_END
