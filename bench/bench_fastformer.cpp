// Fastformer additive attention benchmarks (registered by the Fastformer work).
#include "support/workload.hpp"

namespace streamattn::bench {
void register_fastformer_benchmarks(workload) {}
}  // namespace streamattn::bench
