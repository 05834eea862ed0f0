// Packed variable-length sequences: a training batch of documents of
// different lengths, causal self-attention within each. Three ways to run it:
// one packed call (query_starts / key_starts), one call per document, and
// what a user of a padded-batch API writes: pad every document to the longest
// and pass a (B, 1, N, N) keep-mask that hides the padding and the future.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/alloc_counter.hpp"
#include "support/workload.hpp"

namespace streamattn::bench {
namespace {

enum class method { packed, per_document, padded_mask };

const char* name_of(method m) {
  return m == method::packed ? "packed" : m == method::per_document ? "per_document" : "padded_mask";
}

struct packed_case {
  method how;
  std::vector<index_t> lengths;  // tokens per document
  index_t heads, dim;
  int threads;
};

std::string name_of(const packed_case& c) {
  const index_t total = std::accumulate(c.lengths.begin(), c.lengths.end(), index_t{0});
  return std::string("attention_packed/") + name_of(c.how) + "/docs" + std::to_string(c.lengths.size()) + "_tokens" +
         std::to_string(total) + "_longest" + std::to_string(*std::max_element(c.lengths.begin(), c.lengths.end())) +
         "_H" + std::to_string(c.heads) + "_D" + std::to_string(c.dim) + "_causal/threads:" + std::to_string(c.threads);
}

/// Useful work: QK^T and PV over each document's causal pairs, n(n+1)/2.
double packed_flops(const packed_case& c) {
  double pairs = 0;
  for (index_t n : c.lengths) pairs += 0.5 * static_cast<double>(n) * static_cast<double>(n + 1);
  return 4.0 * pairs * static_cast<double>(c.dim * c.heads);
}

void run_packed(benchmark::State& state, const packed_case& c) {
  const index_t docs = static_cast<index_t>(c.lengths.size());
  const index_t total = std::accumulate(c.lengths.begin(), c.lengths.end(), index_t{0});
  const index_t longest = *std::max_element(c.lengths.begin(), c.lengths.end());
  const index_t H = c.heads, D = c.dim;
  std::vector<index_t> starts{0};
  for (index_t n : c.lengths) starts.push_back(starts.back() + n);

  // The padded method stores every document in a (docs, longest) slot.
  const index_t rows = c.how == method::padded_mask ? docs * longest : total;
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> q(static_cast<std::size_t>(rows * H * D)), k(q.size()), v(q.size()), out(q.size());
  for (auto* t : {&q, &k, &v})
    for (auto& x : *t) x = dist(rng);

  attention_options opts;
  opts.threads = c.threads;
  std::unique_ptr<bool[]> keep;
  if (c.how == method::packed) {
    opts.causal = true;
    opts.query_starts = view<const index_t, 1>{starts.data(), {docs + 1}, {1}};
    opts.key_starts = opts.query_starts;
  } else if (c.how == method::per_document) {
    opts.causal = true;
  } else {
    keep.reset(new bool[static_cast<std::size_t>(docs * longest * longest)]);
    for (index_t b = 0; b < docs; ++b)
      for (index_t i = 0; i < longest; ++i)
        for (index_t j = 0; j < longest; ++j)
          keep[static_cast<std::size_t>((b * longest + i) * longest + j)] =
              j <= i && i < c.lengths[static_cast<std::size_t>(b)];
    opts.mask = view<const bool, 4>{keep.get(), {docs, 1, longest, longest}, {longest * longest, 0, longest, 1}};
  }

  reset_heap_peak();
  for (auto _ : state) {
    if (c.how == method::per_document) {
      for (index_t b = 0; b < docs; ++b) {
        const index_t n = c.lengths[static_cast<std::size_t>(b)], at = starts[static_cast<std::size_t>(b)] * H * D;
        attention(simd, bshd(q.data() + at, 1, n, H, D), bshd(k.data() + at, 1, n, H, D),
                  bshd(v.data() + at, 1, n, H, D), bshd(out.data() + at, 1, n, H, D), opts);
      }
    } else {
      const index_t batch = c.how == method::packed ? 1 : docs, seq = c.how == method::packed ? total : longest;
      attention(simd, bshd(q.data(), batch, seq, H, D), bshd(k.data(), batch, seq, H, D),
                bshd(v.data(), batch, seq, H, D), bshd(out.data(), batch, seq, H, D), opts);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(packed_flops(c) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_extra_bytes"] = static_cast<double>(heap_peak_since_reset());
}

void add(const packed_case& c) {
  benchmark::RegisterBenchmark(name_of(c).c_str(), [c](benchmark::State& s) { run_packed(s, c); })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

void register_packed_benchmarks(workload w) {
  if (w == workload::quick) {
    add({method::packed, {100, 7, 60}, 2, 32, 1});
    return;
  }
  // Eight documents, 8192 tokens: one long, the rest a mix (a typical packed
  // pre-training batch), eight heads of 64.
  const std::vector<index_t> docs{3072, 256, 1536, 512, 128, 2048, 384, 256};
  const std::vector<int> threads = w == workload::standard ? std::vector<int>{2} : std::vector<int>{1, 2};
  for (int t : threads)
    for (method m : {method::packed, method::per_document, method::padded_mask}) add({m, docs, 8, 64, t});
  if (w == workload::standard) return;
  // Many short documents (fine-tuning on chat turns): 64 of 32 to 256 tokens.
  std::vector<index_t> short_docs;
  for (index_t b = 0; b < 64; ++b) short_docs.push_back(32 + (b * 37) % 225);
  for (int t : threads)
    for (method m : {method::packed, method::per_document, method::padded_mask}) add({m, short_docs, 8, 64, t});
}

}  // namespace streamattn::bench
