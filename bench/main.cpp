// The benchmark driver: picks a workload, registers its cases and prints the
// readable table (plus JSON with --benchmark_out=FILE --benchmark_out_format=json).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/alloc_counter.hpp"
#include "support/table_reporter.hpp"
#include "support/workload.hpp"

namespace streamattn::bench {
workload parse_workload(const std::string& name) {
  if (name == "quick") return workload::quick;
  if (name == "default" || name == "standard") return workload::standard;
  if (name == "targets") return workload::targets;
  if (name == "full") return workload::full;
  throw std::invalid_argument("unknown --workload '" + name + "' (quick, default, targets, full)");
}
}  // namespace streamattn::bench

int main(int argc, char** argv) {
  using namespace streamattn::bench;
  workload w = workload::standard;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--workload=", 11) == 0) {
      try {
        w = parse_workload(argv[i] + 11);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
      }
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  if (!heap_counting_available()) std::printf("note: heap counting unavailable here; peak extra reads 0\n");

  register_attention_benchmarks(w);
  register_attention_backward_benchmarks(w);
  register_packed_benchmarks(w);
  register_fastformer_benchmarks(w);

  table_reporter table;
  benchmark::RunSpecifiedBenchmarks(&table);
  benchmark::Shutdown();
  return 0;
}
