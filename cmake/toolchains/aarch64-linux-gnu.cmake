# Cross-compiling streamattn's tests for 64-bit ARM (the NEON path) on a
# Debian x86-64 machine, running them under qemu-user:
#   apt-get install -y g++-aarch64-linux-gnu qemu-user
#   (build GoogleTest for aarch64 from /usr/src/googletest with this toolchain, install to PREFIX)
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake \
#         -DCMAKE_PREFIX_PATH=PREFIX -DEigen3_DIR=/usr/share/eigen3/cmake -DCMAKE_BUILD_TYPE=Release \
#         -DSTREAMATTN_BUILD_BENCHMARKS=OFF -DSTREAMATTN_ENABLE_CUDA=OFF -DSTREAMATTN_TEST_PACKAGING=OFF
#   (the packaging checks' consumer projects would be configured without this toolchain)
#   cmake --build build/aarch64 -j2 && ctest --test-dir build/aarch64   (ctest runs them through qemu)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
