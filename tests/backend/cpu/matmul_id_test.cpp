// CpuBackend::matmul_id (the experts' matmul) against a double-precision reference built from src/quant's
// dequantizers: every (token, slot) row is W[ids[t, j]] times that row's input, whatever the routing, from
// the file's layout and from the experts' repacked panels (CpuBackend::repack, where the host's kernels pack
// the type).
//
// Tolerance, as matmul_test.cpp's: |y - ref| <= 1e-5 * sum_i |w_i * a_i|, where a are the dequantized
// quantized activations the kernels see (float rounding of the per-block sums; a wrong expert, row or
// input is off by the whole sum).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

using WT = WeightType;

struct Routing {
  std::string name;
  int64_t n_tokens;
  int n_used;
  bool all_one_expert;  // every slot of every token routed to expert 2 (else distinct random experts)
};

struct Case {
  WT type;
  Routing routing;
  bool x_per_slot;
  bool repacked;
};

constexpr int64_t kExperts = 6, kRows = 80, kIn = 256;  // 80 rows: the last 16-row panel is partial

void check(const Case& c, int n_threads) {
  const Routing& rt = c.routing;
  std::mt19937 rng(uint32_t(int(c.type) * 131 + rt.n_tokens * 7 + rt.n_used + (c.x_per_slot ? 1000 : 0)));
  std::normal_distribution<float> normal(0.f, 1.f);
  const size_t rb = row_bytes(c.type, kIn);
  std::vector<uint8_t> wbytes(rb * kExperts * kRows);
  std::vector<float> row(kIn), wf(size_t(kExperts * kRows * kIn));
  for (int64_t r = 0; r < kExperts * kRows; ++r) {
    for (auto& v : row) v = normal(rng) * 0.05f;
    row[rng() % kIn] = 1.5f;  // an outlier, as real weights have
    quant::quantize_row(c.type, row.data(), wbytes.data() + r * rb, kIn);
    quant::dequantize_row(c.type, wbytes.data() + r * rb, wf.data() + r * kIn, kIn);
  }
  Weight w;
  w.name = "blk.0.ffn_up_exps.weight";
  w.type = c.type;
  w.shape = {kExperts, kRows, kIn};
  w.data = wbytes.data();
  w.row_stride = rb;
  w.size_bytes = wbytes.size();

  const int64_t n_slots = rt.n_tokens * rt.n_used;
  std::vector<int32_t> ids(static_cast<size_t>(n_slots));
  for (int64_t t = 0; t < rt.n_tokens; ++t) {
    std::vector<int32_t> experts(kExperts);
    for (int32_t e = 0; e < kExperts; ++e) experts[size_t(e)] = e;
    std::shuffle(experts.begin(), experts.end(), rng);
    for (int j = 0; j < rt.n_used; ++j) ids[size_t(t * rt.n_used + j)] = rt.all_one_expert ? 2 : experts[size_t(j)];
  }
  const int64_t n_x = c.x_per_slot ? n_slots : rt.n_tokens;
  std::vector<float> x(size_t(n_x * kIn));
  for (auto& v : x) v = normal(rng);

  CpuBackend backend(n_threads);
  if (c.repacked) {
    auto bytes = backend.repack(w);
    ASSERT_TRUE(bytes.has_value()) << bytes.status().message();
    ASSERT_EQ(*bytes > 0, bool(kernels().pack[uint32_t(c.type)])) << type_name(c.type);
  }
  std::vector<float> y(size_t(n_slots * kRows), NAN);
  backend.matmul_id(w, x.data(), c.x_per_slot, ids.data(), rt.n_tokens, rt.n_used, y.data());

  const CpuKernels& gen = kernels_for(Isa::Generic);
  std::vector<uint8_t> qa(activation_row_bytes(c.type, kIn));
  std::vector<float> a(kIn);
  int bad = 0;
  for (int64_t i = 0; i < n_slots && bad < 5; ++i) {
    const float* xi = x.data() + (c.x_per_slot ? i : i / rt.n_used) * kIn;
    gen.quantize_act[uint32_t(c.type)](xi, qa.data(), kIn);
    quant::dequantize_row(activation_type(c.type), qa.data(), a.data(), kIn);
    for (int64_t r = 0; r < kRows; ++r) {
      const float* wr = wf.data() + (ids[size_t(i)] * kRows + r) * kIn;
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < kIn; ++k) {
        ref += double(wr[k]) * a[size_t(k)];
        mag += std::fabs(double(wr[k]) * a[size_t(k)]);
      }
      const double got = y[size_t(i * kRows + r)];
      if (!(std::fabs(got - ref) <= 1e-5 * mag + 1e-30) && bad++ < 5)
        ADD_FAILURE() << type_name(c.type) << (c.repacked ? " repacked " : " ") << rt.name
                      << (c.x_per_slot ? " x per slot" : " x per token")
                      << " threads " << n_threads << ": token " << i / rt.n_used << " slot " << i % rt.n_used
                      << " (expert " << ids[size_t(i)] << ") row " << r << ": got " << got << ", want " << ref;
    }
  }
}

// Q4_1/Q5_1 take Q8_1 activations, whose dot uses a stored block sum (see matmul_test.cpp); these types
// use activations the reference can dequantize directly.
const WT kTypes[] = {WT::F32, WT::F16, WT::Q8_0, WT::Q4_0, WT::Q4_K, WT::Q6_K, WT::IQ4_XS};
const Routing kRoutings[] = {
    {"one token", 1, 2, false},
    {"one token one expert", 1, 1, false},
    {"all tokens to one expert", 40, 1, true},
    {"spread, decode-sized", 3, 4, false},
    {"spread, prefill-sized", 300, 3, false},  // past the 64-token gemm blocks; panels where the CPU has them
};

class MatmulId : public ::testing::TestWithParam<WT> {};

TEST_P(MatmulId, MatchesDequantizedReferenceForEveryRouting) {
  for (const Routing& rt : kRoutings)
    for (bool per_slot : {false, true})
      for (bool repacked : {false, true})
        for (int threads : {1, 3}) check({GetParam(), rt, per_slot, repacked}, threads);
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulId, ::testing::ValuesIn(kTypes),
                         [](const auto& info) { return std::string(type_name(info.param)); });

}  // namespace
}  // namespace tandem::cpu
