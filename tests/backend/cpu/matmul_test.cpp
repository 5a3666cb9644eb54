// CPU matmul kernels at every ISA level this host has, against a double-precision reference built from
// src/quant's dequantizers, and against the generic level.
//
// Tolerance: |y - ref| <= 1e-5 * sum_i |w_i * a_i| + 1e-30, where a are the dequantized quantized
// activations. Kernels sum exact integer dot products per block and then scale them in float, so the
// error is float rounding of ~n/32 block terms (a few 1e-7 relative to sum|w*a|); 1e-5 leaves room
// for summation order while a wrong code, scale or offset in any block (>= 1/n_blocks of the sum)
// fails it by orders of magnitude.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/kernel_table.h"
#include "backend/cpu/kernels.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

using WT = WeightType;

const WT kTypes[] = {WT::F32,  WT::F16,  WT::BF16, WT::Q4_0, WT::Q4_1, WT::Q5_0, WT::Q5_1,  WT::Q8_0,
                     WT::Q2_K, WT::Q3_K, WT::Q4_K, WT::Q5_K, WT::Q6_K, WT::IQ4_NL, WT::IQ4_XS,
                     WT::IQ2_XXS, WT::IQ2_XS, WT::IQ2_S, WT::IQ3_XXS, WT::IQ3_S, WT::IQ1_S, WT::IQ1_M};
const Isa kIsas[] = {Isa::Generic, Isa::Avx2, Isa::Avx512};

// Byte offsets of the IEEE-half scale fields in each block (to make random-byte blocks finite).
std::vector<int> half_fields(WT t) {
  switch (t) {
    case WT::Q4_1: case WT::Q5_1: case WT::Q4_K: case WT::Q5_K: return {0, 2};
    case WT::Q4_0: case WT::Q5_0: case WT::Q8_0: case WT::IQ4_NL: case WT::IQ4_XS: return {0};
    case WT::IQ2_XXS: case WT::IQ2_XS: case WT::IQ2_S: case WT::IQ3_XXS: case WT::IQ3_S: case WT::IQ1_S: return {0};
    case WT::Q2_K: return {80, 82};
    case WT::Q3_K: return {108};
    case WT::Q6_K: return {208};
    default: return {};
  }
}

bool is_float(WT t) { return t == WT::F32 || t == WT::F16 || t == WT::BF16; }

// Sets the half scale of one block: IQ1_M keeps its nibbles in the top of four 16-bit scale fields.
void set_half_scale(WT t, uint8_t* block, uint16_t h) {
  if (t != WT::IQ1_M) {
    for (int f : half_fields(t)) std::memcpy(block + f, &h, 2);
    return;
  }
  for (int k = 0; k < 4; ++k) {
    uint16_t sc;
    std::memcpy(&sc, block + 48 + 2 * k, 2);
    sc = uint16_t((sc & 0x0fff) | (h >> (4 * k) & 15) << 12);
    std::memcpy(block + 48 + 2 * k, &sc, 2);
  }
}

struct Problem {
  WT type;
  int64_t n_in, n_rows, n_tokens;
  std::vector<uint8_t> w;    // [n_rows, row_bytes]
  std::vector<float> x;      // [n_tokens, n_in]
  std::vector<double> ref;   // [n_tokens, n_rows]
  std::vector<double> scale;  // sum |w * a| per output
};

enum class Weights { Quantized, RandomBytes, MaxScale, Zero };

