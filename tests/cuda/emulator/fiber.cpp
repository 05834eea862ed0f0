#include "fiber.hpp"

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include <sys/mman.h>
#include <unistd.h>

namespace streamattn::testing::emulator {

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
  streamattn_emulator_switch(&from.stack_pointer, to.stack_pointer);
}

void fiber::start(void (*entry)(void*), void* arg) {
  // The first switch to this fiber pops the frame laid out here and
  // "returns" into the trampoline with the stack 16-byte aligned, which then
  // calls entry(arg) (r12 = entry, r13 = arg) as the ABI expects.
  auto top = reinterpret_cast<std::uintptr_t>(stack_ + stack_bytes_) & ~std::uintptr_t{15};
  auto* frame = reinterpret_cast<std::uint64_t*>(top - 16 - 8 * 8);
  const std::uint32_t control[2] = {0x1F80, 0x037F};  // MXCSR and x87 control word at power-on
  std::memcpy(&frame[0], control, sizeof control);
  frame[1] = 0;                                                                 // r15
  frame[2] = 0;                                                                 // r14
  frame[3] = reinterpret_cast<std::uint64_t>(arg);                              // r13
  frame[4] = reinterpret_cast<std::uint64_t>(entry);                            // r12
  frame[5] = 0;                                                                 // rbx
  frame[6] = 0;                                                                 // rbp
  frame[7] = reinterpret_cast<std::uint64_t>(&streamattn_emulator_trampoline);  // return address
  context_.stack_pointer = frame;
}

#else

void switch_fiber(fiber_context& from, fiber_context& to) {
  if (swapcontext(&from.context, &to.context) != 0) throw std::runtime_error("emulator: swapcontext failed");
}

namespace {
// makecontext passes int arguments only: the fiber's address travels as two halves.
void run_fiber(unsigned high, unsigned low) {
  const std::uint64_t bits = (std::uint64_t{high} << 32) | low;
  fiber* const f = reinterpret_cast<fiber*>(static_cast<std::uintptr_t>(bits));
  f->entry()(f->arg());
}
}  // namespace

void fiber::start(void (*entry)(void*), void* arg) {
  entry_ = entry;
  arg_ = arg;
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
