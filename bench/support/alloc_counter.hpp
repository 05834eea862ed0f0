// Heap accounting for benchmarks: every malloc/new in the process is counted
// so a benchmark can report the peak memory a call allocated beyond its
// inputs and outputs.
#pragma once

#include <cstddef>

namespace streamattn::bench {

/// Bytes currently allocated on the heap by the process.
std::size_t heap_bytes_in_use();

/// Starts a new peak measurement from the current heap level.
void reset_heap_peak();

/// Largest heap level since the last reset, minus the level at that reset.
std::size_t heap_peak_since_reset();

/// Number of allocations since the program started.
std::size_t heap_allocation_count();

/// False when the allocator could not be interposed (non-glibc platforms):
/// the peak then reads 0.
bool heap_counting_available();

}  // namespace streamattn::bench
