// Per-run random seeds for tests: fresh each run, printed when a test fails,
// reproducible with STREAMATTN_SEED=<seed>.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace streamattn::testing {

/// The seed of this test run: $STREAMATTN_SEED if set, else drawn once.
inline std::uint64_t run_seed() {
  static const std::uint64_t seed = [] {
    if (const char* env = std::getenv("STREAMATTN_SEED")) return static_cast<std::uint64_t>(std::strtoull(env, nullptr, 10));
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }();
  return seed;
}

/// A generator for the current test: the run seed mixed with the test's name,
/// so each test draws its own stream and a failure reproduces in isolation.
inline std::mt19937_64 test_rng(std::uint64_t salt = 0) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "";
  std::seed_seq seq{run_seed(), static_cast<std::uint64_t>(std::hash<std::string>{}(name)), salt};
  std::mt19937_64 rng(seq);
  return rng;
}

/// Prints the seed next to every failure.
class seed_printer : public ::testing::EmptyTestEventListener {
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed())
      std::printf("[  SEED    ] STREAMATTN_SEED=%llu reproduces this run\n",
                  static_cast<unsigned long long>(run_seed()));
  }
};

}  // namespace streamattn::testing
