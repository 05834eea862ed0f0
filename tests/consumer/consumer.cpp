// A downstream program: includes the umbrella header and calls the API on
// every CPU backend, exiting non-zero if the results disagree.
#include <cmath>
#include <cstdio>
#include <vector>

#include <streamattn/streamattn.hpp>

int main() {
  const streamattn::index_t B = 1, N = 33, H = 2, D = 16;
  std::vector<float> q(B * N * H * D), k(q.size()), v(q.size()), a(q.size()), b(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.1f * static_cast<float>(i));
    k[i] = std::cos(0.07f * static_cast<float>(i));
    v[i] = std::sin(0.03f * static_cast<float>(i) + 1.0f);
  }
  streamattn::attention_options opts;
  opts.causal = true;
  using streamattn::bshd;
  streamattn::attention(streamattn::naive, bshd(q.data(), B, N, H, D), bshd(k.data(), B, N, H, D),
                        bshd(v.data(), B, N, H, D), bshd(a.data(), B, N, H, D), opts);
  streamattn::attention(bshd(q.data(), B, N, H, D), bshd(k.data(), B, N, H, D), bshd(v.data(), B, N, H, D),
                        bshd(b.data(), B, N, H, D), opts);
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::fmax(worst, std::fabs(a[i] - b[i]));
  std::printf("streamattn consumer: max |naive - default| = %g\n", worst);
  return worst < 1e-5 ? 0 : 1;
}
