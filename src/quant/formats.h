// Per-format row functions behind quant.h's dispatch; kernels and tests may call them directly.
// n is the element count (a multiple of the format's block size); blocks are those of blocks.h.
#pragma once

#include <cstdint>

#include "gguf/types.h"
#include "quant/blocks.h"

namespace tandem::quant {

// legacy.cpp: 32-element blocks with one (or two) half scales.
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n);
void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t n);
void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t n);
void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n);
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n);
void quantize_row_q4_1(const float* x, BlockQ4_1* y, int64_t n);
void quantize_row_q5_0(const float* x, BlockQ5_0* y, int64_t n);
void quantize_row_q5_1(const float* x, BlockQ5_1* y, int64_t n);
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);

// kquants.cpp: 256-element super-blocks.
void dequantize_row_q2_K(const BlockQ2_K* x, float* y, int64_t n);
void dequantize_row_q3_K(const BlockQ3_K* x, float* y, int64_t n);
void dequantize_row_q4_K(const BlockQ4_K* x, float* y, int64_t n);
void dequantize_row_q5_K(const BlockQ5_K* x, float* y, int64_t n);
void dequantize_row_q6_K(const BlockQ6_K* x, float* y, int64_t n);
void dequantize_row_q8_K(const BlockQ8_K* x, float* y, int64_t n);
void quantize_row_q2_K(const float* x, BlockQ2_K* y, int64_t n);
void quantize_row_q3_K(const float* x, BlockQ3_K* y, int64_t n);
void quantize_row_q4_K(const float* x, BlockQ4_K* y, int64_t n);
void quantize_row_q5_K(const float* x, BlockQ5_K* y, int64_t n);
void quantize_row_q6_K(const float* x, BlockQ6_K* y, int64_t n);
void quantize_row_q8_K(const float* x, BlockQ8_K* y, int64_t n);

// iquants.cpp: the non-linear 4-bit grid.
void dequantize_row_iq4_nl(const BlockIQ4_NL* x, float* y, int64_t n);
void dequantize_row_iq4_xs(const BlockIQ4_XS* x, float* y, int64_t n);
// As ggml_quantize_chunk (quantize_iq4_nl, 7 scale tries), not quantize_row_iq4_nl_ref (no tries):
// the former is what llama-quantize writes into files.
void quantize_row_iq4_nl(const float* x, BlockIQ4_NL* y, int64_t n);
void quantize_row_iq4_xs(const float* x, BlockIQ4_XS* y, int64_t n);

// iq_lattice.cpp: the lattice i-quants, dequantization only (their files come from llama-quantize with an
// importance matrix).
void dequantize_row_iq2_xxs(const BlockIQ2_XXS* x, float* y, int64_t n);
void dequantize_row_iq2_xs(const BlockIQ2_XS* x, float* y, int64_t n);
void dequantize_row_iq2_s(const BlockIQ2_S* x, float* y, int64_t n);
void dequantize_row_iq3_xxs(const BlockIQ3_XXS* x, float* y, int64_t n);
void dequantize_row_iq3_s(const BlockIQ3_S* x, float* y, int64_t n);
void dequantize_row_iq1_s(const BlockIQ1_S* x, float* y, int64_t n);
void dequantize_row_iq1_m(const BlockIQ1_M* x, float* y, int64_t n);
// One block of a lattice i-quant t as integers for kernels that unpack whole blocks: element e is
// m * odd[e / 16] * q[e], m the returned float (d over the format's power of two), odd[h] the scale 2 s + 1 of
// elements 16 h .. 16 h + 15 (formats with 32-element sub-blocks repeat it), q the int8 code: the signed grid
// value (|q| <= 62), for IQ1_S / IQ1_M 8 grid +- 1 (the offset of 1/8 folded in). q: 256 bytes, odd: 16.
float lattice_block(WeightType t, const void* block, int8_t* q, uint8_t* odd);

// The 6-bit scale and min of sub-block j (0..7) packed in Q4_K / Q5_K's 12 scale bytes.
inline void unpack_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = uint8_t((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
    *m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Round to nearest, ties to even, via the float-add trick ggml uses (nearest_int in ggml-quants.c).
// Exact for |v| < 2^22; beyond that it wraps exactly as ggml's does, which keeps blocks identical.
inline int nearest_int(float v) {
  const float t = v + 12582912.f;  // 1.5 * 2^23: the integer lands in the low mantissa bits
  int32_t i;
  __builtin_memcpy(&i, &t, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

// Index of the kIq4Values entry nearest x, the upper one on a tie: the result of best_index_int8's
// binary search in ggml-quants.c, computed without branches. Between v[j-1] and v[j] that search picks
// j unless x - v[j-1] < v[j] - x; every boundary below x passes that test and every one above fails it,
// so counting the passes gives the same index for all x, inf and NaN included (NaN -> 15, as there).
inline int iq4_nearest_index(float x) {
  int index = 0;
  for (int j = 1; j < 16; ++j) index += !(x - float(kIq4Values[j - 1]) < float(kIq4Values[j]) - x);
  return index;
}

}  // namespace tandem::quant
