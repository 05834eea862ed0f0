// What the attention oracle suite (attention_suite.hpp) runs on: a platform
// that runs the cuda backend's kernels, the real GPU (real_gpu in
// device_support.cuh) or the SIMT emulator (emulated_gpu.hpp). A platform P
// provides
//   static std::string unavailable();        // why it cannot run here, or empty
//   static detail::gpu::device_limits limits();
//   template <class T> static X inputs(const problem<T>&);   // the inputs where the kernels read them
//   template <class Tout, class T> static result<Tout> run(const problem<T>&, const X&, const kernel_run&);
#pragma once

#include <string>

#include <gtest/gtest.h>

#include <streamattn/cuda/attention_plan.hpp>

#include "support/tensors.hpp"

namespace streamattn::testing {

/// How a test runs the kernels: through the plan the library chooses for the
/// platform's limits, or with `overrides` (forced split-KV, FMA kernel).
struct kernel_run {
  bool public_api = true;
  detail::gpu::plan_overrides overrides{};
  layout out_layout = layout::bshd;
  /// A block table goes to the device and is read there (unchecked, clamped)
  /// instead of being checked and copied by the call.
  bool table_on_device = false;
};

/// A test type: element type T on platform P.
template <class P, class T>
struct on_platform {
  using platform = P;
  using type = T;
};

#define STREAMATTN_REQUIRE_PLATFORM(P)             \
  do {                                             \
    const std::string why_not = P::unavailable();  \
    if (!why_not.empty()) GTEST_SKIP() << why_not; \
  } while (0)

}  // namespace streamattn::testing
