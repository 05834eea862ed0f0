// What the cuda backend must do before it touches a GPU, run in CI where
// there is none: bad arguments throw std::invalid_argument before any CUDA
// call, empty problems are no-ops, and CUDA failures become cuda_error with
// CUDA's own error string. Compiled by nvcc; needs no device (on a machine
// with one, the last test checks the host-memory sentence instead).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <streamattn/cuda.cuh>

#include "device_support.cuh"
#include "support/expect_invalid.hpp"

namespace {

using namespace streamattn;

TEST(CudaHostChecks, BackendTagCarriesTheStream) {
  static_assert(detail::has_attention<cuda_t>::value, "cuda_t must provide attention_impl");
  const auto s = reinterpret_cast<cudaStream_t>(0x1234);
  EXPECT_EQ(cuda.stream, nullptr);
  EXPECT_EQ(cuda.on(s).stream, s);
  constexpr cuda_t c = cuda.on(nullptr);
  static_assert(c.stream == nullptr);
}

TEST(CudaHostChecks, ShapeErrorsThrowBeforeAnyCudaCall) {
  // Host pointers on purpose: had the call reached CUDA, it would throw
  // cuda_error (no device) or reject the host memory, not this sentence.
  std::vector<float> q(2 * 3 * 4 * 8), k(2 * 5 * 2 * 8), v(2 * 5 * 2 * 6), out(2 * 3 * 4 * 6);
  try {
    attention(cuda, bshd<const float>(q.data(), 2, 3, 4, 8), bshd<const float>(k.data(), 2, 5, 2, 8),
              bshd<const float>(v.data(), 2, 5, 2, 6), bshd(out.data(), 2, 3, 4, 5));
    FAIL() << "a wrong out shape was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("out has shape"), std::string::npos) << e.what();
  }
  attention_options opts;
  opts.window_left = -3;
  EXPECT_THROW(attention(cuda, bshd<const float>(q.data(), 2, 3, 4, 8), bshd<const float>(k.data(), 2, 5, 2, 8),
                         bshd<const float>(v.data(), 2, 5, 2, 6), bshd(out.data(), 2, 3, 4, 6), opts),
               std::invalid_argument);
  EXPECT_THROW(attention(cuda, bshd<const float>(q.data(), 2, 3, 3, 8), bshd<const float>(k.data(), 2, 5, 2, 8),
                         bshd<const float>(v.data(), 2, 5, 2, 6), bshd(out.data(), 2, 3, 3, 6)),
               std::invalid_argument);
}

TEST(CudaHostChecks, EmptyProblemsMakeNoCudaCall) {
  std::vector<float> k(5 * 8), v(5 * 8);
  attention(cuda, bshd<const float>(nullptr, 1, 0, 2, 8), bshd<const float>(k.data(), 1, 5, 1, 8),
            bshd<const float>(v.data(), 1, 5, 1, 8), bshd<float>(nullptr, 1, 0, 2, 8));
  attention(cuda, bshd<const float>(nullptr, 0, 3, 2, 8), bshd<const float>(nullptr, 0, 5, 1, 8),
            bshd<const float>(nullptr, 0, 5, 1, 8), bshd<float>(nullptr, 0, 3, 2, 8));
  EXPECT_EQ(workspace_size(cuda, bshd<const float>(nullptr, 1, 0, 2, 8), bshd<const float>(k.data(), 1, 5, 1, 8),
                           bshd<const float>(v.data(), 1, 5, 1, 8), bshd<float>(nullptr, 1, 0, 2, 8)),
            0u);
}

TEST(CudaHostChecks, CudaFailuresCarryCudasErrorString) {
  try {
    detail::gpu::throw_on_error(cudaErrorInvalidValue, "streamattn::attention (cuda)", "cudaSomething");
    FAIL();
  } catch (const cuda_error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), cudaErrorInvalidValue);
    EXPECT_NE(what.find("cudaSomething failed"), std::string::npos) << what;
    EXPECT_NE(what.find(cudaGetErrorString(cudaErrorInvalidValue)), std::string::npos) << what;
    EXPECT_NE(what.find("cudaErrorInvalidValue"), std::string::npos) << what;
  }
  EXPECT_NO_THROW(detail::gpu::throw_on_error(cudaSuccess, "f", "op"));
}

