// The attention backward pass: naive (materialised scores, Eigen GEMMs in
// double) vs scalar vs simd, with the peak heap each call allocates.
#include <benchmark/benchmark.h>

#include <array>
#include <random>
#include <string>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/alloc_counter.hpp"
#include "support/workload.hpp"

namespace streamattn::bench {
namespace {

struct backward_case {
  const char* backend;  // "naive", "scalar", "simd"
  index_t n, heads, dim;
  bool causal;
  int threads;
  /// A learned bias over keys alone, (1, 1, 1, N), with its gradient: the
  /// gradient sums over heads and queries.
  bool key_bias = false;
};

std::string name_of(const backward_case& c) {
  std::string n = std::string("attention_backward/") + c.backend + "/B1_N" + std::to_string(c.n) + "_H" +
                  std::to_string(c.heads) + "_D" + std::to_string(c.dim);
  if (c.causal) n += "_causal";
  if (c.key_bias) n += "_key_bias";
  return n + "/threads:" + std::to_string(c.threads);
}

/// FlashAttention's count: the five products of the backward (S = QK^T,
/// dP = dO V^T, dV = P^T dO, dK = dS^T Q, dQ = dS K), 2 flops per
/// multiply-add: 10 N^2 D per head, 2.5x the forward, over visible pairs.
/// (The streaming backends recompute S and dP in their second pass: they do
/// 7/5 of this.)
double backward_flops(const backward_case& c) {
  const double n = static_cast<double>(c.n);
  const double pairs = c.causal ? n * (n + 1) / 2 : n * n;
  return 10.0 * pairs * static_cast<double>(c.dim) * static_cast<double>(c.heads);
}

template <class Backend>
void run_backward(benchmark::State& state, const Backend& backend, const backward_case& c) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1, 1);
  const index_t elements = c.n * c.heads * c.dim;
  auto fill = [&] {
    std::vector<float> v(static_cast<std::size_t>(elements));
    for (auto& x : v) x = dist(rng);
    return v;
  };
  const auto q = fill(), k = fill(), v = fill(), dout = fill();
  std::vector<float> out(q.size()), lse(static_cast<std::size_t>(c.heads * c.n)), dq(q.size()), dk(q.size()),
      dv(q.size());
  auto t = [&](const std::vector<float>& x) { return bshd(x.data(), 1, c.n, c.heads, c.dim); };
  auto w = [&](std::vector<float>& x) { return bshd(x.data(), 1, c.n, c.heads, c.dim); };
  attention_options opts;
  opts.causal = c.causal;
  opts.threads = c.threads;
  opts.lse = view<float, 3>{lse.data(), {1, c.heads, c.n}, {c.heads * c.n, c.n, 1}};
  std::vector<float> bias(static_cast<std::size_t>(c.n)), dbias(bias.size());
  for (auto& x : bias) x = dist(rng);
  attention_gradients<float> grads{w(dq), w(dk), w(dv)};
  if (c.key_bias) {
    const std::array<index_t, 4> key_axis{1, 1, 1, c.n};
    opts.bias = contiguous(static_cast<const float*>(bias.data()), key_axis);
    grads.dbias = contiguous(dbias.data(), key_axis);
  }
  attention(simd, t(q), t(k), t(v), w(out), opts);

  reset_heap_peak();
  for (auto _ : state) {
    attention_backward(backend, t(q), t(k), t(v), t(out), t(dout), grads, opts);
    benchmark::DoNotOptimize(dq.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(backward_flops(c) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  // Read q, k, v, out, dout; write dq, dk, dv.
  const double bytes = 4.0 * 8.0 * static_cast<double>(elements);
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_extra_bytes"] = static_cast<double>(heap_peak_since_reset());
}

void add(const backward_case& c) {
  auto* b = benchmark::RegisterBenchmark(name_of(c).c_str(), [c](benchmark::State& s) {
    const std::string be = c.backend;
    if (be == "naive")
      run_backward(s, naive, c);
    else if (be == "scalar")
      run_backward(s, scalar, c);
    else
      run_backward(s, simd, c);
  });
  b->UseRealTime()->Unit(benchmark::kMillisecond);
  if (std::string(c.backend) != "simd" && c.n >= 2048) b->Iterations(1);
}

}  // namespace

void register_attention_backward_benchmarks(workload w) {
  if (w == workload::quick) {
    for (const char* be : {"naive", "scalar", "simd"}) add({be, 128, 2, 32, true, 1});
    return;
  }
  if (w == workload::standard) {
    // One head, D = 64: the N^2 path against the streaming ones.
    for (index_t n : {1024, 4096}) {
      for (const char* be : {"naive", "simd"}) add({be, n, 1, 64, false, 1});
    }
    add({"scalar", 1024, 1, 64, false, 1});
    add({"simd", 4096, 1, 64, false, 2});
    add({"simd", 4096, 1, 64, true, 2});
    return;
  }
  if (w == workload::targets) {
    for (index_t d : {64, 128})
      for (bool causal : {false, true})
        for (int t : {1, 2}) add({"simd", 4096, 8, d, causal, t});
    for (int t : {1, 2}) add({"simd", 4096, 8, 64, false, t, true});
    return;
  }
  for (index_t n : {256, 1024, 4096})
    for (index_t d : {64, 128})
      for (bool causal : {false, true})
        for (int t : {1, 2})
          for (const char* be : {"naive", "scalar", "simd"})
            if (std::string(be) == "simd" || n <= 1024) add({be, n, 1, d, causal, t});
}

}  // namespace streamattn::bench