Problem make_problem(WT type, int64_t n_in, int64_t n_rows, int64_t n_tokens, Weights kind, uint32_t seed,
                     bool zero_x = false) {
  Problem p{type, n_in, n_rows, n_tokens, {}, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const size_t rb = row_bytes(type, n_in);
  p.w.resize(rb * n_rows);
  std::vector<float> row(n_in);
  // The lattice i-quants have no quantizer (llama.cpp's needs an importance matrix): random grid codes and signs
  // under ordinary scales stand in for quantized rows.
  if (kind == Weights::Quantized && !quant::can_quantize(type)) kind = Weights::RandomBytes;
  if (kind == Weights::Zero && !quant::can_quantize(type)) {
    std::fill(p.w.begin(), p.w.end(), uint8_t(0));
  } else if (kind == Weights::Quantized || is_float(type) || kind == Weights::Zero) {
    for (int64_t r = 0; r < n_rows; ++r) {
      for (auto& v : row) v = kind == Weights::Zero ? 0.f : normal(rng) * 0.05f;
      // A few outliers per row, as real weight matrices have.
      if (kind != Weights::Zero) row[rng() % n_in] = 1.5f;
      quant::quantize_row(type, row.data(), p.w.data() + r * rb, n_in);
    }
  } else {
    for (auto& b : p.w) b = uint8_t(rng());
    const uint32_t bb = block_bytes(type);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (size_t off = 0; off < p.w.size(); off += bb)
      set_half_scale(type, &p.w[off], kind == Weights::MaxScale ? uint16_t(rng() % 2 ? 0x7bff : 0xfbff)  // +-65504
                                                                : quant::f32_to_fp16(u(rng)));
  }
  p.x.resize(n_in * n_tokens);
  for (auto& v : p.x) v = zero_x ? 0.f : normal(rng);

  // Reference from the dequantized weights and the dequantized activation rows.
  const CpuKernels& gen = kernels_for(Isa::Generic);
  const size_t ab = activation_row_bytes(type, n_in);
  const WT act = activation_type(type);
  std::vector<uint8_t> qa(ab);
  std::vector<float> a(n_in), wf(n_in * n_rows);
  for (int64_t r = 0; r < n_rows; ++r) quant::dequantize_row(type, p.w.data() + r * rb, wf.data() + r * n_in, n_in);
  p.ref.assign(n_rows * n_tokens, 0);
  p.scale.assign(n_rows * n_tokens, 0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    gen.quantize_act[uint32_t(type)](p.x.data() + t * n_in, qa.data(), n_in);
    std::vector<float> s_blocks;  // Q8_1: the stored s of each block
    if (act == WT::Q8_1) {
      const auto* b = reinterpret_cast<const BlockQ8_1*>(qa.data());
      for (int64_t i = 0; i < n_in / 32; ++i) {
        for (int j = 0; j < 32; ++j) a[32 * i + j] = quant::fp16_to_f32(b[i].d) * float(b[i].qs[j]);
        s_blocks.push_back(quant::fp16_to_f32(b[i].s));
      }
    } else {
      quant::dequantize_row(act, qa.data(), a.data(), n_in);
    }
    for (int64_t r = 0; r < n_rows; ++r) {
      double sum = 0, mag = 0;
      const float* w = wf.data() + r * n_in;
      for (int64_t i = 0; i < n_in; ++i) {
        sum += double(w[i]) * double(a[i]);
        mag += std::fabs(double(w[i]) * double(a[i]));
      }
      if (act == WT::Q8_1) {
        // llama.cpp's Q4_1/Q5_1 dots take sum(a) of a block from its stored half s = d * sum(q):
        // the min term is m * s, not m * sum(a). The reference does the same.
        for (int64_t i = 0; i < n_in / 32; ++i) {
          uint16_t mh;
          std::memcpy(&mh, p.w.data() + r * rb + i * block_bytes(type) + 2, 2);
          double sa = 0;
          for (int j = 0; j < 32; ++j) sa += a[32 * i + j];
          const double m = quant::fp16_to_f32(mh);
          sum += m * (double(s_blocks[i]) - sa);
          mag += std::fabs(m * double(s_blocks[i]));
        }
      }
      p.ref[t * n_rows + r] = sum;
      p.scale[t * n_rows + r] = mag;
    }
  }
  return p;
}

std::vector<float> run(Isa isa, const Problem& p, Uarch uarch = host_uarch()) {
  std::vector<float> y(p.n_rows * p.n_tokens, NAN);
  matmul_f32(isa, uarch, p.type, p.n_in, p.w.data(), row_bytes(p.type, p.n_in), p.n_rows, p.x.data(), p.n_tokens,
             y.data(), p.n_rows);
  return y;
}

constexpr double kRelTol = 1e-5;

void expect_close(const Problem& p, const std::vector<float>& y, const std::vector<double>& ref,
                  const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < y.size() && bad < 5; ++i) {
    const double tol = kRelTol * p.scale[i] + 1e-30;
    if (!(std::fabs(double(y[i]) - ref[i]) <= tol)) {
      ++bad;
      ADD_FAILURE() << what << " " << type_name(p.type) << " n_in=" << p.n_in << " n_tokens=" << p.n_tokens
                    << " token " << i / p.n_rows << " row " << i % p.n_rows << ": got " << y[i] << ", want "
                    << ref[i] << " (tol " << tol << ", sum|w*a| " << p.scale[i] << ")";
    }
  }
}

