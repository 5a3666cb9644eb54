// Dequantizers of the lattice i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M), bit-exact
// with gguf-py's numpy ones: float32, the scale's product formed first, then times the grid value and sign.
// No quantizers: llama.cpp writes these formats only from an importance matrix; Tandem reads them.
#include <cstddef>
#include <cstring>

#include "core/status.h"
#include "quant/formats.h"
#include "quant/fp16.h"
#include "quant/iq1_grid.h"
#include "quant/iq_grids.h"
#include "quant/quant.h"

namespace tandem::quant {
namespace {

inline int8_t grid_byte(uint64_t point, int j) { return int8_t(point >> (8 * j)); }
inline float sign(uint8_t signs, int j) { return signs >> j & 1 ? -1.f : 1.f; }

// 8 elements of an IQ2 grid point with the sign byte `signs` and scale db.
inline void put8(float* y, float db, uint64_t point, uint8_t signs) {
  for (int j = 0; j < 8; ++j) y[j] = db * float(grid_byte(point, j)) * sign(signs, j);
}

// 8 elements of an IQ1 grid point: dl * (grid + delta).
inline void put8_iq1(float* y, float dl, uint64_t point, float delta) {
  for (int j = 0; j < 8; ++j) y[j] = dl * (float(grid_byte(point, j)) + delta);
}

}  // namespace

void dequantize_row_iq2_xxs(const BlockIQ2_XXS* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int s = 0; s < 8; ++s, y += 32) {
      uint32_t aux[2];
      std::memcpy(aux, x[i].qs + 4 * s, 8);
      const float db = d * (0.5f + float(aux[1] >> 28)) * 0.25f;
      for (int g = 0; g < 4; ++g)
        put8(y + 8 * g, db, kIq2xxsGrid[aux[0] >> (8 * g) & 255], kIqSigns[aux[1] >> (7 * g) & 127]);
    }
  }
}

void dequantize_row_iq2_xs(const BlockIQ2_XS* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int g = 0; g < 32; ++g, y += 8) {
      const float db = d * (0.5f + float(x[i].scales[g / 4] >> (4 * (g / 2 % 2)) & 15)) * 0.25f;
      put8(y, db, kIq2xsGrid[x[i].qs[g] & 511], kIqSigns[x[i].qs[g] >> 9]);
    }
  }
}

void dequantize_row_iq2_s(const BlockIQ2_S* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int g = 0; g < 32; ++g, y += 8) {
      const float db = d * (0.5f + float(x[i].scales[g / 4] >> (4 * (g / 2 % 2)) & 15)) * 0.25f;
      const int index = x[i].qs[g] | (x[i].qh[g / 4] >> (2 * (g % 4)) & 3) << 8;
      put8(y, db, kIq2sGrid[index], x[i].qs[32 + g]);
    }
  }
}

void dequantize_row_iq3_xxs(const BlockIQ3_XXS* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int s = 0; s < 8; ++s) {
      uint32_t aux;
      std::memcpy(&aux, x[i].qs + 64 + 4 * s, 4);
      const float db = d * (0.5f + float(aux >> 28)) * 0.5f;
      for (int g = 0; g < 8; ++g, y += 4) {
        const uint32_t point = kIq3xxsGrid[x[i].qs[8 * s + g]];
        const uint8_t signs = kIqSigns[aux >> (7 * (g / 2)) & 127] >> (4 * (g % 2));
        for (int j = 0; j < 4; ++j) y[j] = db * float(point >> (8 * j) & 255) * sign(signs, j);
      }
    }
  }
}

void dequantize_row_iq3_s(const BlockIQ3_S* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int g = 0; g < 64; ++g, y += 4) {
      const float db = d * float(1 + 2 * (x[i].scales[g / 16] >> (4 * (g / 8 % 2)) & 15));
      const uint32_t point = kIq3sGrid[x[i].qs[g] | (x[i].qh[g / 8] >> (g % 8) & 1) << 8];
      const uint8_t signs = x[i].signs[g / 2] >> (4 * (g % 2));
      for (int j = 0; j < 4; ++j) y[j] = db * float(point >> (8 * j) & 255) * sign(signs, j);
    }
  }
}

