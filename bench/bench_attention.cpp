// Softmax attention: naive vs scalar vs simd over sequence length, head dim,
// heads, causal masking and threads, plus decode cases, over contiguous,
// paged and int8 KV caches.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/alloc_counter.hpp"
#include "support/workload.hpp"

namespace streamattn::bench {
namespace {

/// A KV cache filled to a different length per batch item: item b holds
/// Nk >> (2b) keys (all, a quarter, ...), told to the call either as
/// `key_lengths` or as the (B, 1, 1, Nk) keep-mask a user would otherwise pass;
/// or (`capacity`) a cache allocated for Nk keys and filled to Nk / 16 in
/// every item, told by `key_lengths`.
enum class ragged { none, key_lengths, mask, capacity };

struct attention_case {
  const char* backend;  // "naive", "scalar", "simd"
  index_t batch, nq, nk, hq, hk, dim;
  bool causal;
  int threads;
  ragged cache = ragged::none;
  /// Keys per page of a paged KV cache (block_table), 0 for contiguous k and
  /// v. The pages of all items are shuffled through one pool, as a cache
  /// that has served many requests leaves them.
  index_t page_size = 0;
  /// K and V held as int8 with one float scale per key and head (a
  /// quantised cache), instead of float.
  bool int8 = false;
  /// Gemma 2's logit capping, softcap * tanh(s / softcap) (0: none).
  float softcap = 0;
  /// A score term beyond the product: an additive (1, 1, Nq, Nk) bias (a
  /// relative-position table shared by the heads), ALiBi slopes, or a
  /// (1, 1, Nq, Nk) keep-mask (64 x 64 blocks in a checkerboard).
  enum term_kind { no_term, bias, alibi, mask } term = no_term;
};

index_t keys_of_item(const attention_case& c, index_t b) {
  if (c.cache == ragged::capacity) return c.nk / 16;
  return c.cache == ragged::none ? c.nk : std::max<index_t>(1, c.nk >> (2 * b));
}

std::string name_of(const attention_case& c) {
  std::string n = std::string("attention/") + c.backend + "/B" + std::to_string(c.batch) + "_Nq" +
                  std::to_string(c.nq) + "_Nk" + std::to_string(c.nk) + "_Hq" + std::to_string(c.hq);
  if (c.hk != c.hq) n += "_Hk" + std::to_string(c.hk);
  n += "_D" + std::to_string(c.dim);
  if (c.causal) n += "_causal";
  if (c.cache == ragged::key_lengths) n += "_ragged_key_lengths";
  if (c.cache == ragged::mask) n += "_ragged_mask";
  if (c.cache == ragged::capacity) n += "_filled_to_1_16th";
  if (c.page_size > 0) n += "_paged" + std::to_string(c.page_size);
  if (c.int8) n += "_int8";
  if (c.softcap > 0) n += "_softcap";
  if (c.term == attention_case::bias) n += "_bias";
  if (c.term == attention_case::alibi) n += "_alibi";
  if (c.term == attention_case::mask) n += "_mask";
  return n + "/threads:" + std::to_string(c.threads);
}

/// Multiply-adds of QK^T and PV, counted as 2 flops each: 4 Nq Nk D per head,
/// over the visible (query, key) pairs only (a ragged cache: each item's keys).
double attention_flops(const attention_case& c) {
  double pairs = 0;
  for (index_t b = 0; b < c.batch; ++b) {
    const index_t nk = keys_of_item(c, b);
    // Bottom-right aligned: row i sees i + Nk - Nq + 1 keys (clipped to [0, Nk]).
    for (index_t i = 0; i < c.nq; ++i)
      pairs += static_cast<double>(c.causal ? std::min(nk, std::max<index_t>(0, i + nk - c.nq + 1)) : nk);
  }
  return 4.0 * pairs * static_cast<double>(c.dim) * static_cast<double>(c.hq);
}

/// K and V bytes the call needs: every item's valid keys (int8: a byte per
/// element and a float scale per row).
double kv_bytes(const attention_case& c) {
  double keys = 0;
  for (index_t b = 0; b < c.batch; ++b) keys += static_cast<double>(keys_of_item(c, b));
  const double row_bytes = c.int8 ? static_cast<double>(c.dim) + 4.0 : 4.0 * static_cast<double>(c.dim);
  return 2.0 * keys * static_cast<double>(c.hk) * row_bytes;
}

/// Rows of `dim` floats quantised to int8 with one scale per row (absmax / 127).
struct int8_rows {
  std::vector<std::int8_t> values;
  std::vector<float> scales;
  int8_rows(const std::vector<float>& x, index_t dim)
      : values(x.size()), scales(x.size() / static_cast<std::size_t>(dim)) {
    for (std::size_t r = 0; r < scales.size(); ++r) {
      const float* row = x.data() + r * static_cast<std::size_t>(dim);
      float largest = 0;
      for (index_t d = 0; d < dim; ++d) largest = std::max(largest, std::abs(row[d]));
      scales[r] = largest > 0 ? largest / 127 : 1.0f;
      for (index_t d = 0; d < dim; ++d)
        values[r * static_cast<std::size_t>(dim) + static_cast<std::size_t>(d)] =
            static_cast<std::int8_t>(std::lround(row[d] / scales[r]));
    }
  }
};

template <class Backend>
void run_attention(benchmark::State& state, const Backend& backend, attention_case c) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1, 1);
  auto fill = [&](index_t n) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = dist(rng);
    return v;
  };
  // Contiguous: (B, Nk, Hk, D). Paged: (pages, page size, Hk, D), the same
  // number of rows, with item b's i-th page at table(b, i).
  const index_t page = c.page_size > 0 ? c.page_size : c.nk;
  const index_t pages_per_item = (c.nk + page - 1) / page, pages = c.batch * pages_per_item;
  const auto q = fill(c.batch * c.nq * c.hq * c.dim);
  const auto k = fill(pages * page * c.hk * c.dim);
  const auto v = fill(pages * page * c.hk * c.dim);
  std::vector<index_t> table(static_cast<std::size_t>(pages));
  for (index_t i = 0; i < pages; ++i) table[static_cast<std::size_t>(i)] = i;
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<float> out(q.size());
  attention_options opts;
  opts.causal = c.causal;
  opts.threads = c.threads;
  opts.softcap = c.softcap;
  std::vector<index_t> lengths;
  for (index_t b = 0; b < c.batch; ++b) lengths.push_back(keys_of_item(c, b));
  if (c.page_size > 0)
    opts.block_table = view<const index_t, 2>{table.data(), {c.batch, pages_per_item}, {pages_per_item, 1}};
  std::unique_ptr<bool[]> keep;
  if (c.cache == ragged::key_lengths || c.cache == ragged::capacity)
    opts.key_lengths = view<const index_t, 1>{lengths.data(), {c.batch}, {1}};
  if (c.cache == ragged::mask) {
    keep.reset(new bool[static_cast<std::size_t>(c.batch * c.nk)]);
    for (index_t b = 0; b < c.batch; ++b) {
      const index_t n = lengths[static_cast<std::size_t>(b)];
      for (index_t j = 0; j < c.nk; ++j) keep[static_cast<std::size_t>(b * c.nk + j)] = j < n;
    }
    opts.mask = view<const bool, 4>{keep.get(), {c.batch, 1, 1, c.nk}, {c.nk, 0, 0, 1}};
  }
  std::vector<float> bias, slopes;
  if (c.term == attention_case::bias) {
    bias = fill(c.nq * c.nk);
    opts.bias = view<const float, 4>{bias.data(), {1, 1, c.nq, c.nk}, {0, 0, c.nk, 1}};
  }
  if (c.term == attention_case::alibi) {
    // The ALiBi paper's slopes: 2^(-8 h / H).
    for (index_t h = 0; h < c.hq; ++h)
      slopes.push_back(std::exp2(-8.0f * static_cast<float>(h + 1) / static_cast<float>(c.hq)));
    opts.alibi_slopes = view<const float, 1>{slopes.data(), {c.hq}, {1}};
  }
  if (c.term == attention_case::mask) {
    // Keep-mask of 64 x 64 blocks in a checkerboard, the diagonal's kept so
    // that no row is empty.
    keep.reset(new bool[static_cast<std::size_t>(c.nq * c.nk)]);
    for (index_t i = 0; i < c.nq; ++i)
      for (index_t j = 0; j < c.nk; ++j) keep[static_cast<std::size_t>(i * c.nk + j)] = (i / 64 + j / 64) % 2 == 0;
    opts.mask = view<const bool, 4>{keep.get(), {1, 1, c.nq, c.nk}, {0, 0, c.nk, 1}};
  }

  const index_t kv_batch = c.page_size > 0 ? pages : c.batch, kv_rows = c.page_size > 0 ? page : c.nk;
  std::unique_ptr<int8_rows> k8, v8;
  if (c.int8) {
    k8 = std::make_unique<int8_rows>(k, c.dim);
    v8 = std::make_unique<int8_rows>(v, c.dim);
    const view<const float, 3> rows{nullptr, {kv_batch, kv_rows, c.hk}, {kv_rows * c.hk, c.hk, 1}};
    opts.k_scale = opts.v_scale = rows;
    opts.k_scale.data = k8->scales.data();
    opts.v_scale.data = v8->scales.data();
  }
  const auto call = [&](const auto* k_data, const auto* v_data) {
    attention(backend, bshd(q.data(), c.batch, c.nq, c.hq, c.dim), bshd(k_data, kv_batch, kv_rows, c.hk, c.dim),
              bshd(v_data, kv_batch, kv_rows, c.hk, c.dim), bshd(out.data(), c.batch, c.nq, c.hq, c.dim), opts);
  };

  reset_heap_peak();
  for (auto _ : state) {
    if (c.int8)
      call(k8->values.data(), v8->values.data());
    else
      call(k.data(), v.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double bytes = 4.0 * static_cast<double>(q.size() + out.size()) + kv_bytes(c);
  state.counters["GFLOP/s"] = benchmark::Counter(attention_flops(c) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_extra_bytes"] = static_cast<double>(heap_peak_since_reset());
}

void add(const attention_case& c) {
  auto* b = benchmark::RegisterBenchmark(name_of(c).c_str(), [c](benchmark::State& s) {
    const std::string be = c.backend;
    if (be == "naive") run_attention(s, naive, c);
    else if (be == "scalar") run_attention(s, scalar, c);
    else run_attention(s, simd, c);
  });
  b->UseRealTime()->Unit(benchmark::kMillisecond);
  // The O(N^2) paths take seconds per call at long lengths: one call is enough.
  if (std::string(c.backend) != "simd" && c.nq * c.nk >= 4096 * 4096) b->Iterations(1);
}

}  // namespace

void register_attention_benchmarks(workload w) {
  if (w == workload::quick) {
    for (const char* be : {"naive", "scalar", "simd"}) add({be, 1, 128, 128, 2, 2, 32, true, 1});
    add({"simd", 2, 1, 300, 4, 2, 32, false, 1, ragged::key_lengths, 16});
    add({"simd", 2, 1, 300, 4, 2, 32, false, 1, ragged::key_lengths, 0, true});
    return;
  }
  if (w == workload::standard) {
    // The README's comparison: one head, D = 64, growing N.
    for (index_t n : {256, 1024, 4096}) {
      for (const char* be : {"naive", "scalar", "simd"}) add({be, 1, n, n, 1, 1, 64, false, 1});
    }
    add({"naive", 1, 16384, 16384, 1, 1, 64, false, 1});
    add({"simd", 1, 16384, 16384, 1, 1, 64, false, 1});
    add({"simd", 1, 4096, 4096, 1, 1, 64, true, 1});
    add({"simd", 1, 4096, 4096, 8, 8, 64, false, 2});
    add({"simd", 1, 1, 32768, 32, 8, 128, false, 2});
    // A batch of decodes over a ragged KV cache (32K, 8K, 2K, 512 keys), and
    // over the same cache in pages of 16 keys.
    for (ragged r : {ragged::key_lengths, ragged::mask}) add({"simd", 4, 1, 32768, 32, 8, 128, false, 2, r});
    add({"simd", 4, 1, 32768, 32, 8, 128, false, 2, ragged::key_lengths, 16});
    // And over the same cache quantised to int8: a quarter of the bytes.
    add({"simd", 4, 1, 32768, 32, 8, 128, false, 2, ragged::key_lengths, 0, true});
    return;
  }
  if (w == workload::targets) {
    for (index_t d : {64, 128}) {
      for (bool causal : {false, true}) {
        for (int t : {1, 2}) add({"simd", 1, 4096, 4096, 8, 8, d, causal, t});
      }
    }
    add({"naive", 1, 16384, 16384, 1, 1, 64, false, 1});
    add({"simd", 1, 16384, 16384, 1, 1, 64, false, 1});
    add({"simd", 1, 16384, 16384, 8, 8, 128, false, 2});
    // Decoding one token: grouped-query (4 query heads per K/V head) and
    // multi-head, the shape of the reference ggml figure.
    for (index_t hk : {8, 32})
      for (int t : {1, 2}) add({"simd", 1, 1, 32768, 32, hk, 128, false, t});
    // Four decodes over a ragged KV cache (32K, 8K, 2K, 512 keys): key_lengths
    // against the keep-mask a user would otherwise pass.
    for (ragged r : {ragged::key_lengths, ragged::mask})
      for (int t : {1, 2}) add({"simd", 4, 1, 32768, 32, 8, 128, false, t, r});
    // The same decodes over a paged cache (vLLM's 16-key pages,
    // FlashAttention's 256), and a causal prefill of 4096 tokens reading its
    // keys from 16-key pages, against the contiguous figures above.
    for (index_t page : {16, 256})
      for (int t : {1, 2}) add({"simd", 4, 1, 32768, 32, 8, 128, false, t, ragged::key_lengths, page});
    for (int t : {1, 2}) add({"simd", 1, 4096, 4096, 8, 8, 64, true, t, ragged::none, 16});
    // One decode over a cache allocated for 64K keys and holding 4K: its
    // keys are split by the fill, not the capacity.
    for (int t : {1, 2}) add({"simd", 1, 1, 65536, 32, 8, 128, false, t, ragged::capacity});
    // The one-token decodes, the ragged ones and the causal prefill over an
    // int8 cache with a scale per key and head: decoding reads a quarter of
    // the bytes; the prefill pays the dequantisation on top of its arithmetic.
    for (index_t hk : {8, 32})
      for (int t : {1, 2}) add({"simd", 1, 1, 32768, 32, hk, 128, false, t, ragged::none, 0, true});
    for (index_t page : {0, 16})
      for (int t : {1, 2}) add({"simd", 4, 1, 32768, 32, 8, 128, false, t, ragged::key_lengths, page, true});
    for (int t : {1, 2}) add({"simd", 1, 4096, 4096, 8, 8, 64, true, t, ragged::none, 0, true});
    // Softcapped scores (Gemma 2 caps its attention logits at 50): a tanh
    // per score on top of the arithmetic, in the prefill and the decode.
    for (int t : {1, 2}) add({"simd", 1, 4096, 4096, 8, 8, 64, false, t, ragged::none, 0, false, 50.0f});
    for (int t : {1, 2}) add({"simd", 1, 1, 32768, 32, 8, 128, false, t, ragged::none, 0, false, 50.0f});
    // The other score terms in a prefill: each costs a pass over the scores
    // on top of the arithmetic (the bias also reads 64 MiB per head).
    for (auto term : {attention_case::bias, attention_case::alibi, attention_case::mask})
      for (int t : {1, 2}) add({"simd", 1, 4096, 4096, 8, 8, 64, false, t, ragged::none, 0, false, 0.0f, term});
    return;
  }
  // full: the whole grid of the attention issue.
  for (index_t n : {256, 1024, 4096, 16384})
    for (index_t d : {64, 128})
      for (index_t h : {1, 8})
        for (bool causal : {false, true})
          for (int t : {1, 2})
            for (const char* be : {"naive", "scalar", "simd"}) {
              const bool slow = std::string(be) != "simd" && (n > 4096 || (n == 4096 && (h > 1 || t > 1)));
              if (!slow) add({be, 1, n, n, h, h, d, causal, t});
            }
  for (int t : {1, 2}) {
    for (index_t hk : {8, 32}) {
      add({"scalar", 1, 1, 32768, 32, hk, 128, false, t});
      add({"simd", 1, 1, 32768, 32, hk, 128, false, t});
    }
  }
}

}  // namespace streamattn::bench
