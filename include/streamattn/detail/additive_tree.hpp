// The fixed order in which a sequence's pooling is summed.
//
// Summing a million float rows one after another loses about 1e-3 relative
// accuracy. Instead a sequence is cut into leaves of `additive_leaf_tokens`
// tokens; each leaf is accumulated on its own, and leaves combine pairwise in
// a balanced binary tree (the online-softmax merge is associative), so the
// error grows with the leaf length plus log2(number of leaves).
//
// The tree's shape depends only on N. Parallel code computes whole subtrees
// on whichever thread is free and combines them in the same tree, so the
// result is bitwise identical for every thread count. The causal scan uses
// the same leaves: a running state per leaf plus the merged state of all
// earlier leaves ("carry").
#pragma once

#include <algorithm>
#include <vector>

#include "../config.hpp"

namespace streamattn::detail {

inline constexpr index_t additive_leaf_tokens = 1024;

inline index_t leaf_count(index_t tokens) { return (tokens + additive_leaf_tokens - 1) / additive_leaf_tokens; }

/// A run of leaves [first, end).
struct leaf_range {
  index_t first = 0, end = 0;
  index_t size() const { return end - first; }
  index_t middle() const { return first + size() / 2; }
};

/// Depth of the tree over `leaves` leaves (a single leaf has depth 0).
inline int tree_depth(index_t leaves) {
  int depth = 0;
  while ((index_t{1} << depth) < leaves) ++depth;
  return depth;
}

/// Computes the tree over `range` into `result`. `scratch` holds at least
/// tree_depth(range.size()) states, one per level below this one.
/// `leaf(index, state)` must reset `state` and accumulate leaf `index` into it.
template <class State, class Leaf>
void reduce_tree(leaf_range range, State& result, State* const* scratch, Leaf&& leaf) {
  if (range.size() == 1) {
    leaf(range.first, result);
    return;
  }
  State& right = **scratch;
  reduce_tree(leaf_range{range.first, range.middle()}, result, scratch + 1, leaf);
  reduce_tree(leaf_range{range.middle(), range.end}, right, scratch + 1, leaf);
  result.merge(right);
}

/// The subtrees `levels` below `range` (or leaves, where the tree is
/// shallower), in order: the independent work items of a parallel reduction.
inline void list_subtrees(leaf_range range, int levels, std::vector<leaf_range>& out) {
  if (levels == 0 || range.size() == 1) {
    out.push_back(range);
    return;
  }
  list_subtrees({range.first, range.middle()}, levels - 1, out);
  list_subtrees({range.middle(), range.end}, levels - 1, out);
}

/// Combines the subtree results in `slots` (in list_subtrees order) up the
/// same tree; returns the slot holding the result. `next` counts the slots
/// consumed.
template <class State>
std::size_t combine_subtrees(leaf_range range, int levels, State* const* slots, std::size_t& next) {
  if (levels == 0 || range.size() == 1) return next++;
  const std::size_t left = combine_subtrees({range.first, range.middle()}, levels - 1, slots, next);
  const std::size_t right = combine_subtrees({range.middle(), range.end}, levels - 1, slots, next);
  slots[left]->merge(*slots[right]);
  return left;
}

/// How many levels to split so that `workers` threads get several subtrees
/// each (uneven leaves balance out), without splitting below single leaves.
inline int split_levels(index_t leaves, int workers) {
  if (workers <= 1) return 0;
  int levels = 0;
  while ((index_t{1} << levels) < 4 * static_cast<index_t>(workers) && (index_t{1} << levels) < leaves) ++levels;
  return levels;
}

}  // namespace streamattn::detail
