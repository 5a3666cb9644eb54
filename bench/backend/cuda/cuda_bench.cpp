// The CUDA kernels whose choices are guesses until measured (docs/cuda.md), each against the path it
// replaces, through the Backend interface on CUDA0 (no CUDA headers). Every call is queued; an
// iteration runs kCalls = 10 of them and waits once, so the time column is ten calls'. Fixed iteration
// counts: each benchmark sets up once (V3's experts are 2.1 GB).
// - mla/...: absorbed MLA over a latent cache of F16 rows [rope 64, latent 512] (mla_attention.cu),
//   against the plain kernel on the same data (V given as a copy of the latent part, so the shape no
//   longer qualifies). GB/s: the cache bytes read once per call.
// - experts/...: matmul_id over a prefill batch, the grouped expert GEMM against the matrix-vector
//   kernels (batch-invariant mode selects them). GFLOP/s: 2 * n_in * n_rows per (token, slot).
// Skips without a device. Run by scripts/gpu-check.sh: tandem_cuda_bench
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "backend/buffer.h"
#include "backend/cuda/cuda_backend.h"
#include "quant/quant.h"

namespace tandem::cuda {
namespace {

using WT = WeightType;
constexpr int kCalls = 10;

Backend* gpu() {
  static std::unique_ptr<Backend> b = [] {
    if (probe().devices.empty()) return std::unique_ptr<Backend>();
    auto r = create_backend(probe().devices[0].index);
    return r ? std::move(*r) : std::unique_ptr<Backend>();
  }();
  return b.get();
}

template <typename T>
DeviceBuffer upload(Backend& b, const std::vector<T>& host) {
  auto buf = DeviceBuffer::create(b, std::max<size_t>(host.size() * sizeof(T), 1));
  if (!buf) std::abort();  // the bench's own sizes fit every GPU we target
  b.copy_from_host(buf->data(), host.data(), host.size() * sizeof(T));
  return std::move(*buf);
}

std::vector<float> gaussian(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

bool usable(benchmark::State& state) {
  if (gpu()) return true;
  state.SkipWithError(("no CUDA device: " + probe().reason).c_str());
  return false;
}

// Decode (or a prefill of n_tokens) over n_cells of one sequence, all visible.
void bench_mla(benchmark::State& state, int n_head, int64_t n_cells, int64_t n_tokens, bool mla) {
  if (!usable(state)) return;
  Backend& b = *gpu();
  constexpr int kRope = 64, kLat = 512, kDk = kRope + kLat;
  std::vector<uint16_t> cache(size_t(n_cells * kDk)), latent(size_t(n_cells * kLat));
  const auto kf = gaussian(cache.size(), 2);
  quant::quantize_row(WT::F16, kf.data(), cache.data(), int64_t(cache.size()));
  for (int64_t c = 0; c < n_cells; ++c)
    for (int i = 0; i < kLat; ++i) latent[size_t(c * kLat + i)] = cache[size_t(c * kDk + kRope + i)];
  std::vector<int32_t> cell_pos(static_cast<size_t>(n_cells)), cell_seq(static_cast<size_t>(n_cells), 0);
  std::vector<int32_t> token_pos(static_cast<size_t>(n_tokens)), token_seq(static_cast<size_t>(n_tokens), 0);
  for (int64_t c = 0; c < n_cells; ++c) cell_pos[size_t(c)] = int32_t(c);
  for (int64_t t = 0; t < n_tokens; ++t) token_pos[size_t(t)] = int32_t(n_cells - n_tokens + t);
  auto dk = upload(b, cache);
  auto dv = upload(b, latent);
  auto dq = upload(b, gaussian(size_t(n_tokens * n_head * kDk), 1));
  auto dout = upload(b, std::vector<float>(size_t(n_tokens * n_head * kLat)));
  auto dcp = upload(b, cell_pos);
  auto dcs = upload(b, cell_seq);
  auto dtp = upload(b, token_pos);
  auto dts = upload(b, token_seq);
  AttentionArgs a;
  a.q = dq.f32();
  a.out = dout.f32();
  a.n_tokens = n_tokens;
  a.n_head = n_head;
  a.n_head_kv = 1;
  a.head_dim_k = kDk;
  a.head_dim_v = kLat;
  a.scale = 1.0f / std::sqrt(192.0f);
  a.token_pos = static_cast<const int32_t*>(dtp.data());
  a.token_seq = static_cast<const int32_t*>(dts.data());
  a.k_type = a.v_type = WT::F16;
  a.k = dk.data();
  a.k_stride = kDk;
  if (mla) {
    a.v = static_cast<const uint8_t*>(dk.data()) + kRope * 2;
    a.v_stride = kDk;
  } else {
    a.v = dv.data();
    a.v_stride = kLat;
  }
  a.n_cells = n_cells;
  a.cell_pos = static_cast<const int32_t*>(dcp.data());
  a.cell_seq = static_cast<const int32_t*>(dcs.data());
  for (auto _ : state) {
    for (int i = 0; i < kCalls; ++i) b.attention(a);
    if (Status s = b.synchronize(); !s.is_ok()) return state.SkipWithError(s.message().c_str());
  }
  state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * kCalls * double(cache.size() * 2) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// n_tokens x n_used routed over n_expert experts of [n_rows, n_in], round-robin (every expert busy).
void bench_experts(benchmark::State& state, WT type, int64_t n_expert, int64_t n_rows, int64_t n_in, int64_t n_tokens,
                   int n_used, bool grouped) {
  if (!usable(state)) return;
  Backend& b = *gpu();
  const size_t rb = row_bytes(type, n_in);
  std::vector<uint8_t> w(rb * size_t(n_expert * n_rows));
  const auto row = gaussian(size_t(n_in), 3, 0.05f);
  std::vector<uint8_t> one(rb);
  quant::quantize_row(type, row.data(), one.data(), n_in);
  for (int64_t r = 0; r < n_expert * n_rows; ++r) std::copy(one.begin(), one.end(), w.begin() + r * int64_t(rb));
  std::vector<int32_t> ids(size_t(n_tokens * n_used));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7) % size_t(n_expert));
  auto dw = upload(b, w);
  auto dx = upload(b, gaussian(size_t(n_tokens * n_in), 4));
  auto dids = upload(b, ids);
  auto dy = upload(b, std::vector<float>(size_t(n_tokens * n_used * n_rows)));
  Weight wt;
  wt.name = "bench.ffn_up_exps.weight";
  wt.type = type;
  wt.shape = {n_expert, n_rows, n_in};
  wt.data = dw.data();
  wt.row_stride = rb;
  wt.backend = &b;
  b.set_batch_invariant(!grouped);
  for (auto _ : state) {
    for (int i = 0; i < kCalls; ++i)
      b.matmul_id(wt, dx.f32(), false, static_cast<const int32_t*>(dids.data()), n_tokens, n_used, dy.f32());
    if (Status s = b.synchronize(); !s.is_ok()) return state.SkipWithError(s.message().c_str());
  }
  b.set_batch_invariant(false);
  state.counters["GFLOP/s"] = benchmark::Counter(
      double(state.iterations()) * kCalls * 2.0 * double(n_in * n_rows * n_tokens * n_used) / 1e9,
      benchmark::Counter::kIsRate);
}

const bool registered = [] {
  for (bool mla : {true, false}) {
    const std::string kernel = mla ? "mla" : "plain";
    for (int n_head : {16, 128})  // V2-Lite, V3
      for (int64_t n_cells : {512, 4096, 32768})
        benchmark::RegisterBenchmark(("mla/decode/" + kernel + "/heads:" + std::to_string(n_head) + "/cells:" +
                                      std::to_string(n_cells)).c_str(),
                                     bench_mla, n_head, n_cells, int64_t(1), mla)
            ->Unit(benchmark::kMicrosecond)->UseRealTime()->Iterations(50);
    benchmark::RegisterBenchmark(("mla/prefill512/" + kernel + "/heads:128/cells:512").c_str(), bench_mla, 128,
                                 int64_t(512), int64_t(512), mla)
        ->Unit(benchmark::kMicrosecond)->UseRealTime()->Iterations(5);
  }
  // V2-Lite's up_exps (64 x 1408 x 2048, 6 used) and V3's (256 x 2048 x 7168, 8 used), Q4_K, at 16-512 tokens.
  for (bool grouped : {true, false})
    for (int64_t n_tokens : {16, 64, 512}) {
      const std::string path = grouped ? "grouped" : "matvec";
      benchmark::RegisterBenchmark(("experts/v2-lite/" + path + "/tokens:" + std::to_string(n_tokens)).c_str(),
                                   bench_experts, WT::Q4_K, int64_t(64), int64_t(1408), int64_t(2048), n_tokens, 6, grouped)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
      benchmark::RegisterBenchmark(("experts/v3/" + path + "/tokens:" + std::to_string(n_tokens)).c_str(),
                                   bench_experts, WT::Q4_K, int64_t(256), int64_t(2048), int64_t(7168), n_tokens, 8, grouped)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
    }
  return true;
}();

}  // namespace
}  // namespace tandem::cuda

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
#ifndef NDEBUG
  std::fprintf(stderr, "warning: assertions enabled; figures are not representative\n");
#endif
  std::fprintf(stderr, "%s", tandem::cuda::describe_devices().c_str());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
