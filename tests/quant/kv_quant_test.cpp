// quantize_row_kv (the KV cache's quantizer) against quantize_row (llama.cpp's reference blocks, what
// llama.cpp's cache stores): the same format, read by the same dequantize_row, never a larger squared
// error in any block, and a clearly smaller one on rows shaped like rotated K/V rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "quant/quant.h"

namespace tandem::quant {
namespace {

constexpr int kBlock = 32;

// Squared error of each 32-element block of x after a round trip through type t's blocks.
std::vector<double> block_errors(WeightType t, const std::vector<float>& x, bool kv) {
  const int64_t n = int64_t(x.size());
  std::vector<uint8_t> q(row_bytes(t, n));
  std::vector<float> y(x.size());
  if (kv) quantize_row_kv(t, x.data(), q.data(), n);
  else quantize_row(t, x.data(), q.data(), n);
  dequantize_row(t, q.data(), y.data(), n);
  std::vector<double> err(x.size() / kBlock, 0.0);
  for (size_t i = 0; i < x.size(); ++i) err[i / kBlock] += std::pow(double(x[i]) - double(y[i]), 2);
  return err;
}

// Blocks of several shapes: Gaussian (what a Walsh-Hadamard rotation makes of K/V rows), heavy tails,
// one outlier, all of one sign (the affine formats' min), constant, zero, and scales near fp16's floor.
std::vector<float> test_rows(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> gauss(0.f, 1.f);
  std::exponential_distribution<float> expo(1.f);
  std::vector<float> x;
  for (int b = 0; b < 4096; ++b) {
    const int kind = b % 8;
    const float scale = std::pow(10.f, float(b % 7) - 3);
    for (int j = 0; j < kBlock; ++j) {
      float v = 0;
      switch (kind) {
        case 0: case 1: v = gauss(rng); break;
        case 2: v = (rng() & 1 ? 1 : -1) * expo(rng); break;  // Laplace
        case 3: v = j == int(b % kBlock) ? 12 * gauss(rng) : gauss(rng); break;
        case 4: v = 3 + gauss(rng); break;
        case 5: v = 0.75f; break;
        case 6: v = 0; break;
        case 7: v = gauss(rng) * 1e-6f; break;  // the fp16 scale of this block is subnormal
      }
      x.push_back(v * (kind == 7 ? 1 : scale));
    }
  }
  return x;
}

const WeightType kSearched[] = {WeightType::Q4_0, WeightType::Q4_1, WeightType::Q5_0, WeightType::Q5_1,
                                WeightType::IQ4_NL};

TEST(KvQuant, NoBlockWorseThanTheReference) {
  const std::vector<float> x = test_rows(1);
  for (WeightType t : kSearched) {
    const std::vector<double> ref = block_errors(t, x, false), ours = block_errors(t, x, true);
    int n_worse = 0;
    for (size_t b = 0; b < ref.size(); ++b) {
      // The search compares float sums; the double recount may differ by a rounding of the sum.
      if (ours[b] > ref[b] * (1 + 1e-5) + 1e-30) {
        if (++n_worse <= 3)
          ADD_FAILURE() << type_name(t) << " block " << b << ": error " << ours[b] << ", reference " << ref[b];
      }
    }
    EXPECT_EQ(n_worse, 0) << type_name(t);
  }
}

// Gaussian rows: the whole-row squared error against the reference's. Measured ratios: Q4_0 0.885,
// Q5_0 0.878, Q4_1 0.789, Q5_1 0.794, IQ4_NL 0.931 (its reference already searches 15 scales, by
// x^2-weighted error, but only with the block's extreme on the grid's lower end: 0.96 without the upper).
TEST(KvQuant, LowerErrorThanTheReferenceOnGaussianRows) {
  std::mt19937 rng(7);
  std::normal_distribution<float> gauss(0.f, 1.f);
  std::vector<float> x(256 * 512);
  for (float& v : x) v = gauss(rng);
  const struct { WeightType t; double max_ratio; } cases[] = {
      {WeightType::Q4_0, 0.90}, {WeightType::Q5_0, 0.90}, {WeightType::Q4_1, 0.83},
      {WeightType::Q5_1, 0.83}, {WeightType::IQ4_NL, 0.95}};
  for (const auto& c : cases) {
    double ref = 0, ours = 0;
    for (double e : block_errors(c.t, x, false)) ref += e;
    for (double e : block_errors(c.t, x, true)) ours += e;
    std::printf("[  error   ] %-6s squared error %.4g vs the reference's %.4g (ratio %.3f)\n",
                std::string(type_name(c.t)).c_str(), ours, ref, ours / ref);
    EXPECT_LE(ours / ref, c.max_ratio) << type_name(c.t);
  }
}

TEST(KvQuant, ZeroAndConstantBlocks) {
  for (WeightType t : kSearched) {
    std::vector<float> x(64, 0.f);
    std::fill(x.begin() + 32, x.end(), 0.75f);  // exact in fp16: a constant block comes back exactly
    std::vector<uint8_t> q(row_bytes(t, 64));
    std::vector<float> y(64);
    quantize_row_kv(t, x.data(), q.data(), 64);
    dequantize_row(t, q.data(), y.data(), 64);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(y[size_t(j)], 0.f) << type_name(t);
    for (int j = 32; j < 64; ++j) EXPECT_NEAR(y[size_t(j)], 0.75f, 1e-3) << type_name(t);
  }
}

// 8 bits: the reference's error is already below what f16-level rounding differences do to a model,
// and a search measured no gain there, so Q8_0 (and the float types) keep the reference's blocks.
TEST(KvQuant, Q8_0AndFloatTypesKeepTheReferenceBlocks) {
  const std::vector<float> x = test_rows(3);
  for (WeightType t : {WeightType::Q8_0, WeightType::F16, WeightType::BF16, WeightType::F32}) {
    const int64_t n = int64_t(x.size());
    std::vector<uint8_t> a(row_bytes(t, n)), b(row_bytes(t, n));
    quantize_row(t, x.data(), a.data(), n);
    quantize_row_kv(t, x.data(), b.data(), n);
    EXPECT_EQ(a, b) << type_name(t);
  }
}

}  // namespace
}  // namespace tandem::quant
