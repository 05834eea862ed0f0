// streamattn_bench_cuda: the GPU benchmark. Softmax attention forward in
// GFLOP/s (4 * visible (query, key) pairs * D per head) for B = 4, H = 16,
// D in {64, 128}, N in {1024, 4096, 16384}, causal on/off, fp16/bf16, each
// once more on the mma.sync kernel (_mma: what the wgmma kernel gains, in
// builds with sm_90a code on an sm_90 GPU; elsewhere the same kernel) and
// once with the softmax weights rounded to the inputs' type as
// FlashAttention and SDPA do (_16bit_weights: weights_in_input_type); a
// split-KV decode case in GB/s of K/V read, once over a contiguous cache,
// once the same without GQA head packing (_unpacked: what packing saves),
// once over the same keys in shuffled 16-key pages (block_table: what the
// table lookups cost) and once over an int8 cache with a scale per key and
// head (GB/s of codes and scales); Fastformer (B = 1, D = 256,
// H = 16, float, without the transform) in GB/s counted as Q and K read once
// and U written (3 N D elements, as on the CPU) and in moved_GB/s, the
// traffic of its passes (4 N D, causal 6 N D, 8 with the transform), once
// more with every step a block program (_block_programs: what streaming
// saves), once with the streaming poolings scoring with FMAs (_fma_scores:
// what scoring on tensor cores saves) and once as the official module, with
// the output transform W_t, b_t and the residual (_transform, with
// transform_GFLOP/s: 2 N D^2 over the call's time); and the card's
// device-to-device copy bandwidth, the yardstick of the bandwidth-bound
// kernels. Times come from CUDA events around each call (manual time).
// Without a CUDA device it says so and exits 0. compare_sdpa.py runs it next
// to PyTorch's SDPA.
//
//   streamattn_bench_cuda [--workload=quick|default] [google-benchmark flags]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include <streamattn/cuda.cuh>

#include "support/table_reporter.hpp"

namespace {

using namespace streamattn;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw cuda_error(status, std::string(what) + ": " + cudaGetErrorString(status));
}

/// Device memory freed on scope exit.
std::shared_ptr<void> device_alloc(std::size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), "cudaMalloc");
  return {p, [](void* q) { cudaFree(q); }};
}

/// Uniform values in [-1, 1) from a hash of the index: no host transfer of
/// gigabyte-sized inputs.
template <class S>
__global__ void fill_uniform(S* data, std::size_t n, unsigned seed, float range) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    unsigned x = static_cast<unsigned>(i) * 2654435761u ^ seed;
    x ^= x >> 16;
    x *= 2246822519u;
    x ^= x >> 13;
    const float u = static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f;
    data[i] = static_cast<S>(u * range);
  }
}

/// Uniform in [-range, range); int8 codes in [-127, 127].
template <class T>
void fill(void* data, std::size_t n, unsigned seed, float range = 1.0f) {
  using S = detail::gpu::storage_t<T>;
  if (std::is_same_v<T, std::int8_t>) range = 127.0f;
  fill_uniform<S><<<1024, 256>>>(static_cast<S*>(data), n, seed, range);
  check(cudaGetLastError(), "fill_uniform");
}

struct attention_case {
  index_t batch, nq, nk, hq, hk, dim;
  bool causal;
  index_t page_size = 0;  // > 0: K/V in a shuffled pool of pages this size (nk a multiple of it)
  bool int8_kv = false;   // K/V as int8 codes with a float scale per key and head
  bool unpacked = false;  // GQA heads kept in tiles of their own (what head packing saves)
  bool mma_only = false;  // the mma.sync kernel where the wgmma one would run
  bool weights_16bit = false;  // attention_options::weights_in_input_type
};

