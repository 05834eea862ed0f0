// The CUDA backend's Fastformer and additive pooling, run on the host: the
// very block programs the GPU kernel runs (additive_programs.cuh), executed
// block by block and phase by phase on the CPU, through the public entry
// points and the whole Fastformer oracle suite. This checks the GPU path's
// arithmetic, chunking, merges, scans, masks, strides and output conversion
// everywhere, CI included; what it cannot check (launches, shared memory
// limits, races between threads) is left to test_cuda_fastformer on a GPU.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include <streamattn/cuda/additive_args.cuh>
#include <streamattn/cuda/additive_programs.cuh>
#include <streamattn/streamattn.hpp>

#include "support/combos.hpp"
#include "support/fastformer_suite.hpp"

namespace streamattn::testing::ff {

/// The cuda backend as planned for a GPU with `SmCount` multiprocessors
/// (few or many chunks per sequence), run on the host.
template <int SmCount>
struct emulated_gpu_t {};

template <int SmCount>
struct prefix_runs_bitwise<emulated_gpu_t<SmCount>> : std::false_type {};

/// What the kernel launches would do, one block after another. Shared memory
/// and the workspace start as NaN, so a phase reading what no earlier phase
/// wrote shows up in the results.
template <class S>
void run_blocks_on_host(detail::gpu::additive_args<S> a, int sm_count) {
  using Acc = detail::gpu::device_accum_t<S>;
  if (detail::gpu::nothing_to_write(a)) return;
  detail::gpu::device_limits limits;
  limits.sm_count = sm_count;
  limits.compute_capability = 90;
  limits.max_shared_bytes = 227 * 1024;
  const auto plan = detail::gpu::plan_additive("emulated cuda", a.shape, a.causal, sizeof(Acc), limits);
  const Acc nan = std::numeric_limits<Acc>::quiet_NaN();
  std::vector<Acc> workspace(static_cast<std::size_t>(std::max<index_t>(1, plan.workspace_elements())), nan);
  std::vector<Acc> shared(static_cast<std::size_t>(plan.smem.length()));
  detail::gpu::apply_plan(a, plan, workspace.data());
  detail::gpu::for_each_additive_step(a, [&](detail::gpu::additive_step step, index_t blocks) {
    for (index_t block = 0; block < blocks; ++block) {
      std::fill(shared.begin(), shared.end(), nan);
      detail::gpu::run_additive_block(a, step, block, shared.data());
    }
  });
}

template <int SmCount, class T, class W, class Tout>
void additive_pool_impl(emulated_gpu_t<SmCount>, const detail::additive_pool_params<T, W, Tout>& p) {
  run_blocks_on_host(detail::gpu::make_additive_args(p), SmCount);
}

template <int SmCount, class T, class W, class Tout>
void fastformer_impl(emulated_gpu_t<SmCount>, const detail::fastformer_params<T, W, Tout>& p) {
  run_blocks_on_host(detail::gpu::make_additive_args(p), SmCount);
}

}  // namespace streamattn::testing::ff

namespace {

using namespace streamattn;
using namespace streamattn::testing;
using namespace streamattn::testing::ff;

template <int SmCount, class T>
struct gpu_combo {
  using backend = emulated_gpu_t<SmCount>;
  using type = T;
  static constexpr int sm_count = SmCount;
};

using EmulatedCombos =
    ::testing::Types<gpu_combo<1, float>, gpu_combo<1, double>, gpu_combo<1, Eigen::half>,
                     gpu_combo<1, Eigen::bfloat16>, gpu_combo<64, float>, gpu_combo<64, double>,
                     gpu_combo<64, Eigen::half>, gpu_combo<64, Eigen::bfloat16>>;

class emulated_names {
 public:
  template <class C>
  static std::string GetName(int) {
    return std::string(C::sm_count == 1 ? "few_chunks_" : "many_chunks_") + element_name<typename C::type>();
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(EmulatedCuda, FastformerSuite, EmulatedCombos, emulated_names);

using EmulatedBackends = ::testing::Types<emulated_gpu_t<1>, emulated_gpu_t<64>>;
INSTANTIATE_TYPED_TEST_SUITE_P(EmulatedCuda, FastformerMaskSuite, EmulatedBackends);

}  // namespace
