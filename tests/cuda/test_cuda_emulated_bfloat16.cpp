// The attention oracle suite (attention_suite.hpp) on the SIMT emulator, bf16 inputs: the mma.sync kernel (and the
// FMA kernel where D > 256) as without sm_90a code, then the wgmma kernel wherever it applies.
#include "emulated_gpu.hpp"

namespace streamattn::testing {
using emulated_bf16 = ::testing::Types<on_platform<emulated_gpu, Eigen::bfloat16>, on_platform<emulated_hopper, Eigen::bfloat16>>;
INSTANTIATE_TYPED_TEST_SUITE_P(bf16, AttentionKernels, emulated_bf16);
}  // namespace streamattn::testing
