// What the emulator tells AddressSanitizer, when the build uses it: which
// stack a fiber switch goes to (fiber.cpp) and which bytes no kernel may
// touch (scheduler.cpp: the shared memory past what a launch asked for).
// Without ASan these compile to nothing.
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define STREAMATTN_EMULATOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STREAMATTN_EMULATOR_ASAN 1
#endif
#endif

#if defined(STREAMATTN_EMULATOR_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace streamattn::testing::emulator {

/// Any access to [p, p + bytes) is reported, until unpoison.
inline void poison(const void* p, std::size_t bytes) {
#if defined(STREAMATTN_EMULATOR_ASAN)
  __asan_poison_memory_region(p, bytes);
#else
  (void)p, (void)bytes;
#endif
}

inline void unpoison(const void* p, std::size_t bytes) {
#if defined(STREAMATTN_EMULATOR_ASAN)
  __asan_unpoison_memory_region(p, bytes);
#else
  (void)p, (void)bytes;
#endif
}

}  // namespace streamattn::testing::emulator
