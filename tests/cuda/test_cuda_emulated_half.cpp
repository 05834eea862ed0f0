// The attention oracle suite (attention_suite.hpp) on the SIMT emulator, fp16 inputs: the mma.sync kernel (and the
// FMA kernel where D > 256) as without sm_90a code, then the wgmma kernel wherever it applies.
#include "emulated_gpu.hpp"

namespace streamattn::testing {
using emulated_f16 = ::testing::Types<on_platform<emulated_gpu, Eigen::half>, on_platform<emulated_hopper, Eigen::half>>;
INSTANTIATE_TYPED_TEST_SUITE_P(f16, AttentionKernels, emulated_f16);
}  // namespace streamattn::testing
