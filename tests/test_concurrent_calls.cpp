// Calls made at once from several of the user's threads, each call itself
// running on several workers, give what the same call gives alone, bit for
// bit. The library keeps nothing between calls (no thread pool, no caches,
// no globals) and its results depend on neither the thread count nor the
// timing, so any difference would be state that calls share by mistake.
// Under ThreadSanitizer (the tsan preset; README, "Thread safety") this is
// also where a data race between or within calls shows.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <streamattn/streamattn.hpp>

#include "support/backward_case.hpp"
#include "support/fastformer_problem.hpp"
#include "support/problem.hpp"
#include "support/seed.hpp"

namespace {

using namespace streamattn;
using namespace streamattn::testing;

constexpr int kCallers = 4;
constexpr int kRoundsPerCaller = 3;
constexpr int kWorkersPerCall = 2;

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// Runs `call()` kRoundsPerCaller times on each of kCallers threads started
/// together; returns how many of the calls returned false (a result that
/// differs from the call made alone).
template <class Call>
int mismatches_from_concurrent_callers(const Call& call) {
  std::vector<int> mismatches(kCallers, 0);  // one slot per caller: nothing shared but the inputs
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c)
    callers.emplace_back([&call, &mine = mismatches[static_cast<std::size_t>(c)]] {
      for (int r = 0; r < kRoundsPerCaller; ++r) mine += call() ? 0 : 1;
    });
  for (std::thread& t : callers) t.join();
  int total = 0;
  for (int m : mismatches) total += m;
  return total;
}

TEST(ConcurrentCalls, AttentionMatchesTheCallMadeAlone) {
  auto rng = test_rng();
  // A prefill with every option (bias, mask, ALiBi, key lengths, causal
  // window, softcap, lse) and a long decode, which splits its keys.
  const std::vector<std::pair<shape, std::string>> cases = {
      {{2, 96, 300, 4, 2, 64, 48}, "everything"},
      {{1, 1, 5000, 8, 2, 64, 64}, "key_lengths"},
  };
  for (const auto& [s, options] : cases) {
    const problem<float> p(s, options_named(options), rng);
    attention_options opts = p.opts;
    opts.threads = kWorkersPerCall;
    const result<float> alone = run<float>(simd, p, opts);
    const int differing = mismatches_from_concurrent_callers([&] {
      const result<float> r = run<float>(simd, p, opts);
      return same_bits(r.out.storage, alone.out.storage) && same_bits(r.lse, alone.lse);
    });
    EXPECT_EQ(differing, 0) << p.describe();
  }
}

TEST(ConcurrentCalls, AttentionBackwardMatchesTheCallMadeAlone) {
  auto rng = test_rng();
  // Full bias: its gradient is written too.
  const problem<float> p({2, 160, 200, 4, 2, 32, 24}, options_named("everything"), rng);
  attention_options opts = p.opts;
  opts.threads = kWorkersPerCall;
  result<float> forward = poisoned_result<float>(p, layout::bshd);
  opts.lse = forward.lse_view();
  attention(simd, p.q.cv(), p.k.cv(), p.v.cv(), forward.out.v, opts);
  tensor4<float> dout({p.s.batch, p.s.nq, p.s.hq, p.s.dim_v});
  dout.randomize(rng);

  const auto backward = [&] {
    gradients<float> g(p, layout::bshd);
    attention_backward(simd, p.q.cv(), p.k.cv(), p.v.cv(), forward.out.cv(), dout.cv(), g.views(), opts);
    return g;
  };
  const gradients<float> alone = backward();
  ASSERT_FALSE(alone.dbias.empty());
  const int differing = mismatches_from_concurrent_callers([&] {
    const gradients<float> g = backward();
    return same_bits(g.dq.storage, alone.dq.storage) && same_bits(g.dk.storage, alone.dk.storage) &&
           same_bits(g.dv.storage, alone.dv.storage) && same_bits(g.dbias, alone.dbias);
  });
  EXPECT_EQ(differing, 0) << p.describe();
}

TEST(ConcurrentCalls, FastformerMatchesTheCallMadeAlone) {
  auto rng = test_rng();
  // The official module (transform, mask) and its causal form, whose
  // sequences are scanned in parallel pieces.
  for (bool causal : {false, true}) {
    const ff::problem<float> p({2, 3000, 4, 16}, ff::all_variants(causal).front(), rng);
    fastformer_options opts = p.opts;
    opts.threads = kWorkersPerCall;
    const ff::tensor3<float> alone = ff::run<float>(simd, p, opts);
    const int differing = mismatches_from_concurrent_callers(
        [&] { return same_bits(ff::run<float>(simd, p, opts).storage, alone.storage); });
    EXPECT_EQ(differing, 0) << p.describe();
  }
}

}  // namespace
