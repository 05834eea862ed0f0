// Fastformer additive attention: naive vs scalar vs simd over sequence length
// and threads, with and without the output transform, causal, decode, plus
// the two references the targets are stated against: a STREAM-style triad
// (bandwidth) and a plain Eigen GEMM of the transform's product.
//
// Counters: GB/s over the bytes that must move (Q and K read once, the
// output written once: 3 N D elements; the kernel reads Q twice, which is
// not counted), GFLOP/s of the transform GEMM only (2 N D^2, over the whole
// call), peak extra heap bytes of a call.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <Eigen/Core>
#include <streamattn/streamattn.hpp>

#include "support/alloc_counter.hpp"
#include "support/workload.hpp"

namespace streamattn::bench {
namespace {

struct fastformer_case {
  const char* backend;  // "naive", "scalar", "simd", "eigen_gemm" (the transform's product alone)
  index_t batch, tokens, heads, dim;
  bool transform = false;
  bool causal = false;
  bool per_head = false;
  int threads = 1;
};

std::string name_of(const fastformer_case& c) {
  std::string n = std::string("fastformer/") + c.backend + "/B" + std::to_string(c.batch) + "_N" +
                  std::to_string(c.tokens) + "_H" + std::to_string(c.heads) + "_D" + std::to_string(c.dim);
  if (c.per_head) n += "_perhead";
  if (c.transform) n += "_transform";
  if (c.causal) n += "_causal";
  return n + "/threads:" + std::to_string(c.threads);
}

/// Bytes of the naive backend's materialised intermediates: about nine
/// (N x D) tensors of doubles (Q, K, V copies, q̄ and k̄ broadcast, P, U,
/// U W_t^T, the output) plus the (N x H) scores.
double naive_bytes(const fastformer_case& c) {
  return 8.0 * static_cast<double>(c.batch) * static_cast<double>(c.tokens) *
         (9.0 * static_cast<double>(c.dim) + 4.0 * static_cast<double>(c.heads));
}
/// What the naive backend may use here: the machine has 24 GB shared by
/// several users, and the inputs of the largest case already take 3 GB.
constexpr double naive_budget = 6.0e9;

/// Inputs shared by every case (filling 1 GB per tensor is slow): large
/// enough for the biggest one; smaller cases view a prefix.
struct inputs {
  std::vector<float> q, k, query_att, key_att, transform, transform_bias;
  index_t capacity = 0, dim = 0, heads = 0;

