// K-quant formats Q2_K..Q6_K and the activation format Q8_K: dequantize like gguf-py (quants.py),
// quantize like llama.cpp's quantize_row_q*_K_ref (ggml-quants.c), f32 math in the same order.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/formats.h"
#include "quant/fp16.h"
#include "quant/kquant_search.h"

namespace tandem::quant {
namespace {

// 2-bit code of element e (0..255) in Q2_K / Q3_K's qs: 32 bytes per 128 elements, 4 shifts of 2.
inline int code2(const uint8_t* qs, int e) { return (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3; }
// 4-bit code of element e in Q4_K / Q5_K's qs: 32 bytes per 64 elements, low nibble first.
inline int code4(const uint8_t* qs, int e) { return (qs[(e / 64) * 32 + e % 32] >> (4 * ((e / 32) % 2))) & 0xf; }

// The signed 6-bit scale of sub-block j (0..15) of Q3_K: low 4 bits in bytes 0..7, high 2 in 8..11.
inline int q3_scale(const uint8_t* s, int j) {
  const int lo = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (lo | hi << 4) - 32;
}

// Packs four 2-bit codes per byte, the layout code2 reads.
inline void pack_code2(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = uint8_t(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

// Q4_K / Q5_K: 6-bit scales and mins into 12 bytes, the layout unpack_scale_min_k4 reads.
void pack_scales_k4(const float* scales, const float* mins, float max_scale, float max_min, uint8_t* out) {
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, uint8_t(nearest_int(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, uint8_t(nearest_int(inv_min * mins[j])));
    if (j < 4) {
      out[j] = ls;
      out[j + 4] = lm;
    } else {
      out[j + 4] = uint8_t((ls & 0xf) | (lm & 0xf) << 4);
      out[j - 4] |= uint8_t((ls >> 4) << 6);
      out[j] |= uint8_t((lm >> 4) << 6);
    }
  }
}

// Shared by Q4_K and Q5_K: per sub-block scale/min search, then codes 0..nmax against the rounded
// 6-bit scales and half super-scales. Writes d, dmin, scales and L[256].
template <typename Block>
void quantize_scale_min_k(const float* x, Block* y, int nmax, float rmin, int nstep, uint8_t* L) {
  float scales[8], mins[8], weights[32];
  uint8_t Laux[32];
  float max_scale = 0, max_min = 0;  // mins are subtracted, so scales are never negative
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
    scales[j] = fit_scale_min(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  pack_scales_k4(scales, mins, max_scale, max_min, y->scales);
  y->d = f32_to_fp16(max_scale / 63.f);
  y->dmin = f32_to_fp16(max_min / 63.f);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    unpack_scale_min_k4(j, y->scales, &sc, &m);
    const float d = fp16_to_f32(y->d) * float(sc);
    if (d == 0) continue;  // keeps the search's codes, as the reference does
    const float dm = fp16_to_f32(y->dmin) * float(m);
    for (int l = 0; l < 32; ++l) L[32 * j + l] = uint8_t(std::clamp(nearest_int((x[32 * j + l] + dm) / d), 0, nmax));
  }
}

}  // namespace

void dequantize_row_q2_K(const BlockQ2_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    for (int s = 0; s < 16; ++s) {
      const float dl = d * float(x[i].scales[s] & 0xf);
      const float ml = dmin * float(x[i].scales[s] >> 4);
      for (int l = 0; l < 16; ++l) y[16 * s + l] = dl * float(code2(x[i].qs, 16 * s + l)) - ml;
    }
  }
}

void dequantize_row_q3_K(const BlockQ3_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_f32(x[i].d);
    for (int s = 0; s < 16; ++s) {
      const float dl = d * float(q3_scale(x[i].scales, s));
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * s + l;
        const int high = (x[i].hmask[e % 32] >> (e / 32)) & 1;  // a set bit means no -4 offset
        y[e] = dl * float(code2(x[i].qs, e) - (high ? 0 : 4));
      }
    }
  }
}

void dequantize_row_q4_K(const BlockQ4_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      unpack_scale_min_k4(s, x[i].scales, &sc, &m);
      const float dl = d * float(sc), ml = dmin * float(m);
      for (int l = 0; l < 32; ++l) y[32 * s + l] = dl * float(code4(x[i].qs, 32 * s + l)) - ml;
    }
  }
}

