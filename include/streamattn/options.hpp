// Options of softmax attention, with their documented defaults.
#pragma once

#include <cstddef>
#include <optional>

#include "config.hpp"
#include "tensor.hpp"

namespace streamattn {

/// Caller-provided scratch memory. When `bytes >= workspace_size(...)`, a
/// call allocates nothing on the heap (as long as it runs on the calling
/// thread: threads == 1, or a problem small enough not to start threads).
struct workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
};

/// Options of `attention`. All fields are optional and combine freely.
///
/// Score of query i against key j (per batch b and query head h):
///
///     s = scale * dot(q_i, k_j)
///     s = softcap * tanh(s / softcap)          if softcap > 0
///     s = s + bias(b, h, i, j)                  if bias is set
///     s = s - alibi_slopes(h) * |i + Nk - Nq - j|   if alibi_slopes is set
///     s = -inf   if mask(b, h, i, j) is false, or j is outside the causal /
///                window range below
///
/// Causal masking and windows are aligned to the bottom-right corner, as in
/// FlashAttention >= 2.1: with `offset = Nk - Nq`, query i sees key j iff
/// `i + offset - window_left <= j <= i + offset + window_right` and, when
/// causal, `j <= i + offset`. (PyTorch's `is_causal` aligns top-left instead;
/// the two agree when Nq == Nk.) With `key_lengths` or packed sequences
/// (`query_starts`, `key_starts`), Nq and Nk are batch item b's own counts.
/// A row that sees no key returns zeros and lse = -inf.
struct attention_options {
  /// Multiplier of q.k; defaults to 1/sqrt(D).
  std::optional<float> scale;
  /// Key j is visible to query i only if j <= i + Nk - Nq.
  bool causal = false;
  /// Sliding window around the aligned diagonal; -1 means unbounded.
  index_t window_left = -1;
  index_t window_right = -1;
  /// Logit soft-capping (Gemma 2, Grok): 0 disables it.
  float softcap = 0.0f;
  /// Additive bias in logical (batch, head, query, key) order. Any axis may
  /// broadcast with extent 1 or stride 0. -inf entries mask that score.
  view<const float, 4> bias{};
  /// Boolean keep-mask in logical (batch, head, query, key) order, broadcast
  /// like `bias`; false masks the score.
  view<const bool, 4> mask{};
  /// One ALiBi slope per query head.
  view<const float, 1> alibi_slopes{};
  /// Optional number of valid keys of each batch item (B values in [0, Nk];
  /// with `key_starts`, in [0, the item's packed key count]):
  /// a KV cache filled to a different length per sequence. Batch item b uses
  /// keys [0, key_lengths(b)) only; the rows past it are never read (they may
  /// hold anything). Everything that counts from Nk counts from
  /// key_lengths(b) instead: the causal/window diagonal is
  /// i + key_lengths(b) - Nq and so is ALiBi's distance, exactly as if the
  /// item had been called alone with k and v cut to its length. On the CPU
  /// backends a value outside [0, Nk] throws; the cuda backend reads the
  /// lengths on the device, where such a value is clamped to [0, Nk]. The
  /// simd backend splits a decode's keys by the longest length, not by Nk
  /// (a cache allocated for a long context splits like its fill), so the
  /// scratch `workspace_size` reports depends on the lengths too; it only
  /// grows with them, and the size without key_lengths serves every fill.
  view<const index_t, 1> key_lengths{};
  /// Packed variable-length sequences (FlashAttention's cu_seqlens): B + 1
  /// non-decreasing row offsets, in host memory. With `query_starts`, q and
  /// out have batch extent 1 and batch item b's queries are their rows
  /// [query_starts(b), query_starts(b + 1)); `lse` is then (1, heads, rows
  /// of q). `key_starts` packs k and v the same way. Either may be used
  /// alone (e.g. packed keys with a (B, 1, H, D) q). Every item is computed
  /// as if it had been called alone with its rows (up to rounding: the simd
  /// backend picks its tiles from the longest item): causal/window
  /// diagonals and ALiBi distances count from its own lengths, and bias and
  /// mask are indexed by positions within the item, with (batch, heads,
  /// longest query count, longest key count) as their full shape.
  /// key_lengths may shorten an item further. Rows outside every sequence
  /// are neither read nor written (nor are the backward's gradient rows
  /// there). The scratch `workspace_size` reports then depends on the
  /// starts' values too. The cuda backend copies the starts to the device
  /// (into its workspace) on every call, so they stay in host memory there
  /// too, and such a call cannot be captured into a CUDA graph.
  view<const index_t, 1> query_starts{};
  view<const index_t, 1> key_starts{};
  /// Paged KV cache (vLLM's block tables, FlashAttention's `block_table`):
  /// k and v are then a pool of pages, (pages, page size, Hk, D) and
  /// (pages, page size, Hk, Dv), and this (B, pages per item) table says
  /// which page holds each item's keys: key j of batch item b
  /// is row j % page_size of page block_table(b, j / page_size). Every item
  /// has Nk = pages per item x page size keys, the shape bias and mask are
  /// indexed with, unless key_lengths(b) says fewer. Only the entries of the
  /// pages an item's keys occupy are read (each must lie in [0, pages));
  /// the others may hold anything, -1 say. Items may share pages (a common
  /// prompt prefix). Queries may be packed (`query_starts`), keys may not.
  /// Forward only. On the CPU backends the table is host memory. On cuda it
  /// may be host or device memory. A device table (vLLM's way) is read where
  /// it is: nothing is copied or checked, an entry outside the pool reads
  /// page 0, and the call can be captured into a CUDA graph. A host table is
  /// copied to the device on every call, as the starts are. With key_lengths
  /// (device memory there) the host cannot tell which entries a call reads,
  /// so it checks none and an entry outside the pool reads page 0, as the
  /// lengths are clamped; without them it checks every entry.
  view<const index_t, 2> block_table{};
  /// Quantised KV cache: when k and v hold std::int8_t (symmetric int8,
  /// the query stays float, double, half or bfloat16), element d of key
  /// j's row of k stands for k(b, j, h, d) x k_scale(b, j, h), and likewise
  /// for v with v_scale. Each scale view is in k's (or v's) logical order
  /// without the dim axis: (batch, keys, heads), or (pages, page size,
  /// heads) with a block table, or (1, rows, heads) with key_starts; any
  /// axis may broadcast with extent 1: one scale per key and head
  /// (per-token quantisation), per key (B, Nk, 1), per head (1, 1, Hk), or
  /// per tensor (1, 1, 1). With a block table the scales' first axis
  /// counts pages, like k's. Required for an int8 k or v that has elements
  /// (even if no key is read), refused for any other; their values are not
  /// checked.
  /// A call computes what it computes on a cache holding x * scale, up to
  /// rounding: naive and scalar dequantise each value first, the simd
  /// decode path and the cuda kernels scale each key's dot product and
  /// softmax weight instead. Forward only, for now. On cuda the scales, like
  /// k and v, are device memory.
  view<const float, 3> k_scale{};
  view<const float, 3> v_scale{};
  /// Optional output (batch, head, query): log-sum-exp of each row's final
  /// scores (natural log); -inf for a row that sees no key.
  view<float, 3> lse{};
  /// Lets the cuda backend's tensor-core kernels (fp16/bf16 inputs) round
  /// the softmax weights to the inputs' type before P V, as FlashAttention
  /// and PyTorch's SDPA do: half the tensor-core work of P V, for an output
  /// error up to about the type's unit roundoff (2^-11 fp16, 2^-8 bf16)
  /// times the largest |v| the row sees. By default they keep the weights
  /// float-accurate (a 16-bit high part and its rounding error, two
  /// products). Every other backend and type keeps float weights and
  /// ignores it.
  bool weights_in_input_type = false;
  /// Tile sizes; 0 lets the backend choose from D and the cache sizes.
  /// (`simd` takes at most 2^24 keys per chunk.)
  index_t q_chunk = 0;
  index_t kv_chunk = 0;
  /// Worker threads of the simd backend; 0 = all hardware threads. Results are
  /// bitwise identical for every value.
  int threads = 0;
  /// Optional scratch memory (see `workspace_size`).
  workspace scratch{};
};

}  // namespace streamattn
