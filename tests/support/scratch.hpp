// Checking that a call stays inside the scratch memory workspace_size
// reports for it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include <streamattn/streamattn.hpp>

namespace streamattn::testing {

/// Runs the simd backend with `opts.scratch` of exactly workspace_size bytes,
/// followed by guard bytes; returns whether the guard bytes are untouched
/// (and the scratch size in `bytes`).
template <class Q, class K, class V, class O>
bool stays_within_workspace(view<Q, 4> q, view<K, 4> k, view<V, 4> v, view<O, 4> out, attention_options opts,
                            std::size_t& bytes) {
  bytes = workspace_size(simd, q, k, v, out, opts);
  constexpr std::size_t guard = 4096;
  constexpr unsigned char mark = 0xAB;
  std::vector<unsigned char> buffer(bytes + guard, mark);
  opts.scratch = {buffer.data(), bytes};
  attention(simd, q, k, v, out, opts);
  return std::all_of(buffer.begin() + static_cast<std::ptrdiff_t>(bytes), buffer.end(),
                     [](unsigned char x) { return x == mark; });
}

}  // namespace streamattn::testing