void dequantize_row_iq1_s(const BlockIQ1_S* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int s = 0; s < 8; ++s) {
      const uint16_t qh = x[i].qh[s];
      const float dl = d * float(2 * (qh >> 12 & 7) + 1);
      const float delta = qh & 0x8000 ? -kIq1Delta : kIq1Delta;
      for (int g = 0; g < 4; ++g, y += 8)
        put8_iq1(y, dl, kIq1sGrid[x[i].qs[4 * s + g] | (qh >> (3 * g) & 7) << 8], delta);
    }
  }
}

void dequantize_row_iq1_m(const BlockIQ1_M* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    uint16_t sc[4];
    std::memcpy(sc, x[i].scales, 8);
    const float d = fp16_to_f32(uint16_t((sc[0] >> 12) | (sc[1] >> 8 & 0xf0) | (sc[2] >> 4 & 0xf00) |
                                         (sc[3] & 0xf000)));
    for (int g = 0; g < 32; ++g, y += 8) {
      const float dl = d * float(2 * (sc[g / 8] >> (3 * (g / 2 % 4)) & 7) + 1);
      const uint8_t nibble = x[i].qh[g / 2] >> (4 * (g % 2)) & 15;
      put8_iq1(y, dl, kIq1sGrid[x[i].qs[g] | (nibble & 7) << 8], nibble & 8 ? -kIq1Delta : kIq1Delta);
    }
  }
}

}  // namespace tandem::quant

