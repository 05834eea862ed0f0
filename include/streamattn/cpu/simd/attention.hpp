// The simd backend of softmax attention: plans the call, hands work items
// (blocks of query rows of one batch and K/V head) to workers, and runs the
// wide or decode path on each with the worker's slab of scratch memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

#include "../../backend.hpp"
#include "../../detail/attention_params.hpp"
#include "../../detail/element.hpp"
#include "../../detail/parallel.hpp"
#include "../../detail/simd_diagnostics.hpp"
#include "../../detail/validate_attention.hpp"
#include "block.hpp"
#include "decode_block.hpp"
#include "plan.hpp"
#include "split_kv.hpp"
#include "wide_block.hpp"

STREAMATTN_SIMD_DIAGNOSTICS_BEGIN

namespace streamattn::detail {

template <class T, class Tout, class Tkv>
std::size_t attention_workspace_bytes(simd_t, const attention_params<T, Tout, Tkv>& p) {
  return simd::make_plan<accum_t<T>>(p).workspace_bytes();
}

template <class T, class Tout, class Tkv>
void attention_impl(simd_t, const attention_params<T, Tout, Tkv>& p) {
  using Acc = accum_t<T>;
  check_index_values("streamattn::attention", p);
  simd::simd_plan<Acc> plan = simd::make_plan<Acc>(p);
  if (plan.items == 0) {
    // No keys (zeros and lse = -inf) or no value dims (lse only): nothing to
    // stream, and the scalar loops produce exactly that.
    attention_impl(scalar_t{}, p);
    return;
  }

  // Scratch: the caller's if large enough for the split-KV partials and at
  // least one worker (fewer workers then), else one allocation for this call.
  // (A buffer sized for other shapes, or for other packed lengths, which
  // change the plan, may be too small for the partials.)
  std::unique_ptr<std::byte[]> owned;
  std::byte* base = nullptr;
  const std::size_t usable = p.scratch.bytes > simd::slab_alignment ? p.scratch.bytes - simd::slab_alignment : 0;
  if (usable >= plan.partial_bytes + plan.slab_bytes) {
    const std::size_t slabs = (usable - plan.partial_bytes) / plan.slab_bytes;
    plan.workers = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(plan.workers), slabs));
    base = static_cast<std::byte*>(p.scratch.data);
  } else {
    owned.reset(new std::byte[plan.workspace_bytes()]);
    base = owned.get();
  }
  const auto misalign = reinterpret_cast<std::uintptr_t>(base) % simd::slab_alignment;
  if (misalign) base += simd::slab_alignment - misalign;

  Acc* const partials = reinterpret_cast<Acc*>(base + static_cast<std::size_t>(plan.workers) * plan.slab_bytes);
  parallel_for(plan.items, plan.workers, [&](index_t item, int worker) {
    const simd::block<Acc, T, Tout, Tkv> blk(p, plan, item,
                                             base + static_cast<std::size_t>(worker) * plan.slab_bytes, partials);
    if (blk.rows == 0) return;  // a packed item shorter than the longest
    if (plan.decode)
      simd::run_decode_block(blk);
    else
      simd::run_wide_block(blk);
  });
  if (plan.splits > 1) simd::merge_split_kv(p, plan, partials);
}

}  // namespace streamattn::detail

STREAMATTN_SIMD_DIAGNOSTICS_END