TEST(CudaHostChecks, ValidCallWithoutDeviceThrowsCudaErrorOrRejectsHostMemory) {
  std::vector<float> q(1 * 4 * 1 * 8, 0.5f), k(q), v(q), out(q.size());
  auto call = [&] {
    attention(cuda, bshd<const float>(q.data(), 1, 4, 1, 8), bshd<const float>(k.data(), 1, 4, 1, 8),
              bshd<const float>(v.data(), 1, 4, 1, 8), bshd(out.data(), 1, 4, 1, 8));
  };
  if (!streamattn::testing::has_cuda_device()) {
    try {
      call();
      FAIL() << "no device, yet the call succeeded";
    } catch (const cuda_error& e) {
      EXPECT_NE(std::string(e.what()).find("streamattn::attention (cuda)"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(cudaGetErrorString(e.code())), std::string::npos) << e.what();
    }
  } else {
    try {
      call();
      FAIL() << "host memory was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("q points to ordinary host memory"), std::string::npos) << e.what();
    }
  }
}

// Packed starts and block tables are host memory, as on the CPU backends,
// and are checked there before any CUDA call: decreasing starts, and (with
// no key_lengths, so every page is read) a table entry outside the pool.
TEST(CudaHostChecks, PackedStartsAndBlockTableAreCheckedOnTheHost) {
  using streamattn::testing::expect_invalid;
  std::vector<float> q(1 * 6 * 2 * 8), k(3 * 4 * 1 * 8), v(k.size()), out(q.size());
  const std::vector<index_t> decreasing{0, 4, 3};
  attention_options packed;
  packed.query_starts = view<const index_t, 1>{decreasing.data(), {3}, {1}};
  expect_invalid(
      [&] {
        attention(cuda, bshd<const float>(q.data(), 1, 6, 2, 8), bshd<const float>(k.data(), 2, 4, 1, 8),
                  bshd<const float>(v.data(), 2, 4, 1, 8), bshd(out.data(), 1, 6, 2, 8), packed);
      },
      {"query_starts"});
  const std::vector<index_t> table{0, 3, 1, 2};  // (2 items, 2 pages); page 3 is not in the pool of 3
  attention_options paged;
  paged.block_table = view<const index_t, 2>{table.data(), {2, 2}, {2, 1}};
  expect_invalid(
      [&] {
        attention(cuda, bshd<const float>(q.data(), 2, 3, 2, 8), bshd<const float>(k.data(), 3, 4, 1, 8),
                  bshd<const float>(v.data(), 3, 4, 1, 8), bshd(out.data(), 2, 3, 2, 8), paged);
      },
      {"block_table(0, 1) is 3"});
}

/// A packed call on device operands: two items of 3 and 5 queries (q and
/// out packed into 8 rows) against 4 keys each; `run` returns the sentence
/// of the std::invalid_argument it throws, or "" if it throws none.
struct packed_device_call {
  const std::vector<float> host = std::vector<float>(2 * 4 * 1 * 8, 0.5f);
  const streamattn::testing::device_copy<float> x{host.data(), host.size()}, out{nullptr, host.size()};
  const std::vector<index_t> starts{0, 3, 8};

  std::string run(const cuda_t& backend, const index_t* query_starts) const {
    attention_options opts;
    opts.query_starts = view<const index_t, 1>{query_starts, {3}, {1}};
    try {
      attention(backend, bshd<const float>(x.data, 1, 8, 1, 8), bshd<const float>(x.data, 2, 4, 1, 8),
                bshd<const float>(x.data, 2, 4, 1, 8), bshd(out.data, 1, 8, 1, 8), opts);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  }
};

// FlashAttention takes cu_seqlens in device memory; here the starts are host
// memory (they size the grid), and a device pointer is refused with a
// sentence before anything reads it.
TEST(CudaHostChecks, StartsInDeviceMemoryAreRefused) {
  STREAMATTN_REQUIRE_CUDA_DEVICE();
  const packed_device_call call;
  const streamattn::testing::device_copy<index_t> device_starts(call.starts.data(), call.starts.size());
  const std::string what = call.run(cuda, device_starts.data);
  EXPECT_NE(what.find("query_starts points to device memory"), std::string::npos) << what;
}

// A packed or paged call copies host values that it frees once the copy has
// run; a graph would replay that copy from freed memory, so capture is refused.
TEST(CudaHostChecks, PackedCallsAreNotCapturedIntoGraphs) {
  STREAMATTN_REQUIRE_CUDA_DEVICE();
  const packed_device_call call;
  cudaStream_t stream = nullptr;
  streamattn::testing::cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
  streamattn::testing::cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "begin capture");
  const std::string what = call.run(cuda.on(stream), call.starts.data());
  EXPECT_NE(what.find("cannot be captured into a CUDA graph"), std::string::npos) << what;
  cudaGraph_t graph = nullptr;
  (void)cudaStreamEndCapture(stream, &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// A block table in device memory (vLLM's way) is read where it is: a paged
// call with one can be captured into a CUDA graph, and the replay computes
// what the call computes.
TEST(CudaHostChecks, DeviceMemoryBlockTablesAreCapturedIntoGraphs) {
  STREAMATTN_REQUIRE_CUDA_DEVICE();
  using streamattn::testing::cuda_check;
  using streamattn::testing::device_copy;
  // 2 items decoding 1 token each over 3 pages of 4 keys, in a pool of 6.
  std::vector<float> q(2 * 1 * 2 * 8), kv(6 * 4 * 1 * 8);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i)));
  for (std::size_t i = 0; i < kv.size(); ++i) kv[i] = static_cast<float>(std::cos(0.3 * static_cast<double>(i)));
  const std::vector<index_t> table{5, 0, 3, 1, 4, 2};
  const device_copy<float> q_dev(q.data(), q.size()), kv_dev(kv.data(), kv.size()), direct(nullptr, q.size()),
      replayed(nullptr, q.size());
  const device_copy<index_t> table_dev(table.data(), table.size());
  attention_options opts;
  opts.block_table = view<const index_t, 2>{table_dev.data, {2, 3}, {3, 1}};
  cudaStream_t stream = nullptr;
  cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
  const auto call = [&](float* out) {
    attention(cuda.on(stream), bshd<const float>(q_dev.data, 2, 1, 2, 8), bshd<const float>(kv_dev.data, 6, 4, 1, 8),
              bshd<const float>(kv_dev.data, 6, 4, 1, 8), bshd(out, 2, 1, 2, 8), opts);
  };
  call(direct.data);
  cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "begin capture");
  call(replayed.data);
  cudaGraph_t graph = nullptr;
  cuda_check(cudaStreamEndCapture(stream, &graph), "end capture");
  cudaGraphExec_t exec = nullptr;
  cuda_check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  cuda_check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
  cuda_check(cudaStreamSynchronize(stream), "the replay");
  std::vector<float> want(q.size()), got(q.size());
  direct.copy_to(want.data(), want.size());
  replayed.copy_to(got.data(), got.size());
  EXPECT_EQ(got, want);
  for (float x : got) EXPECT_TRUE(std::isfinite(x));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Operands on the device but key_lengths left in host memory: the lengths