void dequantize_row_q5_K(const BlockQ5_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_f32(x[i].d), dmin = fp16_to_f32(x[i].dmin);
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      unpack_scale_min_k4(s, x[i].scales, &sc, &m);
      const float dl = d * float(sc), ml = dmin * float(m);
      for (int l = 0; l < 32; ++l) {
        const int e = 32 * s + l;
        const int q = code4(x[i].qs, e) | ((x[i].qh[l] >> s) & 1) << 4;
        y[e] = dl * float(q) - ml;
      }
    }
  }
}

void dequantize_row_q6_K(const BlockQ6_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_f32(x[i].d);
    for (int e = 0; e < kQK; ++e) {
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;  // half, quarter within it, lane
      const int lo = (x[i].ql[h * 64 + l + 32 * (k % 2)] >> (4 * (k / 2))) & 0xf;
      const int hi = (x[i].qh[h * 32 + l] >> (2 * k)) & 3;
      y[e] = (d * float(x[i].scales[e / 16])) * float((lo | hi << 4) - 32);
    }
  }
}

void dequantize_row_q8_K(const BlockQ8_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK)
    for (int j = 0; j < kQK; ++j) y[j] = x[i].d * float(x[i].qs[j]);
}

void quantize_row_q2_K(const float* x, BlockQ2_K* y, int64_t n) {
  uint8_t L[kQK], Laux[16];
  float weights[16], mins[16], scales[16];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = fit_scale_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    constexpr float kQ4Scale = 15.f;
    if (max_scale > 0) {
      const float iscale = kQ4Scale / max_scale;
      for (int j = 0; j < 16; ++j) y[i].scales[j] = uint8_t(nearest_int(iscale * scales[j]));
      y[i].d = f32_to_fp16(max_scale / kQ4Scale);
    } else {
      std::memset(y[i].scales, 0, sizeof y[i].scales);
      y[i].d = f32_to_fp16(0.f);
    }
    if (max_min > 0) {
      const float iscale = kQ4Scale / max_min;
      for (int j = 0; j < 16; ++j) y[i].scales[j] |= uint8_t(nearest_int(iscale * mins[j]) << 4);
      y[i].dmin = f32_to_fp16(max_min / kQ4Scale);
    } else {
      y[i].dmin = f32_to_fp16(0.f);
    }
    for (int j = 0; j < 16; ++j) {
      const float d = fp16_to_f32(y[i].d) * float(y[i].scales[j] & 0xf);
      if (d == 0) continue;  // keeps the search's codes, as the reference does
      const float dm = fp16_to_f32(y[i].dmin) * float(y[i].scales[j] >> 4);
      for (int l = 0; l < 16; ++l) L[16 * j + l] = uint8_t(std::clamp(nearest_int((x[16 * j + l] + dm) / d), 0, 3));
    }
    pack_code2(L, y[i].qs);
  }
}

void quantize_row_q3_K(const float* x, BlockQ3_K* y, int64_t n) {
  int8_t L[kQK];
  float scales[16];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_q3_scale(16, 4, x + 16 * j, L + 16 * j);
      if (std::fabs(scales[j]) > amax) {
        amax = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    std::memset(y[i].scales, 0, sizeof y[i].scales);
    if (max_scale != 0) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        const int l = std::clamp(int(int8_t(nearest_int(iscale * scales[j]))), -32, 31) + 32;
        if (j < 8) y[i].scales[j] = uint8_t(l & 0xf);
        else y[i].scales[j - 8] |= uint8_t((l & 0xf) << 4);
        y[i].scales[j % 4 + 8] |= uint8_t((l >> 4) << (2 * (j / 4)));
      }
      y[i].d = f32_to_fp16(1 / iscale);
    } else {
      y[i].d = f32_to_fp16(0.f);
    }
    for (int j = 0; j < 16; ++j) {
      const float d = fp16_to_f32(y[i].d) * float(q3_scale(y[i].scales, j));
      if (d == 0) continue;
      for (int l = 0; l < 16; ++l) L[16 * j + l] = int8_t(std::clamp(nearest_int(x[16 * j + l] / d), -4, 3) + 4);
    }
    // Bit 2 of each code goes to hmask: element e sets bit e/32 of byte e%32.
    std::memset(y[i].hmask, 0, sizeof y[i].hmask);
    uint8_t codes[kQK];
    for (int e = 0; e < kQK; ++e) {
      int l = L[e];
      if (l > 3) {
        y[i].hmask[e % 32] |= uint8_t(1 << (e / 32));
        l -= 4;
      }
      codes[e] = uint8_t(l);
    }
    pack_code2(codes, y[i].qs);
  }
}

