#include "fiber.hpp"

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include <sys/mman.h>
#include <unistd.h>

#include "address_sanitizer.hpp"
#if defined(STREAMATTN_EMULATOR_ASAN)
#include <pthread.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace streamattn::testing::emulator {
namespace {

// AddressSanitizer marks the stack bytes around each frame's locals and
// assumes one stack per OS thread. Under it, every switch says which stack
// it goes to, and a fiber's stack is cleared of the marks its last kernel
// run left (that run never returned from its frames: its fiber switched
// away for good). Without this ASan takes the stale marks for overflows.
#if defined(STREAMATTN_EMULATOR_ASAN)
struct stack_span {
  const void* bottom = nullptr;
  std::size_t size = 0;
};

/// The OS thread's own stack, where the scheduler runs (looked up once per
/// thread: for the main thread glibc reads /proc/self/maps).
stack_span thread_stack() {
  thread_local const stack_span span = [] {
    stack_span s;
    pthread_attr_t attributes;
    if (pthread_getattr_np(pthread_self(), &attributes) == 0) {
      void* bottom = nullptr;
      pthread_attr_getstack(&attributes, &bottom, &s.size);
      pthread_attr_destroy(&attributes);
      s.bottom = bottom;
    }
    return s;
  }();
  return span;
}

void announce_switch(void** fake_stack, const fiber_context& to) {
  const stack_span span = to.stack_bottom ? stack_span{to.stack_bottom, to.stack_size} : thread_stack();
  __sanitizer_start_switch_fiber(fake_stack, span.bottom, span.size);
}
void arrived_from_switch(void* fake_stack) {
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
}
#else
void announce_switch(void**, const fiber_context&) {}
void arrived_from_switch(void*) {}
#endif

/// The first code a started fiber runs.
void fiber_main(void* self) {
  arrived_from_switch(nullptr);
  auto* const f = static_cast<fiber*>(self);
  f->entry()(f->arg());
}

}  // namespace

// The stack is mapped with an inaccessible page below it, so an overflow
// faults at once instead of silently overwriting the heap.
fiber::fiber(std::size_t stack_bytes) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  stack_bytes_ = (stack_bytes + page - 1) / page * page;
  mapping_bytes_ = stack_bytes_ + page;
  void* p = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("emulator: cannot map a fiber stack");
  mapping_ = static_cast<unsigned char*>(p);
  if (mprotect(mapping_, page, PROT_NONE) != 0) {
    munmap(mapping_, mapping_bytes_);
    throw std::runtime_error("emulator: cannot protect a fiber stack's guard page");
  }
  stack_ = mapping_ + page;
}

fiber::~fiber() {
  unpoison(stack_, stack_bytes_);
  munmap(mapping_, mapping_bytes_);
}

#if defined(__x86_64__)

// System V x86-64: a call preserves rbx, rbp, r12-r15, the stack pointer,
// MXCSR's control bits and the x87 control word; everything else the caller
// of switch_fiber has already given up. The switch pushes those onto the
// running stack, swaps stack pointers and pops the other fiber's.
extern "C" void streamattn_emulator_switch(void** save_sp, void* load_sp);
extern "C" void streamattn_emulator_trampoline();

asm(R"(
    .text
    .globl streamattn_emulator_switch
    .type streamattn_emulator_switch, @function
streamattn_emulator_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size streamattn_emulator_switch, .-streamattn_emulator_switch

    .globl streamattn_emulator_trampoline
    .type streamattn_emulator_trampoline, @function
streamattn_emulator_trampoline:
    movq %r13, %rdi
    callq *%r12
    ud2
    .size streamattn_emulator_trampoline, .-streamattn_emulator_trampoline
    .section .note.GNU-stack,"",@progbits
    .text
)");

void switch_fiber(fiber_context& from, fiber_context& to) {
  void* fake_stack = nullptr;
  announce_switch(&fake_stack, to);
  streamattn_emulator_switch(&from.stack_pointer, to.stack_pointer);
  arrived_from_switch(fake_stack);
}

void fiber::start(void (*entry)(void*), void* arg) {
  entry_ = entry;
  arg_ = arg;
  context_.stack_bottom = stack_;
  context_.stack_size = stack_bytes_;
  unpoison(stack_, stack_bytes_);
  // The first switch to this fiber pops the frame laid out here and
  // "returns" into the trampoline with the stack 16-byte aligned, which then
  // calls fiber_main(this) (r12 = fiber_main, r13 = this) as the ABI expects.
  auto top = reinterpret_cast<std::uintptr_t>(stack_ + stack_bytes_) & ~std::uintptr_t{15};
  auto* frame = reinterpret_cast<std::uint64_t*>(top - 16 - 8 * 8);
  const std::uint32_t control[2] = {0x1F80, 0x037F};  // MXCSR and x87 control word at power-on
  std::memcpy(&frame[0], control, sizeof control);
  frame[1] = 0;                                                                 // r15
  frame[2] = 0;                                                                 // r14
  frame[3] = reinterpret_cast<std::uint64_t>(this);                             // r13
  frame[4] = reinterpret_cast<std::uint64_t>(&fiber_main);                      // r12
  frame[5] = 0;                                                                 // rbx
  frame[6] = 0;                                                                 // rbp
  frame[7] = reinterpret_cast<std::uint64_t>(&streamattn_emulator_trampoline);  // return address
  context_.stack_pointer = frame;
}

#else

void switch_fiber(fiber_context& from, fiber_context& to) {
  void* fake_stack = nullptr;
  announce_switch(&fake_stack, to);
  if (swapcontext(&from.context, &to.context) != 0) throw std::runtime_error("emulator: swapcontext failed");
  arrived_from_switch(fake_stack);
}

namespace {
// makecontext passes int arguments only: the fiber's address travels as two halves.
void run_fiber(unsigned high, unsigned low) {
  const std::uint64_t bits = (std::uint64_t{high} << 32) | low;
  fiber_main(reinterpret_cast<fiber*>(static_cast<std::uintptr_t>(bits)));
}
}  // namespace

void fiber::start(void (*entry)(void*), void* arg) {
  entry_ = entry;
  arg_ = arg;
  context_.stack_bottom = stack_;
  context_.stack_size = stack_bytes_;
  unpoison(stack_, stack_bytes_);
  if (getcontext(&context_.context) != 0) throw std::runtime_error("emulator: getcontext failed");
  context_.context.uc_stack.ss_sp = stack_;
  context_.context.uc_stack.ss_size = stack_bytes_;
  context_.context.uc_link = nullptr;
  const std::uint64_t bits = reinterpret_cast<std::uintptr_t>(this);
  makecontext(&context_.context, reinterpret_cast<void (*)()>(&run_fiber), 2, static_cast<unsigned>(bits >> 32),
              static_cast<unsigned>(bits));
}

#endif

}  // namespace streamattn::testing::emulator
