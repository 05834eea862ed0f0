// Fastformer and additive pooling on the SIMT emulator: additive_kernel,
// additive_stream_kernel and additive_stream_causal_kernel themselves,
// compiled by the host compiler, launched step by step as launch_additive
// does (256 threads a block, the plan's dynamic shared
// memory), through the whole Fastformer oracle suite, planned for a GPU
// with 1 or 64 multiprocessors so that sequences run as one chunk or many.
// The block's threads share each phase and odd blocks run them in reverse
// order, so an index that reads what another index of the same phase
// writes, or a phase that ends without its barrier, shows up as a wrong
// result (dropping block_team's barrier failed 52 of the 54 tests this
// suite had then).
#include "emulator/cuda_builtins.hpp"  // first: the kernels below compile against it

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <streamattn/cuda/additive_args.cuh>
#include <streamattn/cuda/additive_kernel.cuh>
#include <streamattn/streamattn.hpp>

#include "support/combos.hpp"
#include "support/fastformer_suite.hpp"

namespace streamattn::testing::ff {

/// The cuda backend as planned for a GPU with `SmCount` multiprocessors
/// (an H100 otherwise), run by the SIMT emulator; without `Streaming` every
/// step runs as a block program (additive_args::streaming), as the shapes
/// the streaming pooling does not take always do; without `TensorCores` the
/// streaming poolings score with FMAs where they would take tensor cores
/// (additive_args::tensor_cores).
template <int SmCount, bool Streaming = true, bool TensorCores = true>
struct simt_emulator_t {};

template <int SmCount, bool Streaming, bool TensorCores>
struct prefix_runs_bitwise<simt_emulator_t<SmCount, Streaming, TensorCores>> : std::false_type {};

/// launch_additive on the emulator. The workspace starts as NaN (dynamic
/// shared memory always does), so a step reading what no earlier step wrote
/// shows up in the results, and is 256-byte aligned as cudaMallocAsync's
/// memory is (the transform's weights are read as 16-byte vectors).
template <class S>
void run_on_emulator(detail::gpu::additive_args<S> a, int sm_count, bool streaming, bool tensor_cores) {
  namespace gpu = detail::gpu;
  using Acc = gpu::device_accum_t<S>;
  if (gpu::nothing_to_write(a)) return;
  a.streaming = streaming;
  a.tensor_cores = tensor_cores;
  gpu::device_limits h100;
  h100.sm_count = sm_count;
  h100.compute_capability = 90;
  h100.max_shared_bytes = emulator::max_dynamic_shared_bytes;
  const auto plan =
      gpu::plan_additive("simt emulator", a.shape, a.causal, sizeof(Acc), h100, {a.has_transform(), streaming, tensor_cores});
  constexpr std::size_t slack = 256 / sizeof(Acc);
  std::vector<Acc> workspace(static_cast<std::size_t>(std::max<index_t>(1, plan.workspace_elements())) + slack,
                             std::numeric_limits<Acc>::quiet_NaN());
  const std::size_t misalignment = reinterpret_cast<std::uintptr_t>(workspace.data()) % 256 / sizeof(Acc);
  gpu::apply_plan(a, plan, workspace.data() + (slack - misalignment) % slack);
  gpu::for_each_additive_step(a, [&](gpu::additive_step step, index_t blocks) {
    if (blocks == 0) return;
    const dim3 grid(static_cast<unsigned>(blocks)), block(gpu::additive_block_threads);
    switch (gpu::kernel_for(a, step)) {
      case gpu::additive_kernel_kind::stream:
        emulator::launch("additive_stream_kernel", &gpu::additive_stream_kernel<S>, grid, block, plan.shared_bytes,
                         a, step);
        break;
      case gpu::additive_kernel_kind::stream_mma:
        emulator::launch("additive_stream_mma_kernel", &gpu::additive_stream_mma_kernel<S>, grid, block,
                         plan.shared_bytes, a, step);
        break;
      case gpu::additive_kernel_kind::stream_causal:
        emulator::launch("additive_stream_causal_kernel", &gpu::additive_stream_causal_kernel<S>, grid, block,
                         plan.shared_bytes, a, step);
        break;
      default:
        emulator::launch("additive_kernel", &gpu::additive_kernel<S>, grid, block, plan.shared_bytes, a, step);
    }
  });
}

template <int SmCount, bool Streaming, bool TensorCores, class T, class W, class Tout>
void additive_pool_impl(simt_emulator_t<SmCount, Streaming, TensorCores>,
                        const detail::additive_pool_params<T, W, Tout>& p) {
  run_on_emulator(detail::gpu::make_additive_args(p), SmCount, Streaming, TensorCores);
}

template <int SmCount, bool Streaming, bool TensorCores, class T, class W, class Tout>
void fastformer_impl(simt_emulator_t<SmCount, Streaming, TensorCores>, const detail::fastformer_params<T, W, Tout>& p) {
  run_on_emulator(detail::gpu::make_additive_args(p), SmCount, Streaming, TensorCores);
}

template <int SmCount, class T, bool Streaming = true, bool TensorCores = true>
struct emulated_combo {
  using backend = simt_emulator_t<SmCount, Streaming, TensorCores>;
  using type = T;
  static constexpr int sm_count = SmCount;
  static constexpr bool streaming = Streaming;
  static constexpr bool tensor_cores = TensorCores;
};

class emulated_names {
 public:
  template <class C>
  static std::string GetName(int) {
    return std::string(C::sm_count == 1 ? "few_chunks_" : "many_chunks_") + (C::streaming ? "" : "block_programs_") +
           (C::tensor_cores ? "" : "fma_scores_") + element_name<typename C::type>();
  }
};

class emulated_backend_names {
 public:
  template <class B>
  static std::string GetName(int i) {
    return std::vector<std::string>{"few_chunks", "many_chunks", "many_chunks_block_programs",
                                    "many_chunks_fma_scores"}
        .at(
        static_cast<std::size_t>(i));
  }
};

}  // namespace streamattn::testing::ff

