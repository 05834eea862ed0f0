// A first look at streamattn: causal attention over a [B, S, H, D] buffer,
// then the same heads through the one-head Eigen overload.
#include <cstdio>
#include <random>
#include <vector>

#include <Eigen/Core>
#include <streamattn/streamattn.hpp>

int main() {
  using streamattn::index_t;
  const index_t batch = 2, seq = 300, heads = 4, dim = 64;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> q(batch * seq * heads * dim), k(q.size()), v(q.size()), out(q.size());
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = normal(rng);

  // Views describe memory; nothing is copied. bshd = FlashAttention's layout.
  streamattn::attention_options opts;
  opts.causal = true;
  std::vector<float> lse(batch * heads * seq);
  opts.lse = streamattn::view<float, 3>{lse.data(), {batch, heads, seq}, {heads * seq, seq, 1}};
  streamattn::attention(streamattn::simd, streamattn::bshd(q.data(), batch, seq, heads, dim),
                        streamattn::bshd(k.data(), batch, seq, heads, dim),
                        streamattn::bshd(v.data(), batch, seq, heads, dim),
                        streamattn::bshd(out.data(), batch, seq, heads, dim), opts);
  std::printf("out[0, 0, 0, 0:4] = %.4f %.4f %.4f %.4f, lse[0, 0, 0] = %.4f\n", out[0], out[1], out[2], out[3],
              lse[0]);

  // One head with Eigen matrices: any storage order or expression works.
  Eigen::MatrixXf Q = Eigen::MatrixXf::Random(seq, dim), K = Eigen::MatrixXf::Random(seq, dim);
  Eigen::MatrixXf V = Eigen::MatrixXf::Random(seq, dim);
  streamattn::attention_options causal;
  causal.causal = true;
  const auto O = streamattn::attention(streamattn::simd, Q, K, V, causal);
  std::printf("Eigen overload: %ld x %ld result, O(0, 0) = %.4f\n", static_cast<long>(O.rows()),
              static_cast<long>(O.cols()), O(0, 0));
  return 0;
}
