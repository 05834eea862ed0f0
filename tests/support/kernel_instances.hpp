// The CPU kernels that several test files run, compiled once per build instead
// of once per test file.
//
// The oracle suites of test_attention, test_packed_sequences,
// test_paged_kv_cache, test_quantised_kv_cache, test_simd_properties and
// test_validation each instantiated and optimised the same kernels (simd
// attention alone: ~20 s a type), and the portable and sanitizer builds did so
// again. Targets that link `streamattn_test_kernels` get
// STREAMATTN_TEST_KERNEL_INSTANCES defined, which turns the lists below into
// explicit instantiation declarations (`extern template`), so their files call
// the copies compiled in support/kernel_instances/*.cpp. The lists hold what at
// least two test files run; anything else is instantiated where it is used, as
// usual, since moving it here would save nothing. The oracles (problem.hpp,
// fastformer_problem.hpp, backward_case.hpp) are compiled once the same way,
// in oracle.cpp, which a build may compile with options of its own.
#pragma once

#include <streamattn/streamattn.hpp>

// X(declaration) for each kernel, grouped by the file that compiles it.
#define STREAMATTN_TEST_FLOAT_KERNELS(X)                                                                               \
  X(void attention_impl<float, float, float>(naive_t, const attention_params<float, float, float>&));                  \
  X(void attention_impl<float, float, float>(scalar_t, const attention_params<float, float, float>&));                 \
  X(void attention_impl<float, float, float>(simd_t, const attention_params<float, float, float>&));                   \
  X(std::size_t attention_workspace_bytes<float, float, float>(simd_t, const attention_params<float, float, float>&)); \
  X(void attention_backward_impl<float, float, float>(scalar_t,                                                        \
                                                      const attention_backward_params<float, float, float>&));         \
  X(void attention_backward_impl<float, float, float>(simd_t, const attention_backward_params<float, float, float>&)); \
  X(void additive_pool_impl<float, float, float>(naive_t, const additive_pool_params<float, float, float>&));          \
  X(void additive_pool_impl<float, float, float>(simd_t, const additive_pool_params<float, float, float>&));           \
  X(void fastformer_impl<float, float, float>(naive_t, const fastformer_params<float, float, float>&));                \
  X(void fastformer_impl<float, float, float>(scalar_t, const fastformer_params<float, float, float>&));               \
  X(void fastformer_impl<float, float, float>(simd_t, const fastformer_params<float, float, float>&));

#define STREAMATTN_TEST_DOUBLE_KERNELS(X) \
  X(void attention_impl<double, double, double>(simd_t, const attention_params<double, double, double>&));

// The oracle's kernel (support/kernel_instances/oracle.cpp, with the oracles
// of problem.hpp, fastformer_problem.hpp and backward_case.hpp).
#define STREAMATTN_TEST_ORACLE_KERNELS(X) \
  X(void attention_impl<double, double, double>(naive_t, const attention_params<double, double, double>&));

#define STREAMATTN_TEST_16BIT_KERNELS(X)                                        \
  X(void attention_impl<Eigen::half, Eigen::half, Eigen::half>(                 \
      simd_t, const attention_params<Eigen::half, Eigen::half, Eigen::half>&)); \
  X(void attention_impl<Eigen::bfloat16, Eigen::bfloat16, Eigen::bfloat16>(     \
      scalar_t, const attention_params<Eigen::bfloat16, Eigen::bfloat16, Eigen::bfloat16>&));

#define STREAMATTN_TEST_EXTERN_TEMPLATE(...) extern template __VA_ARGS__
#define STREAMATTN_TEST_TEMPLATE(...) template __VA_ARGS__

#if defined(STREAMATTN_TEST_KERNEL_INSTANCES)
namespace streamattn::detail {
STREAMATTN_TEST_FLOAT_KERNELS(STREAMATTN_TEST_EXTERN_TEMPLATE)
STREAMATTN_TEST_DOUBLE_KERNELS(STREAMATTN_TEST_EXTERN_TEMPLATE)
STREAMATTN_TEST_ORACLE_KERNELS(STREAMATTN_TEST_EXTERN_TEMPLATE)
STREAMATTN_TEST_16BIT_KERNELS(STREAMATTN_TEST_EXTERN_TEMPLATE)
}  // namespace streamattn::detail
#endif
