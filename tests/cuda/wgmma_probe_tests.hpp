// The wgmma operand probe's tests (wgmma_probe.cuh), for a platform that
// runs one product: `Run` is called as run(problem, swaps) and returns the
// 128 x N result. Instantiated on a Hopper GPU (test_cuda_wgmma_probe.cu)
// and on the SIMT emulator (test_cuda_emulated_wgmma_probe.cpp), where it
// checks the probe itself.
#pragma once

#include <gtest/gtest.h>

#include "support/seed.hpp"
#include "wgmma_probe.cuh"

namespace streamattn::testing {

/// The four products of the kernel's loop at head dims 64 and 128: Q K^T
/// (K = D, 64 keys) and P V (64 keys, N = D), fp16 and bf16.
template <class Run>
void expect_wgmma_reads_as_the_kernel_does(Run&& run) {
  std::mt19937_64 rng = test_rng();  // seed_printer names the run's seed on failure
  const std::uint64_t seed = rng();
  const auto expect_exact = [](const std::string& verdict) { EXPECT_TRUE(verdict.empty()) << verdict; };
  expect_exact(wgmma_probe_verdict<__nv_bfloat16, false, 64, 64>(seed, run));
  expect_exact(wgmma_probe_verdict<__nv_bfloat16, false, 64, 128>(seed + 1, run));
  expect_exact(wgmma_probe_verdict<__nv_bfloat16, true, 64, 64>(seed + 2, run));
  expect_exact(wgmma_probe_verdict<__nv_bfloat16, true, 128, 64>(seed + 3, run));
  expect_exact(wgmma_probe_verdict<__half, false, 64, 128>(seed + 4, run));
  expect_exact(wgmma_probe_verdict<__half, true, 128, 64>(seed + 5, run));
}

}  // namespace streamattn::testing
