// Fastformer additive attention: the official module's forward pass on a
// padded batch, then the same model decoding causally one token at a time.
#include <array>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include <streamattn/streamattn.hpp>

int main() {
  using streamattn::index_t;
  const index_t batch = 2, seq = 1000, heads = 16, dim = 256;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  auto random = [&](index_t n, float stddev) {
    std::vector<float> x(static_cast<std::size_t>(n));
    for (float& e : x) e = stddev * normal(rng);
    return x;
  };
  // Q and K are the outputs of the module's query/key projections.
  const std::vector<float> q = random(batch * seq * dim, 1.0f), k = random(batch * seq * dim, 1.0f);
  const std::vector<float> query_att = random(heads * dim, 0.02f), key_att = random(heads * dim, 0.02f);
  const std::vector<float> transform = random(dim * dim, 0.02f), transform_bias = random(dim, 0.02f);

  // Learned weights in nn.Linear order: query_att/key_att (H, D), transform (D, D).
  streamattn::fastformer_weights<float> w;
  w.query_att = {query_att.data(), {heads, dim}, {dim, 1}};
  w.key_att = {key_att.data(), {heads, dim}, {dim, 1}};
  w.transform = {transform.data(), {dim, dim}, {dim, 1}};
  w.transform_bias = {transform_bias.data(), {dim}, {1}};

  // The second sequence is 600 tokens long, padded to 1000.
  std::unique_ptr<bool[]> keep(new bool[batch * seq]);
  for (index_t b = 0; b < batch; ++b)
    for (index_t j = 0; j < seq; ++j) keep[b * seq + j] = b == 0 || j < 600;
  streamattn::fastformer_options opts;  // official semantics: -10000 additive mask, V = Q, residual
  opts.mask = {keep.get(), {batch, seq}, {seq, 1}};

  std::vector<float> y(q.size());
  const auto shape = std::array<index_t, 3>{batch, seq, dim};
  streamattn::fastformer_attention(streamattn::simd, streamattn::contiguous(q.data(), shape),
                                   streamattn::contiguous(k.data(), shape), w,
                                   streamattn::contiguous(y.data(), shape), opts);
  std::printf("Y[0, 0, 0:4] = %.4f %.4f %.4f %.4f\n", y[0], y[1], y[2], y[3]);

  // Causal Fastformer, token by token: O(D) state, O(H*D + D^2) per token.
  streamattn::fastformer_options causal;
  causal.causal = true;
  streamattn::fastformer_decoder<float> decoder(streamattn::simd, w, dim, causal);
  std::vector<float> y_t(static_cast<std::size_t>(dim));
  for (index_t t = 0; t < 5; ++t) {
    decoder.append(streamattn::view<const float, 1>{q.data() + t * dim, {dim}, {1}},
                   streamattn::view<const float, 1>{k.data() + t * dim, {dim}, {1}},
                   streamattn::view<float, 1>{y_t.data(), {dim}, {1}});
    std::printf("decoded token %ld: y[0:2] = %.4f %.4f\n", static_cast<long>(t), y_t[0], y_t[1]);
  }
  return 0;
}