double visible_pairs(const attention_case& c) {
  if (!c.causal) return static_cast<double>(c.nq) * static_cast<double>(c.nk);
  double pairs = 0;  // bottom-right aligned: row i sees min(Nk, max(0, i + Nk - Nq + 1)) keys
  for (index_t i = 0; i < c.nq; ++i) pairs += static_cast<double>(std::min(c.nk, std::max<index_t>(0, i + c.nk - c.nq + 1)));
  return pairs;
}

/// Reports a case that threw. A kernel fault leaves the CUDA context unusable
/// for every later case (each call then returns the same error), so the
/// context is reset: one kernel's failure costs its own figures only.
void skip_with_error(benchmark::State& state, const std::exception& e) {
  std::string what = e.what();
  if (cudaDeviceSynchronize() != cudaSuccess) {
    cudaDeviceReset();
    what += " (CUDA context reset for the next cases)";
  }
  cudaGetLastError();  // a non-sticky error must not fail the next case
  state.SkipWithError(what.c_str());
}

/// Times one call per iteration with CUDA events.
template <class F>
void time_calls(benchmark::State& state, F&& call) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  call();  // warm-up: module load, shared-memory opt-in, pool growth
  check(cudaDeviceSynchronize(), "warm-up");
  for (auto _ : state) {
    check(cudaEventRecord(start), "cudaEventRecord");
    call();
    check(cudaEventRecord(stop), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    state.SetIterationTime(static_cast<double>(ms) / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

/// Tkv: T, or std::int8_t for a quantised cache (c.int8_kv).
template <class T, class Tkv>
void run_attention(benchmark::State& state, attention_case c) {
  try {
    const std::size_t nq_elems = static_cast<std::size_t>(c.batch * c.nq * c.hq * c.dim);
    const std::size_t nk_elems = static_cast<std::size_t>(c.batch * c.nk * c.hk * c.dim);
    const std::size_t scales = std::is_same_v<T, Tkv> ? 0 : static_cast<std::size_t>(c.batch * c.nk * c.hk);
    auto q = device_alloc(nq_elems * sizeof(T)), k = device_alloc(nk_elems * sizeof(Tkv)),
         v = device_alloc(nk_elems * sizeof(Tkv)), out = device_alloc(nq_elems * sizeof(T)),
         kv_scales = device_alloc(std::max<std::size_t>(2 * scales, 1) * sizeof(float));
    fill<T>(q.get(), nq_elems, 1);
    fill<Tkv>(k.get(), nk_elems, 2);
    fill<Tkv>(v.get(), nk_elems, 3);
    fill<float>(kv_scales.get(), 2 * scales, 8, 1.0f / 127);
    attention_options opts;
    opts.causal = c.causal;
    // One scale per key and head, laid out (B or pages, keys, heads) whatever K's layout.
    const float* const k_scale = static_cast<const float*>(kv_scales.get());
    const auto scale_view = [&](const float* data, index_t slots, index_t rows) {
      return view<const float, 3>{data, {slots, rows, c.hk}, {rows * c.hk, c.hk, 1}};
    };
    if (scales > 0) {
      opts.k_scale = scale_view(k_scale, c.batch, c.nk);
      opts.v_scale = scale_view(k_scale + scales, c.batch, c.nk);
    }
    // PyTorch's [B, H, N, D] layout, as SDPA gets it in compare_sdpa.py.
    const auto qv = bhsd(static_cast<const T*>(q.get()), c.batch, c.hq, c.nq, c.dim);
    auto kv = bhsd(static_cast<const Tkv*>(k.get()), c.batch, c.hk, c.nk, c.dim);
    auto vv = bhsd(static_cast<const Tkv*>(v.get()), c.batch, c.hk, c.nk, c.dim);
    std::vector<index_t> table;
    if (c.page_size > 0) {
      // The same bytes as a pool of (pages, page size, Hk, D) pages, each
      // item's pages in shuffled order, as a cache that grew page by page.
      const index_t per_item = c.nk / c.page_size, pages = c.batch * per_item;
      table.resize(static_cast<std::size_t>(pages));
      for (index_t i = 0; i < pages; ++i) table[static_cast<std::size_t>(i)] = i;
      std::shuffle(table.begin(), table.end(), std::mt19937(7));
      opts.block_table = view<const index_t, 2>{table.data(), {c.batch, per_item}, {per_item, 1}};
      kv = bshd(static_cast<const Tkv*>(k.get()), pages, c.page_size, c.hk, c.dim);
      vv = bshd(static_cast<const Tkv*>(v.get()), pages, c.page_size, c.hk, c.dim);
      if (scales > 0) {
        opts.k_scale = scale_view(k_scale, pages, c.page_size);
        opts.v_scale = scale_view(k_scale + scales, pages, c.page_size);
      }
    }
    const auto ov = bhsd(static_cast<T*>(out.get()), c.batch, c.hq, c.nq, c.dim);
    opts.weights_in_input_type = c.weights_16bit;
    if (c.unpacked || c.mma_only) {
      // The library's own call, but planned without GQA head packing
      // (cuda/head_packing.hpp): the decode as it ran before packing existed;
      // or without the wgmma kernel.
      detail::gpu::plan_overrides how;
      if (c.unpacked) how.packing = detail::gpu::head_packing::never;
      if (c.mma_only) how.hopper = detail::gpu::hopper_kernel::never;
      const auto params = detail::make_attention_params<T, T, Tkv>("bench", qv, kv, vv, ov, opts);
      time_calls(state, [&] { detail::gpu::run_attention(params, nullptr, how); });
    } else {
      time_calls(state, [&] { attention(cuda, qv, kv, vv, ov, opts); });
    }
    const double flops = 4.0 * visible_pairs(c) * static_cast<double>(c.dim) * static_cast<double>(c.batch * c.hq);
    const double kv_bytes = 2.0 * (static_cast<double>(nk_elems) * sizeof(Tkv) + static_cast<double>(scales) * sizeof(float));
    state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
    if (c.nq <= 16) state.counters["GB/s"] = benchmark::Counter(kv_bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  } catch (const std::exception& e) {
    skip_with_error(state, e);
  }
}

struct fastformer_case {
  index_t batch, tokens, heads, dim;
  bool causal;
  bool block_programs = false;  // every step a block program (what streaming saves)
  bool transform = false;       // the official module's W_t, b_t and residual
  bool fma_scores = false;      // the streaming poolings score with FMAs (what tensor cores save)
};

template <class T>
void run_fastformer(benchmark::State& state, fastformer_case c) {
  try {
    const std::size_t elems = static_cast<std::size_t>(c.batch * c.tokens * c.dim);
    const std::size_t weights = static_cast<std::size_t>(c.heads * c.dim);
    auto q = device_alloc(elems * sizeof(T)), k = device_alloc(elems * sizeof(T)), out = device_alloc(elems * sizeof(T));
    const std::size_t transform = static_cast<std::size_t>(c.dim * (c.dim + 1));  // W_t and b_t
    auto w = device_alloc((2 * weights + transform) * sizeof(float));
    fill<T>(q.get(), elems, 4);
    fill<T>(k.get(), elems, 5);
    fill<float>(w.get(), 2 * weights + transform, 6);
    const std::array<index_t, 3> shape{c.batch, c.tokens, c.dim};
    const view<const T, 3> qv = contiguous(static_cast<const T*>(q.get()), shape);
    const view<const T, 3> kv = contiguous(static_cast<const T*>(k.get()), shape);
    const view<T, 3> ov = contiguous(static_cast<T*>(out.get()), shape);
    fastformer_weights<float> fw;
    fw.query_att = contiguous(static_cast<const float*>(w.get()), std::array<index_t, 2>{c.heads, c.dim});
    fw.key_att = contiguous(static_cast<const float*>(w.get()) + weights, std::array<index_t, 2>{c.heads, c.dim});
    if (c.transform) {
      const float* wt = static_cast<const float*>(w.get()) + 2 * weights;
      fw.transform = contiguous(wt, std::array<index_t, 2>{c.dim, c.dim});
      fw.transform_bias = contiguous(wt + c.dim * c.dim, std::array<index_t, 1>{c.dim});
    }
    fastformer_options opts;
    opts.causal = c.causal;
    if (c.block_programs || c.fma_scores) {
      // The call as it ran before the streaming steps (additive_stream.cuh),
      // or before its poolings scored on tensor cores (additive_stream_mma.cuh).
      const auto params = detail::make_fastformer_params<T, float, T>("bench", qv, kv, qv, false, fw, ov,
                                                                      detail::settings_of(opts));
      auto args = detail::gpu::make_additive_args(params);
      args.streaming = !c.block_programs;
      args.tensor_cores = !c.fma_scores;
      time_calls(state, [&] { detail::gpu::run_additive(args, nullptr); });
    } else {
      time_calls(state, [&] { fastformer_attention(cuda, qv, kv, fw, ov, opts); });
    }
    state.counters["GB/s"] = benchmark::Counter(3.0 * static_cast<double>(elems) * sizeof(T) / 1e9,
                                                benchmark::Counter::kIsIterationInvariantRate);
    // What these passes move: q̄, k̄ and the outputs each depend on whole
    // sequences, so the non-causal passes read Q, K, then Q again as V and
    // write U (4 N D); the causal ones read Q, then Q and K for the key
    // totals, then Q and K again and write U (6 N D; the output step's
    // second read of Q, as V, is of rows it has just loaded and counted as a
    // cache hit; a causal call with a transform streams U into the output
    // and transforms it in place, 2 N D more where it streams). Set against
    // the copy bandwidth, this is how close the kernels run to the memory;
    // the must-move GB/s above is 3/4 of it (causal 1/2). At the quick
    // workload's N = 4096 the tensors fit in L2 and both can exceed the
    // memory's bandwidth.
    const double passes = c.causal ? (c.transform && !c.block_programs ? 8.0 : 6.0) : 4.0;
    state.counters["moved_GB/s"] = benchmark::Counter(passes * static_cast<double>(elems) * sizeof(T) / 1e9,
                                                      benchmark::Counter::kIsIterationInvariantRate);
    if (c.transform)
      state.counters["transform_GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(elems) * c.dim / 1e9,
                                                               benchmark::Counter::kIsIterationInvariantRate);
  } catch (const std::exception& e) {
    skip_with_error(state, e);
  }
}

void run_copy(benchmark::State& state, std::size_t bytes) {
  try {
    auto a = device_alloc(bytes), b = device_alloc(bytes);
    check(cudaMemset(a.get(), 1, bytes), "cudaMemset");
    time_calls(state, [&] { check(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync"); });
    // Read + write, the traffic a streaming kernel is judged by.
    state.counters["GB/s"] = benchmark::Counter(2.0 * static_cast<double>(bytes) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  } catch (const std::exception& e) {
    skip_with_error(state, e);
  }
}

std::string name_of(const char* type, const attention_case& c) {
  std::string n = std::string("attention/cuda/") + type + "/B" + std::to_string(c.batch) + "_Nq" + std::to_string(c.nq) +
                  "_Nk" + std::to_string(c.nk) + "_Hq" + std::to_string(c.hq);
  if (c.hk != c.hq) n += "_Hk" + std::to_string(c.hk);
  n += "_D" + std::to_string(c.dim);
  if (c.causal) n += "_causal";
  if (c.page_size > 0) n += "_paged" + std::to_string(c.page_size);
  if (c.int8_kv) n += "_int8";
  if (c.unpacked) n += "_unpacked";
  if (c.mma_only) n += "_mma";
  if (c.weights_16bit) n += "_16bit_weights";
  return n;
}

void register_all(bool quick) {
  std::vector<attention_case> cases;
  const std::vector<index_t> lengths = quick ? std::vector<index_t>{256} : std::vector<index_t>{1024, 4096, 16384};
  const index_t batch = quick ? 1 : 4, heads = quick ? 2 : 16;
  for (index_t d : {64, 128})
    for (index_t n : lengths)
      for (bool causal : {false, true}) cases.push_back({batch, n, n, heads, heads, d, causal});
  for (std::size_t i = 0, prefills = cases.size(); i < prefills; ++i) {
    attention_case mma = cases[i], rounded = cases[i];
    mma.mma_only = true;
    cases.push_back(mma);
    rounded.weights_16bit = true;
    cases.push_back(rounded);
  }
  // Decoding with a KV cache: one query per sequence, grouped heads, split-KV.
  attention_case decode =
      quick ? attention_case{1, 1, 4096, 4, 1, 128, true} : attention_case{1, 1, 32768, 32, 8, 128, true};
  cases.push_back(decode);
  decode.unpacked = true;  // one tile per query head, as before head packing
  cases.push_back(decode);
  decode.unpacked = false;
  decode.page_size = 16;  // vLLM's default block size
  cases.push_back(decode);
  decode.page_size = 0;
  decode.int8_kv = true;  // a quarter of fp16's K/V bytes, plus the scales
  cases.push_back(decode);
  for (const auto& c : cases) {
    if (c.int8_kv) {
      benchmark::RegisterBenchmark(name_of("half", c).c_str(), run_attention<Eigen::half, std::int8_t>, c)->UseManualTime()->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(name_of("bfloat16", c).c_str(), run_attention<Eigen::bfloat16, std::int8_t>, c)->UseManualTime()->Unit(benchmark::kMillisecond);
      continue;
    }
    benchmark::RegisterBenchmark(name_of("half", c).c_str(), run_attention<Eigen::half, Eigen::half>, c)->UseManualTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(name_of("bfloat16", c).c_str(), run_attention<Eigen::bfloat16, Eigen::bfloat16>, c)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
  for (index_t n : quick ? std::vector<index_t>{4096} : std::vector<index_t>{1 << 16, 1 << 20})
    for (bool causal : {false, true}) {
      for (int kind = 0; kind < 4; ++kind) {
        const bool block_programs = kind == 1, transform = kind == 2, fma_scores = kind == 3;
        const fastformer_case c{1, n, 16, 256, causal, block_programs, transform, fma_scores};
        const std::string name = "fastformer/cuda/float/B1_N" + std::to_string(n) + "_H16_D256" +
                                 (causal ? "_causal" : "") + (block_programs ? "_block_programs" : "") +
                                 (transform ? "_transform" : "") + (fma_scores ? "_fma_scores" : "");
        benchmark::RegisterBenchmark(name.c_str(), run_fastformer<float>, c)->UseManualTime()->Unit(benchmark::kMillisecond);
      }
    }
  const std::size_t copy_bytes = quick ? (std::size_t{64} << 20) : (std::size_t{1} << 30);
  benchmark::RegisterBenchmark(("copy/cuda/d2d_" + std::to_string(copy_bytes >> 20) + "MiB").c_str(), run_copy, copy_bytes)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--workload=quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--workload=default") == 0) quick = false;
    else if (std::strncmp(argv[i], "--workload=", 11) == 0) {
      std::fprintf(stderr, "unknown %s (quick, default)\n", argv[i]);
      return 2;
    } else {
      rest.push_back(argv[i]);
    }
  }
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    std::printf("streamattn_bench_cuda: no CUDA device (%s); nothing measured.\n",
                status != cudaSuccess ? cudaGetErrorString(status) : "device count is 0");
    return 0;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("device: %s, sm_%d%d, %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);

  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  register_all(quick);
  streamattn::bench::table_reporter table;
  benchmark::RunSpecifiedBenchmarks(&table);
  benchmark::Shutdown();
  return 0;
}
