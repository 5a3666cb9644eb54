// Legacy 32-element formats Q4_0 Q4_1 Q5_0 Q5_1 Q8_0: dequantize like gguf-py (quants.py), quantize
// like llama.cpp's quantize_row_*_ref (ggml-quants.c). All float math is f32 in the same order.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/formats.h"
#include "quant/fp16.h"

namespace tandem::quant {
namespace {

// ggml truncates toward zero ((int8_t)(v + 8.5f)) then caps at the top; clamping in float first gives
// the same integers for every finite v and keeps inf/NaN (from a subnormal scale) defined.
inline uint8_t trunc_clamp(float v, float top) { return uint8_t(std::min(top, std::max(0.f, v))); }

// The value with the largest magnitude, first one on ties (signed: the sign picks the scale's sign).
inline float signed_absmax(const float* x, int n) {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

inline void min_max(const float* x, int n, float* lo, float* hi) {
  float mn = x[0], mx = x[0];
  for (int j = 1; j < n; ++j) {
    if (x[j] < mn) mn = x[j];
    if (x[j] > mx) mx = x[j];
  }
  *lo = mn;
  *hi = mx;
}

}  // namespace

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, y += kQK32) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * float((x[i].qs[j] & 0xf) - 8);
      y[j + 16] = d * float((x[i].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, y += kQK32) {
    const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * float(x[i].qs[j] & 0xf) + m;
      y[j + 16] = d * float(x[i].qs[j] >> 4) + m;
    }
  }
}

namespace {
inline uint32_t load_qh(const uint8_t* qh) {
  return uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
}
}  // namespace

void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, y += kQK32) {
    const float d = fp16_to_f32(x[i].d);
    const uint32_t qh = load_qh(x[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int q0 = (x[i].qs[j] & 0xf) | int((qh >> j) & 1) << 4;
      const int q1 = (x[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
      y[j] = d * float(q0 - 16);
      y[j + 16] = d * float(q1 - 16);
    }
  }
}

void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, y += kQK32) {
    const float d = fp16_to_f32(x[i].d), m = fp16_to_f32(x[i].m);
    const uint32_t qh = load_qh(x[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int q0 = (x[i].qs[j] & 0xf) | int((qh >> j) & 1) << 4;
      const int q1 = (x[i].qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
      y[j] = d * float(q0) + m;
      y[j + 16] = d * float(q1) + m;
    }
  }
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, y += kQK32) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < kQK32; ++j) y[j] = float(x[i].qs[j]) * d;
  }
}

void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, x += kQK32) {
    const float d = signed_absmax(x, kQK32) / -8;  // -8 maps the extreme onto the full-range code 0
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = trunc_clamp(x[j] * id + 8.5f, 15);
      const uint8_t q1 = trunc_clamp(x[j + 16] * id + 8.5f, 15);
      y[i].qs[j] = uint8_t(q0 | q1 << 4);
    }
  }
}

void quantize_row_q4_1(const float* x, BlockQ4_1* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, x += kQK32) {
    float lo, hi;
    min_max(x, kQK32, &lo, &hi);
    const float d = (hi - lo) / 15;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    y[i].m = f32_to_fp16(lo);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = trunc_clamp((x[j] - lo) * id + 0.5f, 15);
      const uint8_t q1 = trunc_clamp((x[j + 16] - lo) * id + 0.5f, 15);
      y[i].qs[j] = uint8_t(q0 | q1 << 4);
    }
  }
}

void quantize_row_q5_0(const float* x, BlockQ5_0* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, x += kQK32) {
    const float d = signed_absmax(x, kQK32) / -16;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = trunc_clamp(x[j] * id + 16.5f, 31);
      const uint8_t q1 = trunc_clamp(x[j + 16] * id + 16.5f, 31);
      y[i].qs[j] = uint8_t((q0 & 0xf) | (q1 & 0xf) << 4);
      qh |= uint32_t(q0 >> 4) << j | uint32_t(q1 >> 4) << (j + 16);
    }
    for (int b = 0; b < 4; ++b) y[i].qh[b] = uint8_t(qh >> (8 * b));
  }
}

void quantize_row_q5_1(const float* x, BlockQ5_1* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, x += kQK32) {
    float lo, hi;
    min_max(x, kQK32, &lo, &hi);
    const float d = (hi - lo) / 31;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    y[i].m = f32_to_fp16(lo);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      const uint8_t q0 = trunc_clamp((x[j] - lo) * id + 0.5f, 31);
      const uint8_t q1 = trunc_clamp((x[j + 16] - lo) * id + 0.5f, 31);
      y[i].qs[j] = uint8_t((q0 & 0xf) | (q1 & 0xf) << 4);
      qh |= uint32_t(q0 >> 4) << j | uint32_t(q1 >> 4) << (j + 16);
    }
    for (int b = 0; b < 4; ++b) y[i].qh[b] = uint8_t(qh >> (8 * b));
  }
}

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, x += kQK32) {
    float amax = 0;
    for (int j = 0; j < kQK32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127;  // not 128: the reference is symmetric; matching it keeps blocks identical
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < kQK32; ++j) y[i].qs[j] = int8_t(std::round(x[j] * id));  // half away from zero
  }
}

}  // namespace tandem::quant
