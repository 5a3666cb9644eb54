// fp16.h conversions, exhaustively over all 65536 half and bfloat16 bit patterns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "quant/fp16.h"

namespace tandem::quant {
namespace {

// Independent decoding of a half from its fields with ldexp (no bit tricks).
float half_value_by_formula(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float v;
  if (exp == 0) v = std::ldexp(float(mant), -24);
  else if (exp == 31) v = mant ? NAN : INFINITY;
  else v = std::ldexp(float(1024 + mant), exp - 25);
  return sign ? -v : v;
}

bool is_half_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

TEST(Fp16, WidensEveryHalfExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = fp16_to_f32(uint16_t(h)), want = half_value_by_formula(uint16_t(h));
    if (is_half_nan(uint16_t(h))) {
      ASSERT_TRUE(std::isnan(got)) << h;
      // payload moves up by 13 bits, sign kept (as numpy and F16C widen)
      ASSERT_EQ(f32_bits(got), (uint32_t(h & 0x8000) << 16) | 0x7f800000 | (uint32_t(h & 0x3ff) << 13)) << h;
    } else {
      ASSERT_EQ(f32_bits(got), f32_bits(want)) << "half 0x" << std::hex << h;  // also keeps -0
    }
  }
}

TEST(Fp16, NarrowsEveryHalfBackToItself) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (is_half_nan(uint16_t(h))) {
      ASSERT_EQ(f32_to_fp16(fp16_to_f32(uint16_t(h))), uint16_t((h & 0x8000) | 0x7e00)) << h;
    } else {
      ASSERT_EQ(f32_to_fp16(fp16_to_f32(uint16_t(h))), h) << "half 0x" << std::hex << h;
    }
  }
}

// Between each pair of adjacent finite halves of one sign: the midpoint goes to the even one, and the
// floats just below / above it go down / up. Past 65504 the next step is infinity.
TEST(Fp16, RoundsToNearestEvenBetweenEveryAdjacentPair) {
  for (uint32_t sign : {0u, 0x8000u}) {
    for (uint32_t m = 0; m < 0x7c00; ++m) {
      const uint16_t lo = uint16_t(sign | m), hi = uint16_t(sign | (m + 1));
      const double a = std::fabs(double(fp16_to_f32(lo)));
      const double b = m + 1 == 0x7c00 ? 65536.0 : std::fabs(double(fp16_to_f32(hi)));  // 65504 + one step
      const float mid = float((a + b) / 2);  // exact in float: halves have 11 significant bits
      const float s = sign ? -1.f : 1.f;
      const uint16_t even = (m & 1) ? hi : lo;
      ASSERT_EQ(f32_to_fp16(s * mid), even) << "pair 0x" << std::hex << m;
      ASSERT_EQ(f32_to_fp16(s * std::nextafter(mid, 0.f)), lo) << "pair 0x" << std::hex << m;
      ASSERT_EQ(f32_to_fp16(s * std::nextafter(mid, INFINITY)), hi) << "pair 0x" << std::hex << m;
    }
  }
}

TEST(Fp16, SendsOverflowToInfinityAndNanToQuietNan) {
  EXPECT_EQ(f32_to_fp16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_fp16(-INFINITY), 0xfc00);
  EXPECT_EQ(f32_to_fp16(65519.f), 0x7bff);
  EXPECT_EQ(f32_to_fp16(65520.f), 0x7c00);
  EXPECT_EQ(f32_to_fp16(NAN), 0x7e00);
  EXPECT_EQ(f32_to_fp16(-NAN), 0xfe00);
  EXPECT_EQ(f32_to_fp16(1e-30f), 0x0000);
  EXPECT_EQ(f32_to_fp16(-1e-30f), 0x8000);
  EXPECT_EQ(f32_to_fp16(f32_from_bits(1)), 0x0000);  // float subnormal
}

TEST(Bf16, WidensAndNarrowsEveryValue) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_f32(uint16_t(b));
    ASSERT_EQ(f32_bits(f), b << 16);
    if ((b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0) ASSERT_EQ(f32_to_bf16(f), uint16_t(b | 0x40)) << b;  // quieted
    else ASSERT_EQ(f32_to_bf16(f), b) << b;
  }
}

TEST(Bf16, RoundsToNearestEvenBetweenEveryAdjacentPair) {
  for (uint32_t b = 0; b < 65536; ++b) {
    if ((b & 0x7f80) == 0x7f80) continue;  // inf / NaN
    const uint32_t lo = b << 16;
    const uint32_t mid = lo | 0x8000;
    const uint16_t up = uint16_t(b + 1), even = (b & 1) ? up : uint16_t(b);
    ASSERT_EQ(f32_to_bf16(f32_from_bits(mid)), even) << b;  // magnitude rounding, as bits grow with |x|
    ASSERT_EQ(f32_to_bf16(f32_from_bits(mid - 1)), uint16_t(b)) << b;
    ASSERT_EQ(f32_to_bf16(f32_from_bits(mid + 1)), up) << b;
  }
}

}  // namespace
}  // namespace tandem::quant
