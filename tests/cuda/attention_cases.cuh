// The GPU-only attention tests: streams, scratch memory and host pointers,
// which the SIMT emulator has no notion of. The oracle suite itself is
// attention_suite.hpp, run here on the real GPU (real_gpu) and everywhere on
// the emulator (test_cuda_emulated). Instantiated per element type in
// test_cuda_attention_*.cu, so nvcc compiles the types in parallel.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include "attention_suite.hpp"
#include "device_support.cuh"
#include "support/seed.hpp"

namespace streamattn::testing {

template <class T>
class CudaAttention : public ::testing::Test {};
TYPED_TEST_SUITE_P(CudaAttention);

TYPED_TEST_P(CudaAttention, StreamAndScratch) {
  STREAMATTN_REQUIRE_CUDA_DEVICE();
  using T = TypeParam;
  auto rng = test_rng();
  const shape s{1, 2, 3000, 4, 2, 64, 64};
  const problem<T> p(s, options_named("causal"), rng);
  const auto o = make_oracle(p);
  const device_problem<T> dp(p);
  cudaStream_t stream = nullptr;
  cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
  // workspace_size needs the call's operands; its output is never written.
  const device_copy<T> out_probe(nullptr, static_cast<std::size_t>(s.batch * s.nq * s.hq * s.dim_v));
  const std::size_t bytes =
      workspace_size(cuda.on(stream), dp.q, dp.k, dp.v, bshd(out_probe.data, s.batch, s.nq, s.hq, s.dim_v), dp.opts);
  const device_copy<unsigned char> scratch(nullptr, bytes);
  device_run how;
  how.stream = stream;
  how.scratch = workspace{scratch.data, bytes};
  expect_matches(p, o, run_on_device<T>(p, dp, how), "on a stream with scratch of " + std::to_string(bytes) + " bytes");
  cuda_check(cudaStreamDestroy(stream), "cudaStreamDestroy");
}

TYPED_TEST_P(CudaAttention, HostMemoryIsRejectedBeforeLaunch) {
  STREAMATTN_REQUIRE_CUDA_DEVICE();
  using T = TypeParam;
  auto rng = test_rng();
  const shape s{1, 4, 4, 1, 1, 8, 8};
  problem<T> p(s, options_named("plain"), rng);
  tensor4<T> out({1, 4, 1, 8});
  try {
    attention(cuda, p.q.cv(), p.k.cv(), p.v.cv(), out.v);
    FAIL() << "host memory was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("host memory"), std::string::npos) << e.what();
  }
}

REGISTER_TYPED_TEST_SUITE_P(CudaAttention, StreamAndScratch, HostMemoryIsRejectedBeforeLaunch);

}  // namespace streamattn::testing
