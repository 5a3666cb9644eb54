// AMX kernels (backend/cpu/amx/) against a double-precision reference from src/quant's dequantizers and
// against the generic level, at prefill shapes: token counts around the 16-token tile, row counts that
// leave partial 16-row panels, several threads (each loads its own tile configuration). Skipped with a
// reason where the CPU lacks AMX or Linux refuses XTILEDATA; the fallback tests run everywhere.
//
// Tolerance as matmul_test.cpp: |y - ref| <= 1e-5 * sum_i |w_i * a_i|. Tile products are exact int32
// sums per block; only the float accumulation of block terms differs from the other levels.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/kernels.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

using WT = WeightType;

const WT kAmxTypes[] = {WT::Q4_0, WT::Q5_0, WT::Q8_0, WT::IQ4_NL, WT::Q4_K, WT::Q5_K, WT::Q6_K, WT::IQ4_XS};

std::vector<int> half_fields(WT t) {
  switch (t) {
    case WT::Q4_K: case WT::Q5_K: return {0, 2};
    case WT::Q6_K: return {208};
    default: return {0};
  }
}

struct Problem {
  WT type;
  int64_t n_in, n_rows, n_tokens;
  std::vector<uint8_t> w;    // [n_rows, row_bytes]
  std::vector<uint8_t> act;  // [n_tokens, activation_row_bytes], quantized by the generic level
  std::vector<double> ref;   // [n_tokens, n_rows]
  std::vector<double> mag;   // sum |w * a| per output
};

enum class Weights { Quantized, RandomBytes, MaxScale };