// are read by the kernels, so they must be device-readable too.
TEST(CudaHostChecks, KeyLengthsInHostMemoryAreRejected) {
  STREAMATTN_REQUIRE_CUDA_DEVICE();
  const std::vector<float> host(2 * 4 * 1 * 8, 0.5f);
  const streamattn::testing::device_copy<float> q(host.data(), host.size()), out(nullptr, host.size());
  const std::vector<index_t> lengths = {4, 2};
  attention_options opts;
  opts.key_lengths = view<const index_t, 1>{lengths.data(), {2}, {1}};
  try {
    attention(cuda, bshd<const float>(q.data, 2, 4, 1, 8), bshd<const float>(q.data, 2, 4, 1, 8),
              bshd<const float>(q.data, 2, 4, 1, 8), bshd(out.data, 2, 4, 1, 8), opts);
    FAIL() << "host key_lengths were accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("key_lengths points to ordinary host memory"), std::string::npos) << e.what();
  }
}

// An int8 K/V cache on the device with its scales left in host memory: the
// kernels read the scales, so they must be device-readable too.
TEST(CudaHostChecks, Int8ScalesInHostMemoryAreRejected) {
  STREAMATTN_REQUIRE_CUDA_DEVICE();
  const std::vector<float> host(2 * 4 * 1 * 8, 0.5f);
  const std::vector<std::int8_t> codes(2 * 4 * 1 * 8, 3);
  const streamattn::testing::device_copy<float> q(host.data(), host.size()), out(nullptr, host.size()),
      k_scale(host.data(), 8);
  const streamattn::testing::device_copy<std::int8_t> kv(codes.data(), codes.size());
  const std::vector<float> scales(8, 0.01f);
  attention_options opts;
  opts.k_scale = view<const float, 3>{k_scale.data, {2, 4, 1}, {4, 1, 1}};
  opts.v_scale = view<const float, 3>{scales.data(), {2, 4, 1}, {4, 1, 1}};
  try {
    attention(cuda, bshd<const float>(q.data, 2, 4, 1, 8), bshd<const std::int8_t>(kv.data, 2, 4, 1, 8),
              bshd<const std::int8_t>(kv.data, 2, 4, 1, 8), bshd(out.data, 2, 4, 1, 8), opts);
    FAIL() << "host v_scale was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("v_scale points to ordinary host memory"), std::string::npos) << e.what();
  }
}

}  // namespace
