// dequantize_row against gguf-py on random blocks with extreme half scales (tests/fixtures/quant).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/quant_fixture.h"

namespace tandem::quant {
namespace {

using testing::load_quant_fixture;
using testing::same_float;

void expect_bit_exact_dequantize(WeightType t) {
  const auto fx = load_quant_fixture(t);
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  const int64_t n = int64_t(fx.n_dblocks) * fx.block_size;
  std::vector<float> out(size_t(n), -12345.f);
  dequantize_row(t, fx.blocks.data(), out.data(), n);
  int64_t n_diff = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!same_float(out[i], fx.dequantized[i])) {
      if (n_diff < 5)
        ADD_FAILURE() << type_name(t) << " element " << i << " (block " << i / fx.block_size << "): got "
                      << out[i] << ", gguf-py " << fx.dequantized[i];
      ++n_diff;
    }
  }
  EXPECT_EQ(n_diff, 0) << "of " << n << " elements";
}

#define TANDEM_DEQUANT_TEST(T) \
  TEST(Dequantize, MatchesGgufBitExactFor##T) { expect_bit_exact_dequantize(WeightType::T); }
TANDEM_DEQUANT_TEST(F32)
TANDEM_DEQUANT_TEST(F16)
TANDEM_DEQUANT_TEST(BF16)
TANDEM_DEQUANT_TEST(Q4_0)
TANDEM_DEQUANT_TEST(Q4_1)
TANDEM_DEQUANT_TEST(Q5_0)
TANDEM_DEQUANT_TEST(Q5_1)
TANDEM_DEQUANT_TEST(Q8_0)
TANDEM_DEQUANT_TEST(Q2_K)
TANDEM_DEQUANT_TEST(Q3_K)
TANDEM_DEQUANT_TEST(Q4_K)
TANDEM_DEQUANT_TEST(Q5_K)
TANDEM_DEQUANT_TEST(Q6_K)
TANDEM_DEQUANT_TEST(Q8_K)
TANDEM_DEQUANT_TEST(IQ4_NL)
TANDEM_DEQUANT_TEST(IQ4_XS)
TANDEM_DEQUANT_TEST(IQ2_XXS)
TANDEM_DEQUANT_TEST(IQ2_XS)
TANDEM_DEQUANT_TEST(IQ2_S)
TANDEM_DEQUANT_TEST(IQ3_XXS)
TANDEM_DEQUANT_TEST(IQ3_S)
TANDEM_DEQUANT_TEST(IQ1_S)
TANDEM_DEQUANT_TEST(IQ1_M)
#undef TANDEM_DEQUANT_TEST

TEST(Dequantize, SupportsExactlyTheReferenceFormats) {
  for (WeightType t : {WeightType::TQ1_0, WeightType::MXFP4, WeightType::Q8_1, WeightType::I32})
    EXPECT_FALSE(can_dequantize(t)) << type_name(t);
  for (WeightType t : {WeightType::F32, WeightType::Q4_K, WeightType::IQ4_XS, WeightType::Q8_K})
    EXPECT_TRUE(can_dequantize(t) && can_quantize(t)) << type_name(t);
  for (WeightType t : {WeightType::IQ2_XXS, WeightType::IQ2_XS, WeightType::IQ2_S, WeightType::IQ3_XXS,
                       WeightType::IQ3_S, WeightType::IQ1_S, WeightType::IQ1_M})  // read, never written
    EXPECT_TRUE(can_dequantize(t) && !can_quantize(t)) << type_name(t);
}

TEST(Dequantize, RandomLatticeRowsAreFiniteAtTheirScale) {
  for (WeightType t : {WeightType::IQ2_XXS, WeightType::IQ2_XS, WeightType::IQ2_S, WeightType::IQ3_XXS,
                       WeightType::IQ3_S, WeightType::IQ1_S, WeightType::IQ1_M}) {
    const int64_t n = 4 * 256;
    std::vector<uint8_t> row(row_bytes(t, n));
    random_lattice_row(t, 7, 0.01f, row.data(), n);
    std::vector<float> y(static_cast<size_t>(n));
    dequantize_row(t, row.data(), y.data(), n);
    float amax = 0;
    for (float v : y) {
      ASSERT_TRUE(std::isfinite(v)) << type_name(t);
      amax = std::max(amax, std::fabs(v));
    }
    // the largest value: d (2 * 15 + 1) 62 / 4 (IQ3_XXS); the smallest possible top: d / 8 (IQ1, scale 1)
    const float d = fp16_to_f32(f32_to_fp16(0.01f));
    EXPECT_LE(amax, d * 31 * 62 / 4) << type_name(t);
    EXPECT_GE(amax, d / 8) << type_name(t);
  }
}

}  // namespace
}  // namespace tandem::quant
