// Block layouts of the quantized weight formats, byte for byte as GGUF files store them
// (ggml-common.h in llama.cpp). Scales are raw IEEE half bits; convert with fp16.h.
#pragma once

#include <cstdint>

namespace tandem::quant {

constexpr int kQK = 256;   // elements per k-quant super-block (ggml's QK_K)
constexpr int kQK32 = 32;  // elements per legacy / IQ4_NL block

// y = d * (q - 8)
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];  // element j in the low nibble of qs[j], element j+16 in the high nibble
};
// y = d * q + m
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[16];
};
// y = d * (q - 16); bit j of qh (little-endian u32) is bit 4 of element j
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};

// 16 sub-blocks of 16: y = d * (scales & 15) * q - dmin * (scales >> 4), q in 0..3
struct BlockQ2_K {
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d, dmin;
};
// 16 sub-blocks of 16: y = d * (scale - 32) * (q - 4 * !hbit), 6-bit scales packed in 12 bytes
struct BlockQ3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
};
// 8 sub-blocks of 32: y = d * sc * q - dmin * m, 6-bit sc and m packed in 12 bytes
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
// 16 sub-blocks of 16: y = d * scale * (q - 32), q 6 bits split in ql (low 4) and qh (high 2)
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
// Activations for k-quant dot products: d is a full float, bsums[i] = sum of qs[16i..16i+15].
struct BlockQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};

// y = d * kIq4Values[q]
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[16];
};
// 8 sub-blocks of 32: y = d * (scale - 32) * kIq4Values[q], 6-bit scales split in scales_l / scales_h
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};

// The lattice i-quants (llama.cpp's IQ2/IQ3/IQ1 "importance" formats): groups of 8 (IQ1_*, IQ2_*) or 4
// (IQ3_*) elements are one point of a fixed grid (quant/iq_grids.h) times a sign pattern and a sub-block scale.
// Sign indices index kIqSigns (7 stored bits, the eighth implied by even parity); IQ2_S and IQ3_S store all 8.

// 8 sub-blocks of 32; qs holds two u32 a sub-block: four grid bytes (kIq2xxsGrid indices), then four 7-bit
// sign indices and a 4-bit scale s in bits 28..31: y = d * (0.5 + s) / 4 * grid * sign.
struct BlockIQ2_XXS {
  uint16_t d;
  uint16_t qs[32];
};
// 32 groups of 8; qs[g]: kIq2xsGrid index (9 bits) | sign index << 9; a 4-bit scale per 16 elements.
struct BlockIQ2_XS {
  uint16_t d;
  uint16_t qs[32];
  uint8_t scales[8];
};
// 32 groups of 8; grid index (kIq2sGrid, 10 bits) = qs[g] | 2 bits of qh[g / 4] << 8; signs = qs[32 + g]
// (8 stored bits); a 4-bit scale per 16 elements: y = d * (0.5 + s) / 4 * grid * sign.
struct BlockIQ2_S {
  uint16_t d;
  uint8_t qs[64];
  uint8_t qh[8];
  uint8_t scales[8];
};
// 64 groups of 4 (kIq3xxsGrid indices in qs[0..63]); then a u32 per sub-block of 32: four 7-bit sign
// indices and a 4-bit scale s: y = d * (0.5 + s) / 2 * grid * sign.
struct BlockIQ3_XXS {
  uint16_t d;
  uint8_t qs[96];
};
// 64 groups of 4: grid index (kIq3sGrid, 9 bits) = qs[g] | bit g % 8 of qh[g / 8] << 8; signs, 8 stored bits
// per 8 elements; a 4-bit scale s per 32: y = d * (1 + 2 s) * grid * sign.
struct BlockIQ3_S {
  uint16_t d;
  uint8_t qs[64];
  uint8_t qh[8];
  uint8_t signs[32];
  uint8_t scales[4];
};
// 32 groups of 8 (kIq1sGrid, 11-bit index = qs[g] | 3 bits of qh[g / 4] << 8); qh[s] bits 12..14 hold the
// 3-bit scale of sub-block s, bit 15 the sign of its offset: y = d * (2 scale + 1) * (grid +- 1/8).
struct BlockIQ1_S {
  uint16_t d;
  uint8_t qs[32];
  uint16_t qh[8];
};
// 32 groups of 8; each qh nibble: 3 index bits and the offset sign of one group; a 3-bit scale per 16
// elements in scales (four u16, 12 bits each), whose top nibbles together are the block's half scale d.
struct BlockIQ1_M {
  uint8_t qs[32];
  uint8_t qh[16];
  uint8_t scales[8];
};
inline constexpr float kIq1Delta = 0.125f;  // IQ1S_DELTA: the +-offset of IQ1_S / IQ1_M grid points

// The non-linear 4-bit grid shared by IQ4_NL and IQ4_XS (kvalues_iq4nl in ggml).
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);
static_assert(sizeof(BlockIQ4_NL) == 18);
static_assert(sizeof(BlockIQ4_XS) == 136);
static_assert(sizeof(BlockIQ2_XXS) == 66);
static_assert(sizeof(BlockIQ2_XS) == 74);
static_assert(sizeof(BlockIQ2_S) == 82);
static_assert(sizeof(BlockIQ3_XXS) == 98);
static_assert(sizeof(BlockIQ3_S) == 110);
static_assert(sizeof(BlockIQ1_S) == 50);
static_assert(sizeof(BlockIQ1_M) == 56);

}  // namespace tandem::quant
