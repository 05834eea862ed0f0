// A console reporter that prints one readable row per benchmark: name, time,
// GFLOP/s, GB/s and the peak heap bytes a call needed beyond its operands.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

namespace streamattn::bench {

class table_reporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context& context) override {
    std::printf("streamattn benchmarks: %d CPUs at %.0f MHz\n", context.cpu_info.num_cpus,
                context.cpu_info.cycles_per_second / 1e6);
    std::printf("%-66s %12s %10s %10s %14s\n", "benchmark", "time/call", "GFLOP/s", "GB/s", "peak extra");
    std::printf("%s\n", std::string(116, '-').c_str());
    return true;
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) {
        std::printf("%-66s  skipped: %s\n", run.benchmark_name().c_str(), run.error_message.c_str());
        continue;
      }
      const double seconds = run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
      std::printf("%-66s %12s %10s %10s %14s\n", run.benchmark_name().c_str(), format_time(seconds).c_str(),
                  counter(run, "GFLOP/s", "%.1f").c_str(), counter(run, "GB/s", "%.2f").c_str(),
                  format_bytes(run, "peak_extra_bytes").c_str());
    }
    std::fflush(stdout);
  }

 private:
  static std::string counter(const Run& run, const char* name, const char* fmt) {
    const auto it = run.counters.find(name);
    if (it == run.counters.end()) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, fmt, it->second.value);
    return buf;
  }
  static std::string format_time(double s) {
    char buf[32];
    if (s >= 1) std::snprintf(buf, sizeof buf, "%.2f s", s);
    else if (s >= 1e-3) std::snprintf(buf, sizeof buf, "%.2f ms", s * 1e3);
    else std::snprintf(buf, sizeof buf, "%.1f us", s * 1e6);
    return buf;
  }
  static std::string format_bytes(const Run& run, const char* name) {
    const auto it = run.counters.find(name);
    if (it == run.counters.end()) return "-";
    const double b = it->second.value;
    char buf[32];
    if (b >= 1 << 30) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1 << 30));
    else if (b >= 1 << 20) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1 << 20));
    else if (b >= 1 << 10) std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1 << 10));
    else std::snprintf(buf, sizeof buf, "%.0f B", b);
    return buf;
  }
};

}  // namespace streamattn::bench