void quantize_row_q4_K(const float* x, BlockQ4_K* y, int64_t n) {
  uint8_t L[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    quantize_scale_min_k(x, &y[i], 15, -1.f, 20, L);
    for (int j = 0; j < kQK; j += 64)
      for (int l = 0; l < 32; ++l) y[i].qs[j / 2 + l] = uint8_t(L[j + l] | L[j + l + 32] << 4);
  }
}

void quantize_row_q5_K(const float* x, BlockQ5_K* y, int64_t n) {
  uint8_t L[kQK];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    quantize_scale_min_k(x, &y[i], 31, -0.5f, 15, L);
    std::memset(y[i].qh, 0, sizeof y[i].qh);
    for (int j = 0; j < kQK; j += 64) {
      for (int l = 0; l < 32; ++l) {
        const int lo = L[j + l], hi = L[j + l + 32];
        y[i].qh[l] |= uint8_t((lo >> 4) << (j / 32) | (hi >> 4) << (j / 32 + 1));
        y[i].qs[j / 2 + l] = uint8_t((lo & 0xf) | (hi & 0xf) << 4);
      }
    }
  }
}

void quantize_row_q6_K(const float* x, BlockQ6_K* y, int64_t n) {
  int8_t L[kQK];
  float scales[16];
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float max_scale = 0, max_abs_scale = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_symmetric_scale(16, 32, x + 16 * j, L + 16 * j, 1);
      if (std::fabs(scales[j]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    if (max_abs_scale < 1e-15f) {  // GROUP_MAX_EPS
      std::memset(&y[i], 0, sizeof y[i]);
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = f32_to_fp16(1 / iscale);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = int8_t(std::min(127, nearest_int(iscale * scales[j])));
    for (int j = 0; j < 16; ++j) {
      const float d = fp16_to_f32(y[i].d) * float(y[i].scales[j]);
      if (d == 0) continue;
      for (int l = 0; l < 16; ++l) L[16 * j + l] = int8_t(std::clamp(nearest_int(x[16 * j + l] / d), -32, 31) + 32);
    }
    for (int j = 0; j < kQK; j += 128) {
      uint8_t* ql = y[i].ql + j / 2;
      uint8_t* qh = y[i].qh + j / 4;
      for (int l = 0; l < 32; ++l) {
        const int q0 = L[j + l], q1 = L[j + l + 32], q2 = L[j + l + 64], q3 = L[j + l + 96];
        ql[l] = uint8_t((q0 & 0xf) | (q2 & 0xf) << 4);
        ql[l + 32] = uint8_t((q1 & 0xf) | (q3 & 0xf) << 4);
        qh[l] = uint8_t((q0 >> 4) | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6);
      }
    }
  }
}

void quantize_row_q8_K(const float* x, BlockQ8_K* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float max = 0, amax = 0;
    for (int j = 0; j < kQK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    std::memset(&y[i], 0, sizeof y[i]);  // ggml leaves bsums unwritten for an all-zero block; we zero them
    if (amax == 0) continue;
    // -127, not -128: ggml changed it so the IQ2_XXS AVX dot product cannot overflow (ggml-quants.c).
    const float iscale = -127.f / max;
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = int8_t(std::min(127, nearest_int(iscale * x[j])));
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * j + l];
      y[i].bsums[j] = int16_t(sum);
    }
    y[i].d = 1 / iscale;
  }
}

}  // namespace tandem::quant
