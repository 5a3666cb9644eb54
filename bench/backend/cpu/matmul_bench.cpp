// Single-thread CPU matmul kernels per weight type and ISA level: decode (one token, GB/s of weight
// bytes streamed) and prefill (64 and 512 tokens, GFLOP/s; "-invariant": the batch-invariant tables). Weights
// are random blocks with finite scales: the kernels' speed does not depend on the values. Activation
// quantization is timed separately.
//   tandem_cpu_bench --benchmark_min_time=0.2s [--benchmark_filter=Q4_K]
#include <cstdlib>
#include <cstring>
#include <memory>
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

const WT kTypes[] = {WT::Q4_K, WT::Q6_K, WT::Q8_0, WT::Q4_0, WT::Q5_0, WT::Q5_K, WT::Q3_K, WT::Q2_K,
                     WT::Q4_1, WT::Q5_1, WT::IQ4_NL, WT::IQ4_XS, WT::F16, WT::BF16, WT::F32,
                     WT::IQ2_XXS, WT::IQ2_XS, WT::IQ2_S, WT::IQ3_XXS, WT::IQ3_S, WT::IQ1_S, WT::IQ1_M};

void bench_gemm(benchmark::State& state, Isa isa, Uarch uarch, WT t, int64_t n_in, int64_t n_rows, int64_t n_tokens,
                bool batch_invariant) {
  const CpuKernels& k = kernels_for(isa, uarch, batch_invariant);
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
  for (auto _ : state) {
    k.gemm[id](n_in, w.data(), rb, n_rows, act.data(), ab, n_tokens, y.data(), n_rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double iters = double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(iters * double(rb * n_rows) / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(iters * 2.0 * double(n_in * n_rows * n_tokens) / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(isa_name(k.gemm_isa[id]));
}

// The pack itself, one thread (GB/s of the file's bytes): the load's cost per matrix it repacks.
void bench_pack(benchmark::State& state, Isa isa, Uarch uarch, WT t, int64_t n_in, int64_t n_rows) {
  const CpuKernels& k = kernels_for(isa, uarch);
  const uint32_t id = uint32_t(t);
  const std::vector<uint8_t> w = bench::random_weights(t, n_in, n_rows);
  const size_t rb = row_bytes(t, n_in), bytes = k.pack[id](n_in, nullptr, 0, n_rows, nullptr);
  std::unique_ptr<uint8_t, decltype(&std::free)> panels(static_cast<uint8_t*>(std::aligned_alloc(64, bytes)),
                                                        std::free);
  for (auto _ : state) {
    k.pack[id](n_in, w.data(), rb, n_rows, panels.get());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] =
      benchmark::Counter(double(state.iterations()) * double(rb * n_rows) / 1e9, benchmark::Counter::kIsRate);
}

// The same product over the matrix repacked at load (kernels.h PackFn / PackedGemmFn); the pack is not timed.
void bench_packed(benchmark::State& state, Isa isa, Uarch uarch, WT t, int64_t n_in, int64_t n_rows, int64_t n_tokens) {
  const CpuKernels& k = kernels_for(isa, uarch, true);
  const uint32_t id = uint32_t(t);
  const std::vector<uint8_t> w = bench::random_weights(t, n_in, n_rows);
  const size_t rb = row_bytes(t, n_in), ab = activation_row_bytes(t, n_in);
  const size_t bytes = k.pack[id](n_in, nullptr, 0, n_rows, nullptr);
  std::unique_ptr<uint8_t, decltype(&std::free)> panels(static_cast<uint8_t*>(std::aligned_alloc(64, bytes)), std::free);
  k.pack[id](n_in, w.data(), rb, n_rows, panels.get());
  std::vector<float> x(n_in * n_tokens);
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  std::vector<uint8_t> act(ab * n_tokens);
  for (int64_t i = 0; i < n_tokens; ++i) k.quantize_act[id](x.data() + i * n_in, act.data() + i * ab, n_in);
  std::vector<float> y(n_rows * n_tokens);
  for (auto _ : state) {
    k.packed_gemm[id](n_in, panels.get(), n_rows, act.data(), ab, n_tokens, y.data(), n_rows);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double iters = double(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(iters * double(bytes) / 1e9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(iters * 2.0 * double(n_in * n_rows * n_tokens) / 1e9, benchmark::Counter::kIsRate);
}

void bench_quantize(benchmark::State& state, Isa isa, WT t, int64_t n) {
  const CpuKernels& k = kernels_for(isa);
  std::vector<float> x(n);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  std::vector<uint8_t> out(activation_row_bytes(t, n));
  for (auto _ : state) {
    k.quantize_act[uint32_t(t)](x.data(), out.data(), n);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["Melem/s"] = benchmark::Counter(double(state.iterations()) * double(n) / 1e6, benchmark::Counter::kIsRate);
}

}  // namespace
}  // namespace tandem::cpu

int main(int argc, char** argv) {
  using namespace tandem::cpu;
  benchmark::Initialize(&argc, argv);
#ifndef NDEBUG
  std::fprintf(stderr, "warning: assertions enabled; figures are not representative\n");
#endif
  std::fprintf(stderr, "cpu: best ISA %s (avx512vnni %d, avx512bf16 %d, amx granted %d)\n", isa_name(best_isa()),
               cpu_features().avx512vnni, cpu_features().avx512bf16, cpu_features().amx_granted);
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) {
    if (!isa_supported(isa)) continue;
    for (Uarch uarch : {Uarch::Intel, Uarch::Zen}) {
      for (tandem::WeightType t : kTypes) {
        if (isa == Isa::Generic && uarch == Uarch::Zen) continue;  // the reference has no per-CPU choices
        const std::string name = std::string(tandem::type_name(t)) + "/" + isa_name(isa) +
                                 (isa == Isa::Generic ? "" : std::string("-") + uarch_name(uarch));
        // Decode: 4096 x 8192 (19 MB of Q4_K): out of L2, streamed like a real layer.
        benchmark::RegisterBenchmark(("decode/" + name).c_str(), bench_gemm, isa, uarch, t, 4096, 8192, 1, false)
            ->Unit(benchmark::kMillisecond);
        // Decode out of L2 (2048 x 1024, 1.2 MB of Q4_K): the kernel's own speed, as small models see it.
        benchmark::RegisterBenchmark(("decode_l2/" + name).c_str(), bench_gemm, isa, uarch, t, 2048, 1024, 1, false)
            ->Unit(benchmark::kMicrosecond);
        // Decode along long rows: DeepSeek-V2-Lite's dense ffn_down (2048 x 10944, not a multiple of 256, so
        // Q4_K_M files hold it as Q5_0): the activations no longer fit L1 beside the weights.
        if (tandem::block_size(t) == 32)
          benchmark::RegisterBenchmark(("decode_wide/" + name).c_str(), bench_gemm, isa, uarch, t, 10944, 2048, 1, false)
              ->Unit(benchmark::kMicrosecond);
        // Decode through a wide, short-row output layer (Gemma 3 270M's tied 262144 x 640 embedding).
        benchmark::RegisterBenchmark(("decode_vocab/" + name).c_str(), bench_gemm, isa, uarch, t, 640, 262144, 1, false)
            ->Unit(benchmark::kMillisecond);
        // A few tokens at once (2-8 sequences decoding together in the server), batch-invariant tables as the
        // server runs them: the weights are read once per call, so time per token should fall with n.
        if (isa != Isa::Generic)
          for (int64_t n : {1, 2, 4, 8})
            benchmark::RegisterBenchmark(("few_vocab/" + name + "/n" + std::to_string(n)).c_str(), bench_gemm, isa,
                                         uarch, t, 640, 262144, n, true)
                ->Unit(benchmark::kMillisecond);
        // The same over the matrix repacked at load, where the level repacks the type (both tables do alike).
        if (kernels_for(isa, uarch).pack[uint32_t(t)]) {
          // One routed expert's matrix of DeepSeek-V2-Lite (ffn_gate_exps: 1408 rows of 2048): what laying out an
          // expert read from disk would cost (BENCHMARKS.md, Zen 3's second session).
          benchmark::RegisterBenchmark(("pack/" + name).c_str(), bench_pack, isa, uarch, t, 2048, 1408)
              ->Unit(benchmark::kMicrosecond);
          benchmark::RegisterBenchmark(("decode_packed/" + name).c_str(), bench_packed, isa, uarch, t, 4096, 8192, 1)
              ->Unit(benchmark::kMillisecond);
          // Out of L2 as decode_l2: the repacked kernel's own speed, where a thread's DRAM share does not cap it.
          benchmark::RegisterBenchmark(("decode_l2_packed/" + name).c_str(), bench_packed, isa, uarch, t, 2048, 1024, 1)
              ->Unit(benchmark::kMicrosecond);
          if (640 % tandem::block_size(t) == 0)  // whole blocks only: the k-quants' 256 do not divide 640
            for (int64_t n : {1, 2, 4, 8})
              benchmark::RegisterBenchmark(("few_vocab_packed/" + name + "/n" + std::to_string(n)).c_str(),
                                           bench_packed, isa, uarch, t, 640, 262144, n)
                  ->Unit(benchmark::kMillisecond);
          // 1-8 tokens (a server's slots decoding together) over a matrix of every format's blocks well past L3
          // (2048 x 65536: 58-142 MB), read once per call: GB/s against the machine's one-thread bandwidth.
          for (int64_t n : {1, 2, 4, 8})
            benchmark::RegisterBenchmark(("few_dram_packed/" + name + "/n" + std::to_string(n)).c_str(), bench_packed,
                                         isa, uarch, t, 2048, 65536, n)
                ->Unit(benchmark::kMillisecond);
        }
        benchmark::RegisterBenchmark(("prefill64/" + name).c_str(), bench_gemm, isa, uarch, t, 4096, 512, 64, false)
            ->Unit(benchmark::kMillisecond);
        if (kernels_for(isa, uarch).pack[uint32_t(t)])  // prefill512's call over the repacked matrix
          benchmark::RegisterBenchmark(("prefill512_packed/" + name).c_str(), bench_packed, isa, uarch, t, 2048, 256, 512)
              ->Unit(benchmark::kMillisecond);
        // A prefill call as cpu_matmul makes it for pp512 on the 1B shape: 512 tokens, a chunk of 256 rows.
        if (isa != Isa::Generic)
          benchmark::RegisterBenchmark(("prefill512/" + name).c_str(), bench_gemm, isa, uarch, t, 2048, 256, 512, false)
              ->Unit(benchmark::kMillisecond);
        // The batch-invariant tables, where their prefill kernel differs (kernels.h): its cost.
        if (kernels_for(isa, uarch, true).gemm[uint32_t(t)] != kernels_for(isa, uarch).gemm[uint32_t(t)])
          benchmark::RegisterBenchmark(("prefill64/" + name + "-invariant").c_str(), bench_gemm, isa, uarch, t, 4096,
                                       512, 64, true)
              ->Unit(benchmark::kMillisecond);
      }
    }
    for (tandem::WeightType t : {tandem::WeightType::Q8_0, tandem::WeightType::Q4_1, tandem::WeightType::Q4_K,
                                 tandem::WeightType::F16, tandem::WeightType::BF16})
      benchmark::RegisterBenchmark(("quantize_act/" + std::string(tandem::type_name(tandem::cpu::activation_type(t))) +
                                    "/" + isa_name(isa)).c_str(),
                                   bench_quantize, isa, t, 4096);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
