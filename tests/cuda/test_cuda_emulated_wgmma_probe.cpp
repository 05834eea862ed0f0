// The wgmma operand probe (wgmma_probe_tests.hpp) on the SIMT emulator,
// which reads the operands as the kernel does: this checks the probe
// itself, so that on a GPU a failure is the GPU's reading.
#include "emulator/cuda_builtins.hpp"  // first: the kernels compile against it

#include <limits>

#include "wgmma_probe_tests.hpp"

namespace streamattn::testing {
namespace {

struct run_on_emulator {
  template <class S, bool Values, int N, int K>
  std::vector<float> operator()(const wgmma_probe_problem<S, Values, N, K>& problem, wgmma_probe_swaps swaps) const {
    std::vector<float> d(problem.exact.size(), std::numeric_limits<float>::quiet_NaN());  // poisoned
    emulator::launch("wgmma_probe_kernel", &wgmma_probe_kernel<S, Values, N, K>, dim3(1), dim3(wgmma_probe_threads),
                     wgmma_probe_shared_bytes<N, K>(), problem.a.data(), problem.b.data(), d.data(), swaps);
    return d;
  }
};

TEST(EmulatedWgmmaProbe, TheEmulatorReadsTheOperandsAsTheKernelDoes) {
  expect_wgmma_reads_as_the_kernel_does(run_on_emulator{});
}

// The probe tells readings apart: with one operand's offsets exchanged,
// the product comes out wrong, and the verdict names the exchange that
// makes it exact.
TEST(EmulatedWgmmaProbe, NamesTheReadingThatGivesTheExactProduct) {
  const auto exchanged_b = [](const auto& problem, wgmma_probe_swaps swaps) {
    swaps.b = !swaps.b;
    return run_on_emulator{}(problem, swaps);
  };
  const std::string scores = wgmma_probe_verdict<__nv_bfloat16, false, 64, 128>(7, exchanged_b);
  EXPECT_NE(scores.find("elements wrong"), std::string::npos) << scores;
  EXPECT_NE(scores.find("exchanged in the descriptors of B."), std::string::npos) << scores;
  const std::string values = wgmma_probe_verdict<__half, true, 128, 64>(8, exchanged_b);
  EXPECT_NE(values.find("exchanged in the descriptors of B."), std::string::npos) << values;
}

}  // namespace
}  // namespace streamattn::testing