namespace {

using namespace streamattn::testing::ff;

using EmulatedCombos =
    ::testing::Types<emulated_combo<1, float>, emulated_combo<1, double>, emulated_combo<1, Eigen::half>,
                     emulated_combo<1, Eigen::bfloat16>, emulated_combo<64, float>, emulated_combo<64, double>,
                     emulated_combo<64, Eigen::half>, emulated_combo<64, Eigen::bfloat16>,
                     emulated_combo<64, float, false>, emulated_combo<64, double, false>,
                     emulated_combo<1, float, true, false>, emulated_combo<64, float, true, false>,
                     emulated_combo<64, Eigen::half, true, false>>;
INSTANTIATE_TYPED_TEST_SUITE_P(Emulated, FastformerSuite, EmulatedCombos, emulated_names);

using EmulatedBackends =
    ::testing::Types<simt_emulator_t<1>, simt_emulator_t<64>, simt_emulator_t<64, false>,
                     simt_emulator_t<64, true, false>>;
INSTANTIATE_TYPED_TEST_SUITE_P(Emulated, FastformerMaskSuite, EmulatedBackends, emulated_backend_names);

// Which kernel runs each step of a causal call with a transform: the
// rescans stream, and where `out` is float the outputs U stream into it
// and a last step transforms them in place; other outputs keep the block
// program that stages U and transforms it. (The suites above check the
// results of both: float and 16-bit outputs.)
TEST(EmulatedFastformerSteps, CausalTransformsStreamTheirOutputsIntoFloatOutputs) {
  namespace gpu = streamattn::detail::gpu;
  gpu::additive_args<float> a;
  a.job = gpu::additive_job::fastformer;
  a.causal = true;
  a.stream_pooling = true;
  a.causal_streaming = true;
  const float weights[1] = {};
  a.transform = weights;
  const auto kernels = [&] {
    std::vector<std::pair<gpu::additive_step, gpu::additive_kernel_kind>> steps;
    gpu::for_each_additive_step(a, [&](gpu::additive_step step, streamattn::index_t) {
      steps.emplace_back(step, gpu::kernel_for(a, step));
    });
    return steps;
  };
  const auto kernel_of = [](const auto& steps, gpu::additive_step step) {
    for (const auto& [s, kernel] : steps)
      if (s == step) return static_cast<int>(kernel);
    return -1;
  };
  constexpr auto block_program = static_cast<int>(gpu::additive_kernel_kind::block_program);
  constexpr auto stream_causal = static_cast<int>(gpu::additive_kernel_kind::stream_causal);

  a.out_kind = gpu::element_kind::f32;
  auto steps = kernels();
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps.front().first, gpu::additive_step::transpose_transform);
  EXPECT_EQ(steps.back().first, gpu::additive_step::transform_outputs);
  EXPECT_EQ(steps.back().second, gpu::additive_kernel_kind::block_program);
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::causal_key_totals), stream_causal);
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::causal_outputs), stream_causal);

  a.out_kind = gpu::element_kind::bf16;
  steps = kernels();
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::transform_outputs), -1);
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::causal_key_totals), stream_causal);
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::causal_outputs), block_program);

  a.causal_streaming = false;  // as where the rescans do not stream (plan_additive)
  a.out_kind = gpu::element_kind::f32;
  steps = kernels();
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::transform_outputs), -1);
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::causal_outputs), block_program);

  a.causal_streaming = true;
  a.streaming = false;  // every step a block program: nothing to transform twice
  steps = kernels();
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::transform_outputs), -1);
  EXPECT_EQ(kernel_of(steps, gpu::additive_step::causal_outputs), block_program);
}

// 16-bit inputs accumulate in float, so with float outputs their causal
// calls with a transform transform in place too (the suites write outputs
// in the inputs' type, which keeps the block program).
TEST(EmulatedFastformerSteps, SixteenBitInputsTransformFloatOutputsInPlace) {
  auto rng = streamattn::testing::test_rng();
  for (const shape3& shape : {shape3{4, 70, 3, 20}, shape3{2, 130, 16, 16}}) {
    const problem<Eigen::bfloat16> p(shape, all_variants(true)[0], rng);  // "official": transform, mask
    ASSERT_TRUE(p.var.transform);
    const auto want = oracle(p, p.opts);
    expect_close(p, want, run<float>(simt_emulator_t<1>{}, p, p.opts), "bf16 in, float out, one chunk");
    expect_close(p, want, run<float>(simt_emulator_t<64>{}, p, p.opts), "bf16 in, float out, many chunks");
  }
}

}  // namespace
