// Compiles the tests' oracles once for all test files: the naive backend in
// long double and the error bounds around it (see kernel_instances.hpp and
// STREAMATTN_TEST_ATTENTION_ORACLES in problem.hpp). The build may give this
// file options of its own (STREAMATTN_TEST_ORACLE_OPTIONS): the sanitizer
// preset compiles it without instrumentation.
#include "support/backward_case.hpp"
#include "support/fastformer_problem.hpp"
#include "support/kernel_instances.hpp"
#include "support/problem.hpp"

namespace streamattn::detail {
STREAMATTN_TEST_ORACLE_KERNELS(STREAMATTN_TEST_TEMPLATE)
}  // namespace streamattn::detail

namespace streamattn::testing {
STREAMATTN_TEST_ATTENTION_ORACLES(STREAMATTN_TEST_TEMPLATE)
STREAMATTN_TEST_BACKWARD_ORACLES(STREAMATTN_TEST_TEMPLATE)
}  // namespace streamattn::testing

namespace streamattn::testing::ff {
STREAMATTN_TEST_FASTFORMER_ORACLES(STREAMATTN_TEST_TEMPLATE)
}  // namespace streamattn::testing::ff
