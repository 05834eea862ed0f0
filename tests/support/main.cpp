// GoogleTest entry point shared by every test executable: registers the seed
// printer so a failure always says how to reproduce it.
#include <gtest/gtest.h>

#include "seed.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new streamattn::testing::seed_printer);
  return RUN_ALL_TESTS();
}
