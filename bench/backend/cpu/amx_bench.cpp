// Prefill matmuls, AVX-512 against AMX, single thread: 512 tokens x 2048 x 2048 weights per type, called
// the way cpu_matmul.cpp calls a kernel (64-token blocks over 256 KiB chunks of rows), GFLOP/s counting
// 2 * n_in * n_rows * n_tokens. Also 8/16/32-token calls, where kMinTokens hands over to AMX.
// Registers itself into tandem_cpu_bench (main in matmul_bench.cpp):
//   tandem_cpu_bench --benchmark_filter=amx_ --benchmark_min_time=0.5s --benchmark_repetitions=2
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench_weights.h"
#include "backend/cpu/kernels.h"
#include "quant/fp16.h"

namespace tandem::cpu {
namespace {

using WT = WeightType;

void bench_prefill(benchmark::State& state, Isa isa, WT t, int64_t n_in, int64_t n_rows, int64_t n_tokens) {
  const CpuKernels& k = kernels_for(isa);
  const uint32_t id = uint32_t(t);
  const std::vector<uint8_t> w = bench::random_weights(t, n_in, n_rows);
  std::vector<float> x(n_in * n_tokens);
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  const size_t ab = activation_row_bytes(t, n_in), rb = row_bytes(t, n_in);
  std::vector<uint8_t> act(ab * n_tokens);
  for (int64_t i = 0; i < n_tokens; ++i) k.quantize_act[id](x.data() + i * n_in, act.data() + i * ab, n_in);
  std::vector<float> y(n_rows * n_tokens);
  const int64_t chunk_rows = std::max<int64_t>(16, int64_t((256u << 10) / rb));  // as cpu_matmul.cpp
  for (auto _ : state) {
    for (int64_t r0 = 0; r0 < n_rows; r0 += chunk_rows)
      for (int64_t t0 = 0; t0 < n_tokens; t0 += 64)
        k.gemm[id](n_in, w.data() + r0 * rb, rb, std::min(chunk_rows, n_rows - r0), act.data() + t0 * ab, ab,
                   std::min<int64_t>(64, n_tokens - t0), y.data() + t0 * n_rows + r0, n_rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(double(state.iterations()) * 2.0 * double(n_in * n_rows * n_tokens) / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.SetLabel(isa_name(k.gemm_isa[id]));
}

const bool registered = [] {
  const WT types[] = {WT::Q4_K, WT::Q6_K, WT::Q8_0, WT::Q5_0, WT::Q4_0, WT::Q5_K, WT::IQ4_NL, WT::IQ4_XS};
  for (Isa isa : {Isa::Avx512, Isa::Amx}) {
    if (!isa_supported(isa)) continue;
    for (WT t : types) {
      const std::string name = std::string(type_name(t)) + "/" + isa_name(isa);
      benchmark::RegisterBenchmark(("amx_prefill512/" + name).c_str(), bench_prefill, isa, t, 2048, 2048, 512)
          ->Unit(benchmark::kMillisecond);
    }
    for (WT t : {WT::Q4_K, WT::Q8_0})
      for (int64_t nt : {8, 16, 32})
        benchmark::RegisterBenchmark(("amx_tokens" + std::to_string(nt) + "/" + std::string(type_name(t)) + "/" +
                                      isa_name(isa)).c_str(),
                                     bench_prefill, isa, t, 2048, 2048, nt)
            ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
}  // namespace tandem::cpu