// Every level with both micro-architectures' kernel choices: each must be right on any CPU that has the level.
class Matmul : public ::testing::TestWithParam<std::tuple<Isa, Uarch, WT>> {
 protected:
  void SetUp() override {
    isa_ = std::get<0>(GetParam());
    uarch_ = std::get<1>(GetParam());
    type_ = std::get<2>(GetParam());
    if (!isa_supported(isa_)) GTEST_SKIP() << isa_name(isa_) << " not supported by this CPU/OS";
  }
  std::string level() const { return std::string(isa_name(isa_)) + "/" + uarch_name(uarch_); }
  void check(int64_t n_in, int64_t n_rows, int64_t n_tokens, Weights kind, uint32_t seed) {
    const Problem p = make_problem(type_, n_in, n_rows, n_tokens, kind, seed);
    const std::vector<float> y = run(isa_, p, uarch_);
    expect_close(p, y, p.ref, level() + " vs reference");
    if (isa_ != Isa::Generic) {
      const std::vector<float> yg = run(Isa::Generic, p);
      expect_close(p, y, std::vector<double>(yg.begin(), yg.end()), level() + " vs generic");
    }
  }
  Isa isa_;
  Uarch uarch_;
  WT type_;
};

TEST_P(Matmul, MatchesReferenceAtRealShapes) {
  const bool blocks32 = block_size(type_) <= 32;
  std::vector<int64_t> sizes = {256, 2048};
  if (blocks32) sizes.insert(sizes.end(), {640, 896, 800});  // 800: an odd block count (the pair kernels' tail)
  if (is_float(type_)) sizes.push_back(1001);  // not a multiple of any vector width
  uint32_t seed = 1;
  for (int64_t n_in : sizes)
    for (int64_t n_tokens : {1, 3, 8, 33}) check(n_in, 19, n_tokens, Weights::Quantized, seed++);
  // the panel kernels' token tiles (8 at avx512, 4 at avx2), row panels (16) and avx2's 8-row halves with
  // remainders, above their 16-token cut
  check(block_size(type_) == 256 ? 512 : 256, 35, 21, Weights::Quantized, seed++);
}

TEST_P(Matmul, MatchesReferenceOnWideRows) { check(4096, 5, 9, Weights::Quantized, 77); }

TEST_P(Matmul, MatchesReferenceOnRandomBlockBytes) {
  if (is_float(type_)) GTEST_SKIP() << "random bits of a float format include NaN";
  // 20 tokens: the panel kernels see every code, e.g. Q8_0's -128 (avx2 multiplies |q| by sign(q) * a)
  for (int64_t n_tokens : {1, 5, 12, 20})
    check(block_size(type_) == 256 ? 1024 : 512, 17, n_tokens, Weights::RandomBytes, 5);
}

TEST_P(Matmul, MatchesReferenceAtLargestScales) {
  if (is_float(type_)) GTEST_SKIP() << "no scale fields";
  for (int64_t n_tokens : {4, 20}) check(512, 9, n_tokens, Weights::MaxScale, 6);  // row kernels, panels
}

TEST_P(Matmul, ZeroInputsGiveExactZeros) {
  for (int64_t n_tokens : {5, 17})  // row kernels, panels
    for (bool zero_w : {true, false}) {
      const Problem p = make_problem(type_, 512, 9, n_tokens, zero_w ? Weights::Zero : Weights::Quantized, 8, !zero_w);
      for (float v : run(isa_, p, uarch_)) {
        EXPECT_EQ(v, 0.f) << (zero_w ? "zero weights" : "zero activations") << ", " << n_tokens << " tokens";
      }
    }
}

TEST_P(Matmul, RowSubRangesMatchTheWholeMatrix) {
  // The threading contract: a caller may pass w + r0 rows and y + r0 for any split (6 tokens: the row
  // kernels, 18: the panels).
  for (int64_t n_tokens : {6, 18}) {
    const Problem p = make_problem(type_, 512, 37, n_tokens, Weights::Quantized, 9);
    const std::vector<float> whole = run(isa_, p, uarch_);
    const CpuKernels& k = kernels_for(isa_, uarch_);
    const uint32_t id = uint32_t(type_);
    const size_t rb = row_bytes(type_, p.n_in), ab = activation_row_bytes(type_, p.n_in);
    std::vector<uint8_t> act(ab * p.n_tokens);
    for (int64_t t = 0; t < p.n_tokens; ++t) k.quantize_act[id](p.x.data() + t * p.n_in, act.data() + t * ab, p.n_in);
    std::vector<float> y(whole.size(), NAN);
    for (int64_t r0 : {0, 5, 6, 23}) {
      const int64_t r1 = r0 == 0 ? 5 : r0 == 5 ? 6 : r0 == 6 ? 23 : 37;
      k.gemm[id](p.n_in, p.w.data() + r0 * rb, rb, r1 - r0, act.data(), ab, p.n_tokens, y.data() + r0, p.n_rows);
    }
    for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(y[i], whole[i]) << "output " << i << ", " << n_tokens << " tokens";
  }
}