namespace tandem::quant {
namespace {

inline void signed_points(uint64_t point, uint8_t signs, int8_t* q) {
  for (int j = 0; j < 8; ++j) q[j] = int8_t(signs >> j & 1 ? -grid_byte(point, j) : grid_byte(point, j));
}
inline void signed_points4(uint32_t point, uint8_t signs, int8_t* q) {
  for (int j = 0; j < 4; ++j) {
    const int v = int(point >> (8 * j) & 255);
    q[j] = int8_t(signs >> j & 1 ? -v : v);
  }
}
inline void iq1_points(uint64_t point, bool negative_delta, int8_t* q) {
  for (int j = 0; j < 8; ++j) q[j] = int8_t(8 * grid_byte(point, j) + (negative_delta ? -1 : 1));
}

}  // namespace

float lattice_block(WeightType t, const void* block, int8_t* q, uint8_t* odd) {
  switch (t) {
    case WeightType::IQ2_XXS: {
      const auto& b = *static_cast<const BlockIQ2_XXS*>(block);
      for (int s = 0; s < 8; ++s) {
        uint32_t aux[2];
        std::memcpy(aux, b.qs + 4 * s, 8);
        for (int g = 0; g < 4; ++g)
          signed_points(kIq2xxsGrid[aux[0] >> (8 * g) & 255], kIqSigns[aux[1] >> (7 * g) & 127], q + 32 * s + 8 * g);
        odd[2 * s] = odd[2 * s + 1] = uint8_t(2 * (aux[1] >> 28) + 1);
      }
      return 0.125f * fp16_to_f32(b.d);
    }
    case WeightType::IQ2_XS: {
      const auto& b = *static_cast<const BlockIQ2_XS*>(block);
      for (int g = 0; g < 32; ++g) signed_points(kIq2xsGrid[b.qs[g] & 511], kIqSigns[b.qs[g] >> 9], q + 8 * g);
      for (int h = 0; h < 16; ++h) odd[h] = uint8_t(2 * (b.scales[h / 2] >> (4 * (h % 2)) & 15) + 1);
      return 0.125f * fp16_to_f32(b.d);
    }
    case WeightType::IQ2_S: {
      const auto& b = *static_cast<const BlockIQ2_S*>(block);
      for (int g = 0; g < 32; ++g)
        signed_points(kIq2sGrid[b.qs[g] | (b.qh[g / 4] >> (2 * (g % 4)) & 3) << 8], b.qs[32 + g], q + 8 * g);
      for (int h = 0; h < 16; ++h) odd[h] = uint8_t(2 * (b.scales[h / 2] >> (4 * (h % 2)) & 15) + 1);
      return 0.125f * fp16_to_f32(b.d);
    }
    case WeightType::IQ3_XXS: {
      const auto& b = *static_cast<const BlockIQ3_XXS*>(block);
      for (int s = 0; s < 8; ++s) {
        uint32_t aux;
        std::memcpy(&aux, b.qs + 64 + 4 * s, 4);
        for (int g = 0; g < 8; ++g)
          signed_points4(kIq3xxsGrid[b.qs[8 * s + g]], kIqSigns[aux >> (7 * (g / 2)) & 127] >> (4 * (g % 2)),
                         q + 32 * s + 4 * g);
        odd[2 * s] = odd[2 * s + 1] = uint8_t(2 * (aux >> 28) + 1);
      }
      return 0.25f * fp16_to_f32(b.d);
    }
    case WeightType::IQ3_S: {
      const auto& b = *static_cast<const BlockIQ3_S*>(block);
      for (int g = 0; g < 64; ++g)
        signed_points4(kIq3sGrid[b.qs[g] | (b.qh[g / 8] >> (g % 8) & 1) << 8], b.signs[g / 2] >> (4 * (g % 2)),
                       q + 4 * g);
      for (int h = 0; h < 16; ++h) odd[h] = uint8_t(2 * (b.scales[h / 4] >> (4 * (h / 2 % 2)) & 15) + 1);
      return fp16_to_f32(b.d);
    }
    case WeightType::IQ1_S: {
      const auto& b = *static_cast<const BlockIQ1_S*>(block);
      for (int s = 0; s < 8; ++s) {
        const uint16_t qh = b.qh[s];
        for (int g = 0; g < 4; ++g)
          iq1_points(kIq1sGrid[b.qs[4 * s + g] | (qh >> (3 * g) & 7) << 8], qh & 0x8000, q + 32 * s + 8 * g);
        odd[2 * s] = odd[2 * s + 1] = uint8_t(2 * (qh >> 12 & 7) + 1);
      }
      return 0.125f * fp16_to_f32(b.d);
    }
    case WeightType::IQ1_M: {
      const auto& b = *static_cast<const BlockIQ1_M*>(block);
      uint16_t sc[4];
      std::memcpy(sc, b.scales, 8);
      for (int g = 0; g < 32; ++g) {
        const uint8_t nibble = b.qh[g / 2] >> (4 * (g % 2)) & 15;
        iq1_points(kIq1sGrid[b.qs[g] | (nibble & 7) << 8], nibble & 8, q + 8 * g);
      }
      for (int h = 0; h < 16; ++h) odd[h] = uint8_t(2 * (sc[h / 4] >> (3 * (h % 4)) & 7) + 1);
      const uint16_t d = uint16_t((sc[0] >> 12) | (sc[1] >> 8 & 0xf0) | (sc[2] >> 4 & 0xf00) | (sc[3] & 0xf000));
      return 0.125f * fp16_to_f32(d);
    }
    default:
      TANDEM_CHECK(false && "lattice_block: not a lattice i-quant");
      return 0;
  }
}

}  // namespace tandem::quant

namespace tandem::quant {

void random_lattice_row(WeightType t, uint64_t seed, float d, void* dst, int64_t n) {
  TANDEM_CHECK(is_lattice_iquant(t) && n % kQK == 0);
  auto next = [&seed] {  // splitmix64
    uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  auto* out = static_cast<uint8_t*>(dst);
  const size_t bytes = row_bytes(t, n);
  for (size_t i = 0; i < bytes; i += 8) {
    const uint64_t r = next();
    std::memcpy(out + i, &r, bytes - i < 8 ? bytes - i : 8);
  }
  const uint16_t h = f32_to_fp16(d);
  for (uint8_t* b = out; b < out + bytes; b += block_bytes(t)) {
    if (t != WeightType::IQ1_M) {
      std::memcpy(b, &h, 2);
      continue;
    }
    for (int k = 0; k < 4; ++k) {  // IQ1_M's half: the top nibbles of its four 16-bit scale fields
      uint16_t f;
      std::memcpy(&f, b + offsetof(BlockIQ1_M, scales) + 2 * k, 2);
      f = uint16_t((f & 0x0fff) | (h >> (4 * k) & 15) << 12);
      std::memcpy(b + offsetof(BlockIQ1_M, scales) + 2 * k, &f, 2);
    }
  }
}

}  // namespace tandem::quant
