// Bit-exact conversions between f32 and the two 16-bit float formats GGUF stores (IEEE half, bfloat16).
// Plain integer code, no F16C: this is the reference the vector kernels are tested against.
#pragma once

#include <cstdint>
#include <cstring>

namespace tandem::quant {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Exact: every half is a float. NaN payloads move up unchanged, like numpy's and F16C's widening.
inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000 | (mant << 13));
  if (exp != 0) return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return f32_from_bits(sign);
  // Subnormal half: shift the leading 1 into the implicit position of a normal float.
  int e = 113;  // exponent of 2^-14 in float bias, minus one per shift below
  while ((mant & 0x400) == 0) {
    mant <<= 1;
    --e;
  }
  return f32_from_bits(sign | (uint32_t(e) << 23) | ((mant & 0x3ff) << 13));
}

// Round to nearest, ties to even; overflow goes to infinity. NaN becomes the canonical quiet NaN
// 0x7e00 with its sign, as ggml's software conversion (ggml-impl.h) writes it.
inline uint16_t f32_to_fp16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const uint32_t x = u & 0x7fffffff;
  if (x >= 0x7f800000) return sign | (x > 0x7f800000 ? 0x7e00 : 0x7c00);
  if (x >= 0x47800000) return sign | 0x7c00;  // 2^16 and above: past 65504 by more than half an ulp
  if (x < 0x38800000) {                       // below 2^-14: a subnormal half, unit 2^-24
    if (x < 0x33000000) return sign;          // below 2^-25: rounds to zero
    const uint32_t mant = (x & 0x7fffff) | 0x800000;
    const int shift = 126 - int(x >> 23);     // 14..24
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;  // may carry into the smallest normal: still right
    return sign | uint16_t(q);
  }
  uint32_t h = (x - 0x38000000) >> 13;  // rebias the exponent from 127 to 15, keep 10 mantissa bits
  const uint32_t rem = x & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // a carry into the exponent is correct rounding
  return sign | uint16_t(h);
}

inline float bf16_to_f32(uint16_t b) { return f32_from_bits(uint32_t(b) << 16); }

// As ggml_compute_fp32_to_bf16 (ggml-impl.h) and gguf-py's BF16: NaN is forced quiet, keeping its
// top payload bits; everything else rounds to nearest even (overflow rounds to infinity).
inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

}  // namespace tandem::quant