std::string param_name(const ::testing::TestParamInfo<std::tuple<Isa, WT>>& info) {
  return std::string(isa_name(std::get<0>(info.param))) + "_" + std::string(type_name(std::get<1>(info.param)));
}

std::string matmul_name(const ::testing::TestParamInfo<std::tuple<Isa, Uarch, WT>>& info) {
  return std::string(isa_name(std::get<0>(info.param))) + "_" + uarch_name(std::get<1>(info.param)) + "_" +
         std::string(type_name(std::get<2>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, Matmul,
                         ::testing::Combine(::testing::ValuesIn(kIsas), ::testing::Values(Uarch::Intel, Uarch::Zen),
                                            ::testing::ValuesIn(kTypes)),
                         matmul_name);

// ---- activation quantizers ------------------------------------------------------------------------

class QuantizeAct : public ::testing::TestWithParam<std::tuple<Isa, WT>> {};

TEST_P(QuantizeAct, IsBitExactWithTheReference) {
  const Isa isa = std::get<0>(GetParam());
  const WT type = std::get<1>(GetParam());
  if (!isa_supported(isa)) GTEST_SKIP() << isa_name(isa) << " not supported by this CPU/OS";
  const WT act = activation_type(type);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int kind = 0; kind < 5; ++kind) {
    const int64_t n = 1024;
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; ++i) {
      switch (kind) {
        case 0: x[i] = normal(rng); break;
        case 1: x[i] = 0; break;
        case 2: x[i] = normal(rng) * 1e4f; break;
        // amax 127 in every block makes d = 1 (Q8_K: -1), so x + 0.5 lands on rounding ties
        case 3: x[i] = i % 32 == 0 ? 127.f : float(int(rng() % 252) - 126) + 0.5f; break;
        // the largest magnitude twice per 256, with either sign first (Q8_K's scale takes the first one's sign)
        case 4: x[i] = i % 256 == 37 ? (i / 256 % 2 ? -50.f : 50.f) : i % 256 == 100 ? (i / 256 % 2 ? 50.f : -50.f)
                                                                                   : normal(rng); break;
      }
    }
    const size_t ab = activation_row_bytes(type, n);
    std::vector<uint8_t> got(ab, 0xcd), want(ab, 0xab);
    kernels_for(isa).quantize_act[uint32_t(type)](x.data(), got.data(), n);
    if (act == WT::Q8_1)
      kernels_for(Isa::Generic).quantize_act[uint32_t(type)](x.data(), want.data(), n);
    else
      quant::quantize_row(act, x.data(), want.data(), n);
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), ab)) << isa_name(isa) << " " << type_name(act) << " kind " << kind;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantizeAct,
                         ::testing::Combine(::testing::ValuesIn(kIsas),
                                            ::testing::Values(WT::F32, WT::F16, WT::BF16, WT::Q8_0, WT::Q4_1,
                                                              WT::Q4_K, WT::Q6_K, WT::IQ4_XS)),
                         param_name);

TEST(Q8_1, MatchesGgmlReferenceOnAKnownBlock) {
  // x = j - 15.5 for j in 0..31: amax 15.5, d = 15.5/127; no rounding ties.
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = float(j) - 15.5f;
  BlockQ8_1 b;
  kernels_for(Isa::Generic).quantize_act[uint32_t(WT::Q4_1)](x, &b, 32);
  const float d = 15.5f / 127;
  EXPECT_EQ(b.d, quant::f32_to_fp16(d));
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(b.qs[j], int8_t(std::round(x[j] * (1.f / d)))) << j;
    sum += b.qs[j];
  }
  EXPECT_EQ(b.s, quant::f32_to_fp16(float(sum) * d));
  EXPECT_EQ(b.qs[0], -127);
}

TEST(CpuFeatures, BestIsaIsSupportedAndNamed) {
  EXPECT_TRUE(isa_supported(best_isa()));
  EXPECT_EQ(kernels().isa, best_isa());
  EXPECT_STRNE(isa_name(best_isa()), "?");
  const CpuFeatures& f = cpu_features();
  if (f.avx512f) {
    EXPECT_TRUE(f.avx2);
  }
}

}  // namespace
}  // namespace tandem::cpu
