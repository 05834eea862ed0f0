// Which set of benchmark cases to register: --workload=default|targets|full.
#pragma once

#include <string>

namespace streamattn::bench {

enum class workload {
  quick,    // a seconds-long smoke run (used by the test suite)
  standard, // the default memory/speed comparison of the README
  targets,  // the cases the issues set performance targets on
  full,     // the whole grid
};

workload parse_workload(const std::string& name);

// Each benchmark file registers its cases for a workload.
void register_attention_benchmarks(workload w);
void register_attention_backward_benchmarks(workload w);
void register_packed_benchmarks(workload w);
void register_fastformer_benchmarks(workload w);

}  // namespace streamattn::bench
