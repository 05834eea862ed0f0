// Compiles the kernels of STREAMATTN_TEST_FLOAT_KERNELS once for all test files
// (see kernel_instances.hpp); one file per group so a parallel build compiles
// the groups side by side.
#include "support/kernel_instances.hpp"

namespace streamattn::detail {
STREAMATTN_TEST_FLOAT_KERNELS(STREAMATTN_TEST_TEMPLATE)
}  // namespace streamattn::detail