Problem make_problem(WT type, int64_t n_in, int64_t n_rows, int64_t n_tokens, Weights kind, uint32_t seed) {
  Problem p{type, n_in, n_rows, n_tokens, {}, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const size_t rb = row_bytes(type, n_in), ab = activation_row_bytes(type, n_in);
  p.w.resize(rb * n_rows);
  if (kind == Weights::Quantized) {
    std::vector<float> row(n_in);
    for (int64_t r = 0; r < n_rows; ++r) {
      for (auto& v : row) v = normal(rng) * 0.05f;
      row[rng() % n_in] = 1.5f;
      quant::quantize_row(type, row.data(), p.w.data() + r * rb, n_in);
    }
  } else {
    for (auto& b : p.w) b = uint8_t(rng());
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (size_t off = 0; off < p.w.size(); off += block_bytes(type))
      for (int f : half_fields(type)) {
        const uint16_t h = kind == Weights::MaxScale ? uint16_t(rng() % 2 ? 0x7bff : 0xfbff) : quant::f32_to_fp16(u(rng));
        std::memcpy(&p.w[off + f], &h, 2);
      }
  }
  std::vector<float> x(n_in);
  std::vector<float> a(n_in), wf(n_in * n_rows);
  p.act.resize(ab * n_tokens);
  for (int64_t r = 0; r < n_rows; ++r) quant::dequantize_row(type, p.w.data() + r * rb, wf.data() + r * n_in, n_in);
  p.ref.assign(n_rows * n_tokens, 0);
  p.mag.assign(n_rows * n_tokens, 0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (auto& v : x) v = normal(rng);
    if (t % 7 == 3) std::fill(x.begin(), x.end(), 0.f);  // an all-zero token: d = 0 in every block
    kernels_for(Isa::Generic).quantize_act[uint32_t(type)](x.data(), p.act.data() + t * ab, n_in);
    quant::dequantize_row(activation_type(type), p.act.data() + t * ab, a.data(), n_in);
    for (int64_t r = 0; r < n_rows; ++r) {
      double sum = 0, mag = 0;
      for (int64_t i = 0; i < n_in; ++i) {
        sum += double(wf[r * n_in + i]) * double(a[i]);
        mag += std::fabs(double(wf[r * n_in + i]) * double(a[i]));
      }
      p.ref[t * n_rows + r] = sum;
      p.mag[t * n_rows + r] = mag;
    }
  }
  return p;
}

std::vector<float> run(Isa isa, const Problem& p) {
  std::vector<float> y(p.n_rows * p.n_tokens, NAN);
  const size_t rb = row_bytes(p.type, p.n_in), ab = activation_row_bytes(p.type, p.n_in);
  kernels_for(isa).gemm[uint32_t(p.type)](p.n_in, p.w.data(), rb, p.n_rows, p.act.data(), ab, p.n_tokens, y.data(),
                                           p.n_rows);
  return y;
}

void expect_close(const Problem& p, const std::vector<float>& y, const std::vector<double>& ref, const char* what) {
  int bad = 0;
  for (size_t i = 0; i < y.size() && bad < 5; ++i) {
    const double tol = 1e-5 * p.mag[i] + 1e-30;
    if (!(std::fabs(double(y[i]) - ref[i]) <= tol)) {
      ++bad;
      ADD_FAILURE() << what << " " << type_name(p.type) << " n_in=" << p.n_in << " n_rows=" << p.n_rows
                    << " n_tokens=" << p.n_tokens << " token " << i / p.n_rows << " row " << i % p.n_rows << ": got "
                    << y[i] << ", want " << ref[i] << " (tol " << tol << ")";
    }
  }
}

class Amx : public ::testing::TestWithParam<WT> {
 protected:
  void SetUp() override {
    type_ = GetParam();
    if (!isa_supported(Isa::Amx)) {
      const CpuFeatures& f = cpu_features();
      GTEST_SKIP() << "AMX not usable here (amx_int8 " << f.amx_int8 << ", granted by the OS " << f.amx_granted
                   << ", TANDEM_NO_AMX " << (std::getenv("TANDEM_NO_AMX") ? "set" : "unset") << ")";
    }
  }
  void check(int64_t n_in, int64_t n_rows, int64_t n_tokens, Weights kind, uint32_t seed) {
    const Problem p = make_problem(type_, n_in, n_rows, n_tokens, kind, seed);
    const std::vector<float> y = run(Isa::Amx, p);
    expect_close(p, y, p.ref, "amx vs reference");
    const std::vector<float> yg = run(Isa::Generic, p);
    expect_close(p, y, std::vector<double>(yg.begin(), yg.end()), "amx vs generic");
  }
  WT type_;
};

TEST_P(Amx, IsTheSelectedKernel) { EXPECT_EQ(kernels_for(Isa::Amx).gemm_isa[uint32_t(type_)], Isa::Amx); }

TEST_P(Amx, MatchesReferenceAroundTileSizes) {
  const bool blocks32 = block_size(type_) == 32;
  uint32_t seed = 1;
  for (int64_t n_in : {int64_t(256), int64_t(2048), blocks32 ? int64_t(96) : int64_t(768)})
    for (int64_t n_tokens : {15, 16, 17, 33, 64})  // 15: below the tile, the AVX-512 kernel answers
      check(n_in, 19, n_tokens, Weights::Quantized, seed++);
}

TEST_P(Amx, MatchesReferenceWithFullAndPartialPanels) {
  for (int64_t n_rows : {1, 16, 32, 45}) check(512, n_rows, 40, Weights::Quantized, 20 + uint32_t(n_rows));
}

TEST_P(Amx, MatchesReferenceOnRandomBlockBytes) { check(1024, 17, 48, Weights::RandomBytes, 5); }

TEST_P(Amx, MatchesReferenceAtLargestScales) { check(512, 9, 20, Weights::MaxScale, 6); }

TEST_P(Amx, MatchesReferenceOnAWideRowAndManyTokens) { check(4096, 20, 130, Weights::Quantized, 77); }

TEST_P(Amx, RowSubRangesMatchTheWholeMatrix) {
  const Problem p = make_problem(type_, 512, 37, 20, Weights::Quantized, 9);
  const std::vector<float> whole = run(Isa::Amx, p);
  const size_t rb = row_bytes(type_, p.n_in), ab = activation_row_bytes(type_, p.n_in);
  std::vector<float> y(whole.size(), NAN);
  const int64_t cuts[] = {0, 5, 6, 23, 37};
  for (int i = 0; i < 4; ++i)
    kernels_for(Isa::Amx).gemm[uint32_t(type_)](p.n_in, p.w.data() + cuts[i] * rb, rb, cuts[i + 1] - cuts[i],
                                                 p.act.data(), ab, p.n_tokens, y.data() + cuts[i], p.n_rows);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(y[i], whole[i]) << "output " << i;
}

TEST_P(Amx, GivesTheSameResultsOnEveryThread) {
  // Pool threads are not ours: each must load its own tile configuration on first use.
  const Problem p = make_problem(type_, 1024, 40, 48, Weights::Quantized, 13);
  const std::vector<float> want = run(Isa::Amx, p);
  std::vector<std::vector<float>> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { got[i] = run(Isa::Amx, p); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got[i], want) << "thread " << i;
}

INSTANTIATE_TEST_SUITE_P(PrefillTypes, Amx, ::testing::ValuesIn(kAmxTypes),
                         [](const ::testing::TestParamInfo<WT>& info) { return std::string(type_name(info.param)); });

// ---- fallback ------------------------------------------------------------------------------------------

TEST(AmxFallback, IsSelectedOnlyWhenTheOsGrantsTiles) {
  const CpuFeatures& f = cpu_features();
  if (!f.amx_granted || !f.amx_int8) {
    EXPECT_FALSE(isa_supported(Isa::Amx));
    EXPECT_NE(best_isa(), Isa::Amx);
  }
  if (isa_supported(Isa::Amx)) {
    EXPECT_TRUE(isa_supported(Isa::Avx512));
  }
}

TEST(AmxFallback, EnvironmentVariableTurnsItOff) {
  const char* old = std::getenv("TANDEM_NO_AMX");
  const std::string saved = old ? old : "";
  setenv("TANDEM_NO_AMX", "1", 1);
  EXPECT_FALSE(isa_supported(Isa::Amx));
  setenv("TANDEM_NO_AMX", "0", 1);
  EXPECT_EQ(isa_supported(Isa::Amx), cpu_features().amx_granted && cpu_features().amx_int8 && isa_supported(Isa::Avx512));
  if (old) setenv("TANDEM_NO_AMX", saved.c_str(), 1);
  else unsetenv("TANDEM_NO_AMX");
}

TEST(AmxFallback, UnacceleratedTypesKeepTheLevelBelow) {
  if (!isa_supported(Isa::Amx)) GTEST_SKIP() << "AMX not usable here";
  for (WT t : {WT::Q4_1, WT::Q5_1, WT::Q2_K, WT::Q3_K, WT::F16, WT::BF16, WT::F32})
    EXPECT_EQ(kernels_for(Isa::Amx).gemm[uint32_t(t)], kernels_for(Isa::Avx512).gemm[uint32_t(t)]) << type_name(t);
}

}  // namespace
}  // namespace tandem::cpu
