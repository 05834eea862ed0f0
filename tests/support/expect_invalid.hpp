// Checking bad input: the call must throw std::invalid_argument, and the
// message must name the argument and the sizes (every word is looked for).
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace streamattn::testing {

/// Runs `f` and checks it throws std::invalid_argument mentioning every word.
template <class F>
void expect_invalid(F&& f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << words.front() << "'";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    for (const auto& w : words) EXPECT_NE(what.find(w), std::string::npos) << "message: " << what << "\nmissing: " << w;
  }
}

}  // namespace streamattn::testing
