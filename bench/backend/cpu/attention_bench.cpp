// Attention through CpuBackend (2 threads): plain vs flash, per KV cache type, at Gemma 3 270M's
// shape (4 query heads, 1 KV head, head dim 256) and Llama 3.2 1B's (32 / 8, 64):
//   prefill: 512 tokens of one sequence over their own 512 cells (causal);
//   decode:  one token over DEPTH cells.
// Run: build/bin/tandem_cpu_bench --benchmark_filter=Attention
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

struct Shape {
  int n_head, n_head_kv, d;
};
constexpr Shape kGemma{4, 1, 256}, kLlama{32, 8, 64};
const WeightType kTypes[] = {WeightType::F16, WeightType::Q8_0, WeightType::Q4_0};

void bm_attention(benchmark::State& state, Shape sh, bool prefill) {
  const WeightType type = kTypes[state.range(0)];
  const bool flash = state.range(1) != 0;
  const int64_t depth = state.range(2);
  const int64_t n_tokens = prefill ? depth : 1;
  const int64_t row = int64_t(sh.n_head_kv) * sh.d;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> kv(static_cast<size_t>(depth * row));
  for (float& x : kv) x = nd(rng);
  std::vector<uint8_t> k(row_bytes(type, row) * size_t(depth)), v(k.size());
  for (int64_t c = 0; c < depth; ++c) {
    quant::quantize_row(type, kv.data() + c * row, k.data() + size_t(c) * row_bytes(type, row), row);
    quant::quantize_row(type, kv.data() + c * row, v.data() + size_t(c) * row_bytes(type, row), row);
  }
  std::vector<int32_t> cell_pos(static_cast<size_t>(depth)), cell_seq(static_cast<size_t>(depth), 0);
  std::vector<int32_t> tpos(static_cast<size_t>(n_tokens)), tseq(static_cast<size_t>(n_tokens), 0);
  for (int64_t c = 0; c < depth; ++c) cell_pos[size_t(c)] = int32_t(c);
  for (int64_t t = 0; t < n_tokens; ++t) tpos[size_t(t)] = int32_t(depth - n_tokens + t);
  std::vector<float> q(static_cast<size_t>(n_tokens * sh.n_head * sh.d)), out(q.size());
  for (float& x : q) x = nd(rng) * 0.3f;

  CpuBackend be(2);
  AttentionArgs a;
  a.q = q.data();
  a.out = out.data();
  a.n_tokens = n_tokens;
  a.n_head = sh.n_head;
  a.n_head_kv = sh.n_head_kv;
  a.head_dim_k = a.head_dim_v = sh.d;
  a.scale = 1.0f / std::sqrt(float(sh.d));
  a.token_pos = tpos.data();
  a.token_seq = tseq.data();
  a.k_type = a.v_type = type;
  a.k = k.data();
  a.v = v.data();
  a.n_cells = depth;
  a.cell_pos = cell_pos.data();
  a.cell_seq = cell_seq.data();
  a.flash = flash;
  for (auto _ : state) {
    be.attention(a);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(std::string(type_name(type)) + (flash ? " flash" : " plain"));
  state.counters["tok/s"] = benchmark::Counter(double(n_tokens), benchmark::Counter::kIsIterationInvariantRate);
}

void args(benchmark::internal::Benchmark* b, int64_t depth) {
  for (int t = 0; t < 3; ++t)
    for (int f = 0; f < 2; ++f) b->Args({t, f, depth});
  b->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(bm_attention, gemma_prefill512, kGemma, true)->Apply([](auto* b) { args(b, 512); });
BENCHMARK_CAPTURE(bm_attention, gemma_decode4096, kGemma, false)->Apply([](auto* b) { args(b, 4096); });
BENCHMARK_CAPTURE(bm_attention, llama_prefill512, kLlama, true)->Apply([](auto* b) { args(b, 512); });
BENCHMARK_CAPTURE(bm_attention, llama_decode4096, kLlama, false)->Apply([](auto* b) { args(b, 4096); });

}  // namespace
}  // namespace tandem::cpu
