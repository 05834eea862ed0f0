// The algebra of the online-softmax state: it equals a direct softmax, merge
// is associative and order-independent up to rounding, -inf scores give
// zeros, and large logits do not overflow.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <streamattn/online_softmax.hpp>

#include "support/seed.hpp"
#include "support/tolerance.hpp"

namespace {

using streamattn::index_t;
using streamattn::online_softmax;
namespace st = streamattn::testing;

template <class Acc>
struct rows {
  std::vector<Acc> scores;
  std::vector<Acc> values;  // n x dim, row-major
  index_t dim;
};

template <class Acc>
rows<Acc> random_rows(std::mt19937_64& rng, index_t n, index_t dim, double score_range) {
  std::uniform_real_distribution<double> s(-score_range, score_range), v(-1, 1);
  rows<Acc> r{{}, {}, dim};
  for (index_t j = 0; j < n; ++j) r.scores.push_back(static_cast<Acc>(s(rng)));
  for (index_t j = 0; j < n * dim; ++j) r.values.push_back(static_cast<Acc>(v(rng)));
  return r;
}

/// softmax(scores) . values in long double, with the max subtracted.
template <class Acc>
std::vector<long double> direct(const rows<Acc>& r, index_t begin, index_t end, long double* lse = nullptr) {
  long double m = -std::numeric_limits<long double>::infinity();
  for (index_t j = begin; j < end; ++j) m = std::max<long double>(m, r.scores[j]);
  long double sum = 0;
  std::vector<long double> out(static_cast<std::size_t>(r.dim), 0.0L);
  for (index_t j = begin; j < end; ++j) {
    const long double w = std::exp(static_cast<long double>(r.scores[j]) - m);
    sum += w;
    for (index_t d = 0; d < r.dim; ++d) out[d] += w * r.values[j * r.dim + d];
  }
  for (auto& o : out) o /= sum;
  if (lse) *lse = m + std::log(sum);
  return out;
}

template <class Acc>
struct state_with_storage {
  std::vector<Acc> storage;
  online_softmax<Acc> state;
  explicit state_with_storage(index_t dim) : storage(static_cast<std::size_t>(dim)), state(storage.data(), dim) {}
  void feed(const rows<Acc>& r, index_t begin, index_t end) {
    for (index_t j = begin; j < end; ++j) state.update(r.scores[j], &r.values[j * r.dim]);
  }
  std::vector<double> result() const {
    std::vector<double> out(storage.size());
    state.finalize(out.data());
    return out;
  }
};

template <class Acc>
double max_error(const std::vector<double>& got, const std::vector<long double>& want) {
  double e = 0;
  for (std::size_t d = 0; d < got.size(); ++d) e = std::max(e, std::abs(got[d] - static_cast<double>(want[d])));
  return e;
}

template <class Acc>
class OnlineSoftmax : public ::testing::Test {};
using AccTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(OnlineSoftmax, AccTypes);

TYPED_TEST(OnlineSoftmax, UpdateMatchesDirectSoftmax) {
  using Acc = TypeParam;
  auto rng = st::test_rng();
  for (index_t n : {1, 2, 7, 64, 1000}) {
    const auto r = random_rows<Acc>(rng, n, 5, 8.0);
    state_with_storage<Acc> one_by_one(5);
    one_by_one.feed(r, 0, n);
    long double lse;
    const auto want = direct(r, 0, n, &lse);
    const double tol = st::reduction_tolerance<Acc>(n);
    EXPECT_LE(max_error<Acc>(one_by_one.result(), want), tol) << "n = " << n;
    EXPECT_NEAR(one_by_one.state.lse(), static_cast<double>(lse), tol * std::abs(static_cast<double>(lse)) + tol);

    // The block form agrees with the one-score form.
    state_with_storage<Acc> blocks(5);
    for (index_t j = 0; j < n; j += 13) {
      const index_t len = std::min<index_t>(13, n - j);
      blocks.state.update(&r.scores[j], len, &r.values[j * 5], 5);
    }
    EXPECT_LE(max_error<Acc>(blocks.result(), want), tol) << "n = " << n;
  }
}

TYPED_TEST(OnlineSoftmax, MergeIsAssociativeAndOrderIndependent) {
  using Acc = TypeParam;
  auto rng = st::test_rng();
  const index_t n = 300, dim = 4;
  const auto r = random_rows<Acc>(rng, n, dim, 20.0);
  const auto want = direct(r, 0, n);
  const index_t cuts[] = {0, 37, 151, 222, n};
  std::vector<state_with_storage<Acc>> parts;
  for (int c = 0; c < 4; ++c) {
    parts.emplace_back(dim);
    parts.back().feed(r, cuts[c], cuts[c + 1]);
  }
  auto combine = [&](std::vector<int> order, bool left_fold) {
    state_with_storage<Acc> acc(dim);
    if (left_fold) {
      for (int c : order) acc.state.merge(parts[c].state);
    } else {  // ((p0 + p1) + (p2 + p3)), a tree
      state_with_storage<Acc> a(dim), b(dim);
      a.state.merge(parts[order[0]].state);
      a.state.merge(parts[order[1]].state);
      b.state.merge(parts[order[2]].state);
      b.state.merge(parts[order[3]].state);
      acc.state.merge(a.state);
      acc.state.merge(b.state);
    }
    return acc.result();
  };
  const double tol = st::reduction_tolerance<Acc>(n);
  std::vector<int> order{0, 1, 2, 3};
  do {
    EXPECT_LE(max_error<Acc>(combine(order, true), want), tol);
    EXPECT_LE(max_error<Acc>(combine(order, false), want), tol);
  } while (std::next_permutation(order.begin(), order.end()));
}

TYPED_TEST(OnlineSoftmax, OnlyMaskedScoresFinalizeToZeros) {
  using Acc = TypeParam;
  const Acc ninf = -std::numeric_limits<Acc>::infinity();
  const Acc value[3] = {1, std::numeric_limits<Acc>::max(), -2};
  state_with_storage<Acc> s(3);
  for (int j = 0; j < 10; ++j) s.state.update(ninf, value);
  const Acc block[4] = {ninf, ninf, ninf, ninf};
  const Acc values[12] = {};
  s.state.update(block, 4, values, 3);
  state_with_storage<Acc> empty(3);
  s.state.merge(empty.state);
  EXPECT_TRUE(s.state.empty());
  for (double o : s.result()) EXPECT_EQ(o, 0.0);
  EXPECT_EQ(s.state.lse(), ninf);

  // A masked key between finite ones changes nothing.
  state_with_storage<Acc> with_mask(1), without(1);
  const Acc v1[1] = {3}, v2[1] = {5};
  with_mask.state.update(Acc(1), v1);
  with_mask.state.update(ninf, value);
  with_mask.state.update(Acc(2), v2);
  without.state.update(Acc(1), v1);
  without.state.update(Acc(2), v2);
  EXPECT_EQ(with_mask.result()[0], without.result()[0]);
}

TYPED_TEST(OnlineSoftmax, LargeLogitsDoNotOverflow) {
  using Acc = TypeParam;
  auto rng = st::test_rng();
  for (double magnitude : {1e4, -1e4}) {
    auto r = random_rows<Acc>(rng, 50, 3, 5.0);
    for (auto& s : r.scores) s = static_cast<Acc>(s + magnitude);
    state_with_storage<Acc> s(3);
    s.feed(r, 0, 50);
    // Shift-invariance: the result equals that of the unshifted scores.
    const auto want = direct(r, 0, 50);
    const auto got = s.result();
    for (double g : got) EXPECT_TRUE(std::isfinite(g));
    // Scores of magnitude 1e4 carry absolute rounding 1e4 * eps into the weights.
    EXPECT_LE(max_error<Acc>(got, want), 1e4 * st::epsilon<Acc>() * 8);
    EXPECT_TRUE(std::isfinite(s.state.lse()));
  }
}

}  // namespace
