// Stackful fibers for the SIMT emulator: every emulated CUDA thread runs the
// kernel on a stack of its own, and gives the processor back to the
// scheduler wherever a real GPU thread would wait for others (a barrier, a
// warp-wide instruction).
//
// An emulated warp-wide instruction costs 64 switches (32 lanes arrive, 32
// resume), so the switch must be cheap: on x86-64 it is about twenty
// instructions of our own (fiber.cpp) that save only what the ABI says a
// call preserves; elsewhere it is POSIX ucontext, whose swapcontext also
// saves the signal mask with a system call (correct, about 20x slower).
#pragma once

#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace streamattn::testing::emulator {

/// What a suspended fiber needs to resume.
struct fiber_context {
  // Where the stack this context runs on lies, for AddressSanitizer
  // (fiber.cpp); null for the OS thread's own stack.
  const void* stack_bottom = nullptr;
  std::size_t stack_size = 0;
#if defined(__x86_64__)
  void* stack_pointer = nullptr;  // callee-saved registers are on that stack
#else
  ucontext_t context{};
#endif
};

/// Saves the running context in `from` and resumes `to`.
void switch_fiber(fiber_context& from, fiber_context& to);

/// A stack and the context of the code running on it. `start` prepares the
/// fiber to call entry(arg) the first time it is switched to; `entry` must
/// never return (it switches away for good instead), and a fiber may be
/// started again once it has done so.
class fiber {
 public:
  explicit fiber(std::size_t stack_bytes);
  ~fiber();
  fiber(const fiber&) = delete;
  fiber& operator=(const fiber&) = delete;
  void start(void (*entry)(void*), void* arg);
  fiber_context& context() { return context_; }
  void (*entry() const)(void*) { return entry_; }
  void* arg() const { return arg_; }

 private:
  void (*entry_)(void*) = nullptr;
  void* arg_ = nullptr;
  unsigned char* mapping_ = nullptr;  // guard page, then the stack
  std::size_t mapping_bytes_ = 0;
  unsigned char* stack_ = nullptr;
  std::size_t stack_bytes_ = 0;
  fiber_context context_;
};

}  // namespace streamattn::testing::emulator
