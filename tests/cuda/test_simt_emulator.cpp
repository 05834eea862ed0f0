// The SIMT emulator's own contract, on small kernels written for the
// purpose: barriers and shuffles behave as on a GPU, and what a GPU would
// hang on, trap on or refuse to launch fails the launch with a message.
#include "emulator/cuda_builtins.hpp"  // first, as for any kernel

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <streamattn/cuda/dynamic_shared_memory.cuh>
#include <streamattn/cuda/mma.cuh>

namespace streamattn::testing::emulator {
namespace {

// Each warp sums its lanes' values by a butterfly of shuffles.
__global__ void warp_sums(const float* in, float* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  float x = in[i];
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  out[i] = x;
}

// Thread t writes slot t, then (after the barrier) reads slot t + 1 of
// another warp; without the barrier the read would see the poison.
__global__ void neighbour_after_barrier(float* out) {
  __shared__ float slots[128];
  const unsigned t = threadIdx.x;
  slots[t] = static_cast<float>(t) + 100.0f * blockIdx.x;
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = slots[(t + 1) % blockDim.x];
}

// With 64 threads, lanes 32..39 wait at the block barrier while the rest of
// their warp waits at __syncwarp: neither can ever complete. (Threads that
// have exited count as arrived at a barrier, as on current GPUs.)
__global__ void barrier_in_divergent_code() {
  if (threadIdx.x < 40) __syncthreads();
  __syncwarp();
}

__global__ void lanes_at_different_shuffles(float* out) {
  float x = 1.0f;
  if (threadIdx.x % 2 == 0)
    x = __shfl_xor_sync(0xffffffffu, x, 1);
  else
    x = __shfl_xor_sync(0xffffffffu, x, 2);
  out[threadIdx.x] = x;
}

__global__ void first_dynamic_shared_float(float* out) {
  if (threadIdx.x == 0) {
    float x;
    std::memcpy(&x, detail::gpu::dynamic_shared_memory(), sizeof x);
    out[blockIdx.x] = x;
  }
}

// cp.async lands at the wait: before it the destination still holds poison.
__global__ void copy_then_wait(const float* in, float* before, float* after) {
  float* tile = reinterpret_cast<float*>(detail::gpu::dynamic_shared_memory());
  const unsigned t = threadIdx.x;
  detail::gpu::copy_16_async(tile + 4 * t, in + 4 * t, true);
  detail::gpu::copy_async_commit();
  before[t] = tile[4 * t];
  detail::gpu::copy_async_wait_all();
  after[t] = tile[4 * t];
}

__global__ void exits_with_a_copy_in_flight(const float* in) {
  float* tile = reinterpret_cast<float*>(detail::gpu::dynamic_shared_memory());
  detail::gpu::copy_16_async(tile + 4 * threadIdx.x, in + 4 * threadIdx.x, true);
}

template <class F>
std::string launch_error(F&& launch_it) {
  try {
    launch_it();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(SimtEmulator, ShufflesReduceEachWarp) {
  const int blocks = 3, threads = 64;
  std::vector<float> in(blocks * threads), out(in.size(), -1.0f);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 37);
  launch("warp_sums", &warp_sums, dim3(blocks), dim3(threads), 0, in.data(), out.data());
  for (std::size_t warp = 0; warp < in.size() / 32; ++warp) {
    float sum = 0;
    for (std::size_t l = 0; l < 32; ++l) sum += in[warp * 32 + l];
    for (std::size_t l = 0; l < 32; ++l) EXPECT_EQ(out[warp * 32 + l], sum) << "warp " << warp << " lane " << l;
  }
}

TEST(SimtEmulator, BarrierOrdersSharedMemoryInBothThreadOrders) {
  // Blocks 0 and 2 run their threads forwards, block 1 backwards.
  const int blocks = 3, threads = 128;
  std::vector<float> out(blocks * threads, -1.0f);
  launch("neighbour_after_barrier", &neighbour_after_barrier, dim3(blocks), dim3(threads), 0, out.data());
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t)
      EXPECT_EQ(out[static_cast<std::size_t>(b * threads + t)], static_cast<float>((t + 1) % threads) + 100.0f * b);
}

TEST(SimtEmulator, BarrierInDivergentCodeIsADeadlock) {
  const std::string e =
      launch_error([] { launch("barrier_in_divergent_code", &barrier_in_divergent_code, dim3(1), dim3(64), 0); });
  EXPECT_NE(e.find("can make no progress"), std::string::npos) << e;
}

TEST(SimtEmulator, LanesMustAgreeOnAWarpInstruction) {
  std::vector<float> out(32);
  const std::string e = launch_error(
      [&] { launch("lanes_at_different_shuffles", &lanes_at_different_shuffles, dim3(1), dim3(32), 0, out.data()); });
  EXPECT_NE(e.find("other lanes of its warp wait at"), std::string::npos) << e;
}

TEST(SimtEmulator, LaunchShapesBeyondTheGpusLimitsAreRefused) {
  auto refused = [](dim3 grid, dim3 block, std::size_t shared) {
    return !launch_error([&] {
              launch("barrier_in_divergent_code", &barrier_in_divergent_code, grid, block, shared);
            }).empty();
  };
  EXPECT_TRUE(refused(dim3(0), dim3(32), 0));
  EXPECT_TRUE(refused(dim3(1, 70000), dim3(32), 0));
  EXPECT_TRUE(refused(dim3(1), dim3(2048), 0));
  EXPECT_TRUE(refused(dim3(1), dim3(32), max_dynamic_shared_bytes + 1));
  EXPECT_FALSE(refused(dim3(1, 65535), dim3(32), 0));
}

TEST(SimtEmulator, DynamicSharedMemoryStartsAsNaNInEveryBlock) {
  std::vector<float> out(2, 0.0f);
  launch("first_dynamic_shared_float", &first_dynamic_shared_float, dim3(2), dim3(32), 64, out.data());
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_TRUE(std::isnan(out[1]));
}

TEST(SimtEmulator, AsyncCopiesLandAtTheWait) {
  alignas(16) float in[4 * 32];
  for (int i = 0; i < 4 * 32; ++i) in[i] = static_cast<float>(i);
  std::vector<float> before(32), after(32);
  launch("copy_then_wait", &copy_then_wait, dim3(1), dim3(32), sizeof in, static_cast<const float*>(in), before.data(),
         after.data());
  for (int t = 0; t < 32; ++t) {
    EXPECT_TRUE(std::isnan(before[static_cast<std::size_t>(t)])) << t;
    EXPECT_EQ(after[static_cast<std::size_t>(t)], static_cast<float>(4 * t));
  }
}

TEST(SimtEmulator, FaultsInsideAKernelBecomeExceptions) {
  alignas(16) float in[4 * 32] = {};
  const std::string e = launch_error([&] {
    launch("exits_with_a_copy_in_flight", &exits_with_a_copy_in_flight, dim3(1), dim3(32), sizeof in,
           static_cast<const float*>(in));
  });
  EXPECT_NE(e.find("cp.async copies still in flight"), std::string::npos) << e;
  // The emulator is usable again after a failed launch.
  std::vector<float> out(2, 0.0f);
  launch("first_dynamic_shared_float", &first_dynamic_shared_float, dim3(2), dim3(32), 64, out.data());
  EXPECT_TRUE(std::isnan(out[0]));
}

}  // namespace
}  // namespace streamattn::testing::emulator