  static inputs& get(index_t elements, index_t dim, index_t heads) {
    static inputs in;
    if (in.capacity < elements || in.dim != dim || in.heads != heads) in.fill(elements, dim, heads);
    return in;
  }
  void fill(index_t elements, index_t d, index_t h) {
    capacity = elements, dim = d, heads = h;
    // A cheap deterministic pattern with per-feature offsets (so that q̄ is
    // not ~0), not all equal, no random generator needed for 1 GB.
    std::uint32_t state = 12345u;
    auto next = [&] {
      state = state * 1664525u + 1013904223u;
      return static_cast<float>(state >> 8) * (1.0f / 16777216.0f) - 0.5f;
    };
    q.resize(static_cast<std::size_t>(elements));
    k.resize(q.size());
    for (std::size_t i = 0; i < q.size(); ++i) {
      const float offset = 0.01f * static_cast<float>(static_cast<index_t>(i) % d);
      q[i] = next() + offset;
      k[i] = next() - offset;
    }
    query_att.resize(static_cast<std::size_t>(h * d));
    key_att.resize(query_att.size());
    for (auto& w : query_att) w = 0.2f * next();
    for (auto& w : key_att) w = 0.2f * next();
    transform.resize(static_cast<std::size_t>(d * d));
    for (auto& w : transform) w = next() / std::sqrt(static_cast<float>(d));
    transform_bias.assign(static_cast<std::size_t>(d), 0.1f);
  }
};

void set_counters(benchmark::State& state, const fastformer_case& c, double bytes, double gemm_flops) {
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (gemm_flops > 0)
    state.counters["GFLOP/s"] = benchmark::Counter(gemm_flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_extra_bytes"] = static_cast<double>(heap_peak_since_reset());
  state.SetLabel(c.causal ? "causal" : "");
}

template <class Backend>
void run_fastformer(benchmark::State& state, const Backend& backend, const fastformer_case& c) {
  const index_t elements = c.batch * c.tokens * c.dim;
  inputs& in = inputs::get(elements, c.dim, c.heads);
  std::vector<float> out(static_cast<std::size_t>(elements));
  const index_t length = c.per_head ? c.dim / c.heads : c.dim;
  fastformer_weights<float> w;
  w.query_att = {in.query_att.data(), {c.heads, length}, {length, 1}};
  w.key_att = {in.key_att.data(), {c.heads, length}, {length, 1}};
  if (c.transform) {
    w.transform = {in.transform.data(), {c.dim, c.dim}, {c.dim, 1}};
    w.transform_bias = {in.transform_bias.data(), {c.dim}, {1}};
  }
  fastformer_options opts;
  opts.threads = c.threads;
  opts.causal = c.causal;
  opts.weight_layout = c.per_head ? score_weight_layout::per_head : score_weight_layout::dense;
  const auto shape = std::array<index_t, 3>{c.batch, c.tokens, c.dim};
  const view<const float, 3> q = contiguous(static_cast<const float*>(in.q.data()), shape);
  const view<const float, 3> k = contiguous(static_cast<const float*>(in.k.data()), shape);

  reset_heap_peak();
  for (auto _ : state) {
    fastformer_attention(backend, q, k, w, contiguous(out.data(), shape), opts);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double gemm = c.transform ? 2.0 * static_cast<double>(c.batch * c.tokens) * static_cast<double>(c.dim * c.dim) : 0;
  set_counters(state, c, 3.0 * 4.0 * static_cast<double>(elements), gemm);
}

/// The transform's product alone, Y = U W_t^T on the whole (N x D) matrix, by
/// Eigen's GEMM (single-threaded: no OpenMP; with 2 threads the rows are
/// split in two halves). The reference of the transform target.
void run_eigen_gemm(benchmark::State& state, const fastformer_case& c) {
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const index_t rows = c.batch * c.tokens;
  inputs& in = inputs::get(rows * c.dim, c.dim, c.heads);
  std::vector<float> out(static_cast<std::size_t>(rows * c.dim));
  const Eigen::Map<const matrix> wt(in.transform.data(), c.dim, c.dim);
  auto part = [&](index_t first, index_t count) {
    const Eigen::Map<const matrix> u(in.q.data() + first * c.dim, count, c.dim);
    Eigen::Map<matrix> y(out.data() + first * c.dim, count, c.dim);
    y.noalias() = u * wt.transpose();
  };
  reset_heap_peak();
  for (auto _ : state) {
    if (c.threads <= 1) {
      part(0, rows);
    } else {
      const index_t half = rows / 2;
      std::thread other([&] { part(half, rows - half); });
      part(0, half);
      other.join();
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, c, 2.0 * 4.0 * static_cast<double>(rows * c.dim),
               2.0 * static_cast<double>(rows) * static_cast<double>(c.dim * c.dim));
}

/// STREAM triad a = b + s c over three arrays of `elements` floats, on 1 or 2
/// threads: the bandwidth the GB/s targets are stated against.
void run_triad(benchmark::State& state, index_t elements, int threads) {
  std::vector<float> a(static_cast<std::size_t>(elements)), b(a.size(), 1.0f), c(a.size(), 2.0f);
  auto part = [&](std::size_t first, std::size_t end) {
    for (std::size_t i = first; i < end; ++i) a[i] = b[i] + 3.0f * c[i];
  };
  for (auto _ : state) {
    if (threads <= 1) {
      part(0, a.size());
    } else {
      std::thread other([&] { part(a.size() / 2, a.size()); });
      part(0, a.size() / 2);
      other.join();
    }
    benchmark::DoNotOptimize(a.data());
    benchmark::ClobberMemory();
  }
  // STREAM counts 3 arrays (2 read, 1 written), not the write-allocate read.
  state.counters["GB/s"] = benchmark::Counter(3.0 * 4.0 * static_cast<double>(elements) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

/// One generated token: decoder.append on a sequence already `tokens` long
/// (the cost does not depend on it).
void run_decode(benchmark::State& state, const fastformer_case& c) {
  inputs& in = inputs::get(c.dim * 64, c.dim, c.heads);
  fastformer_weights<float> w;
  w.query_att = {in.query_att.data(), {c.heads, c.dim}, {c.dim, 1}};
  w.key_att = {in.key_att.data(), {c.heads, c.dim}, {c.dim, 1}};
  if (c.transform) {
    w.transform = {in.transform.data(), {c.dim, c.dim}, {c.dim, 1}};
    w.transform_bias = {in.transform_bias.data(), {c.dim}, {1}};
  }
  fastformer_decoder<float> decoder(simd, w, c.dim);
  std::vector<float> out(static_cast<std::size_t>(c.dim));
  index_t t = 0;
  reset_heap_peak();
  for (auto _ : state) {
    const view<const float, 1> row{in.q.data() + (t % 64) * c.dim, {c.dim}, {1}};
    const view<const float, 1> key{in.k.data() + (t % 64) * c.dim, {c.dim}, {1}};
    decoder.append(row, key, view<float, 1>{out.data(), {c.dim}, {1}});
    benchmark::DoNotOptimize(out.data());
    ++t;
  }
  set_counters(state, c, 3.0 * 4.0 * static_cast<double>(c.dim),
               c.transform ? 2.0 * static_cast<double>(c.dim * c.dim) : 0);
}

void add(const fastformer_case& c) {
  const std::string be = c.backend;
  auto* b = benchmark::RegisterBenchmark(name_of(c).c_str(), [c, be](benchmark::State& s) {
    if (be == "naive") {
      if (naive_bytes(c) > naive_budget) {
        s.SkipWithError(("naive would materialise ~" + std::to_string(static_cast<int>(naive_bytes(c) / 1e9 + 0.5)) +
                         " GB of intermediates (9 N x D double tensors); skipped above 6 GB on this 24 GB machine")
                            .c_str());
        return;
      }
      run_fastformer(s, naive, c);
    } else if (be == "scalar") {
      run_fastformer(s, scalar, c);
    } else if (be == "eigen_gemm") {
      run_eigen_gemm(s, c);
    } else {
      run_fastformer(s, simd, c);
    }
  });
  b->UseRealTime()->Unit(benchmark::kMillisecond);
  // Calls of a second or more: one is enough.
  const bool slow = be != "simd" && be != "eigen_gemm" && c.tokens * c.dim >= (index_t{1} << 22);
  if (slow || c.tokens * c.dim >= (index_t{1} << 27)) b->Iterations(1);
  else if (c.tokens * c.dim >= (index_t{1} << 24)) b->Iterations(3);
}

void add_decode(const fastformer_case& c) {
  benchmark::RegisterBenchmark(("fastformer/decode_" + name_of(c).substr(11)).c_str(),
                               [c](benchmark::State& s) { run_decode(s, c); })
      ->Unit(benchmark::kMicrosecond);
}

void add_triad(index_t elements, int threads) {
  benchmark::RegisterBenchmark(("fastformer/reference_stream_triad/" + std::to_string(elements * 4 >> 20) +
                                "MiB_per_array/threads:" + std::to_string(threads))
                                   .c_str(),
                               [elements, threads](benchmark::State& s) { run_triad(s, elements, threads); })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

void register_fastformer_benchmarks(workload w) {
  const index_t D = 256, H = 16;
  if (w == workload::quick) {
    for (const char* be : {"naive", "scalar", "simd"}) {
      add({be, 2, 1024, 4, 64});
      add({be, 2, 1024, 4, 64, true, true});
    }
    add_decode({"simd", 1, 1, 4, 64});
    return;
  }
  if (w == workload::standard) {
    for (index_t n : {1024, 16384})
      for (const char* be : {"naive", "scalar", "simd"}) add({be, 1, n, H, D});
    for (int t : {1, 2}) add({"simd", 1, 262144, H, D, false, false, false, t});
    add({"simd", 1, 16384, H, D, true});
    add({"eigen_gemm", 1, 16384, H, D, true});
    add({"simd", 1, 16384, H, D, false, true});
    add_decode({"simd", 1, 1, H, D});
    return;
  }
  const std::vector<index_t> lengths = {1024, 16384, 262144, 1048576};
  if (w == workload::targets) {
    add_triad(index_t{1} << 26, 1);
    add_triad(index_t{1} << 26, 2);
    for (index_t n : lengths)
      for (int t : {1, 2})
        for (const char* be : {"naive", "scalar", "simd"}) {
          const std::string b = be;
          if (b != "simd" && t == 2) continue;  // single-threaded backends
          add({be, 1, n, H, D, false, false, false, t});
        }
    for (index_t n : {16384, 262144})
      for (int t : {1, 2}) {
        add({"simd", 1, n, H, D, true, false, false, t});
        add({"eigen_gemm", 1, n, H, D, true, false, false, t});
      }
    for (int t : {1, 2}) add({"simd", 1, 1048576, H, D, false, true, false, t});
    add({"simd", 2, 1048576, H, D, false, true, false, 2});
    add_decode({"simd", 1, 1, H, D});
    add_decode({"simd", 1, 1, H, D, true});
    return;
  }
  // full
  add_triad(index_t{1} << 26, 1);
  add_triad(index_t{1} << 26, 2);
  for (index_t n : lengths)
    for (int t : {1, 2})
      for (bool transform : {false, true})
        for (const char* be : {"naive", "scalar", "simd", "eigen_gemm"}) {
          const std::string b = be;
          if ((b == "naive" || b == "scalar") && t == 2) continue;
          if (b == "eigen_gemm" && !transform) continue;
          if (b == "scalar" && transform && n > 16384) continue;  // D^2 scalar products: minutes
          add({be, 1, n, H, D, transform, false, false, t});
        }
  for (index_t n : lengths)
    for (int t : {1, 2}) {
      add({"simd", 1, n, H, D, false, false, true, t});
      add({"simd", 1, n, H, D, false, true, false, t});
    }
  add({"naive", 1, 4096, H, D, false, true});
  add({"scalar", 1, 16384, H, D, false, true});
  add_decode({"simd", 1, 1, H, D});
  add_decode({"simd", 1, 1, H, D, true});
}

}  // namespace streamattn::bench
