// KV cache rows in the 4- and 5-bit block formats (Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL) with least-squares
// scales: the blocks llama.cpp's cache holds, read by the same dequantizers, but each block's scale (and
// min) is searched for the least squared error instead of taken from the block's extreme values.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/formats.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::quant {
namespace {

// Candidate scales: the extreme-value scale times 1 + kStep * k for |k| <= kTries, each refined by least
// squares for the codes it gives: +-10%, about the span make_qx_quants (ggml-quants.c) tries for Q4_0.
// Twice as many candidates (steps of 1.25%) lowered the squared error by under 1% more.
constexpr int kTries = 4;
constexpr float kStep = 0.025f;
constexpr int kRefineRounds = 4;

// Sums over a block run in kLanes interleaved partial sums: without reassociation (no -ffast-math) that
// is what lets the compiler vectorize them.
constexpr int kLanes = 8;
inline float lane_sum(const float* acc) {
  float s = 0;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

// Round to nearest, ties to even, for |t| < 2^22, in float so that the loops below vectorize.
inline float round_even(float t) { return (t + 12582912.f) - 12582912.f; }

// Codes on an integer grid lo..hi: value() is the nearest grid value (as a float), index() its code.
struct LinearGrid {
  float lo, hi;
  float value(float t) const { return std::min(hi, std::max(lo, round_even(t))); }
  int index(float t) const { return int(value(t) - lo); }
};

// Codes on IQ4_NL's non-linear grid: the nearest of kIq4Values, the upper one on a tie.
struct Iq4Grid {
  float value(float t) const {
    float v = kIq4Values[0];
    for (int j = 1; j < 16; ++j) {
      const float a = kIq4Values[j - 1], b = kIq4Values[j];
      v += t - a >= b - t ? b - a : 0.f;
    }
    return v;
  }
  int index(float t) const { return iq4_nearest_index(t); }
};

// A block's stored scale d and min m (both fp16-exact) with its squared error: x ~ d * value + m.
struct Fit {
  float d = 0, m = 0, err = INFINITY;
};

float round_fp16(float v) { return fp16_to_f32(f32_to_fp16(v)); }

// The value with the largest magnitude, the first on ties (its sign picks the scale's).
float signed_absmax(const float* x) {
  float amax = 0, max = 0;
  for (int j = 0; j < kQK32; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// Keeps (d, m), rounded to fp16, in *best when the nearest codes under them fit x better than best's.
template <class Grid>
void try_scale(const float* x, const Grid& g, float d, float m, Fit* best) {
  d = round_fp16(d);
  m = round_fp16(m);
  if (d == 0 || !std::isfinite(d) || !std::isfinite(m)) return;
  const float id = 1 / d;
  float acc[kLanes] = {};
  for (int j = 0; j < kQK32; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float r = x[j + l] - (d * g.value((x[j + l] - m) * id) + m);
      acc[l] += r * r;
    }
  const float err = lane_sum(acc);
  if (err < best->err) *best = {d, m, err};
}

// The codes of x under a fit (grid indices).
template <class Grid>
void codes(const float* x, const Grid& g, const Fit& f, uint8_t* idx) {
  const float id = f.d != 0 ? 1 / f.d : 0.f;
  for (int j = 0; j < kQK32; ++j) idx[j] = uint8_t(g.index((x[j] - f.m) * id));
}

// value = d * code: the reference quantizer's scale ref_d first, then kTries scales either side of the
// one mapping the block's extreme (signed) onto the grid's lower end, and of the one mapping it onto
// the upper end (the reference only tries the lower: on IQ4_NL's uneven grid and on Q4_0's -8..7 the
// other end often fits better), each replaced by the least-squares scale of the codes it gives; then the
// best is refined, codes and least-squares scale in turn, while its error falls. d = 0 for an all-zero
// block (GROUP_MAX_EPS in ggml-quants.c) or one whose scales all round to 0 in fp16.
template <class Grid>
Fit fit_symmetric(const float* x, const Grid& g, float lo_end, float hi_end, float ref_d) {
  const float max = signed_absmax(x);
  Fit best;
  if (std::fabs(max) < 1e-15f) return {0, 0, 0};
  // The least-squares scale of the codes that x * id rounds to.
  auto refit = [&](float id) {
    float xq[kLanes] = {}, qq[kLanes] = {};
    for (int j = 0; j < kQK32; j += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const float q = g.value(id * x[j + l]);
        xq[l] += x[j + l] * q;
        qq[l] += q * q;
      }
    const float sum_qq = lane_sum(qq);
    return sum_qq > 0 ? lane_sum(xq) / sum_qq : 0.f;
  };
  try_scale(x, g, ref_d, 0, &best);
  for (const float extreme : {lo_end, hi_end})
    for (int k = -kTries; k <= kTries; ++k) try_scale(x, g, refit(extreme * (1 + kStep * float(k)) / max), 0, &best);
  for (int round = 0; round < kRefineRounds && best.d != 0; ++round) {
    const float before = best.err;
    try_scale(x, g, refit(1 / best.d), 0, &best);
    if (!(best.err < before)) break;
  }
  if (best.err == INFINITY) best = {0, 0, 0};
  return best;
}

// value = d * code + m, codes 0..nmax: the block's range first (the reference's choice), then scales
// either side with the codes anchored at the minimum or at the middle (shrinking the range from one end
// or both), each with the least-squares d and m of its codes. A constant block: d = 0 and m alone.
Fit fit_affine(const float* x, int nmax) {
  const LinearGrid g{0, float(nmax)};
  float lo = x[0], hi = x[0];
  for (int j = 1; j < kQK32; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  if (hi == lo) return {0, round_fp16(lo), 0};
  Fit best;
  try_scale(x, g, (hi - lo) / float(nmax), lo, &best);
  float sum_x = 0;
  for (int j = 0; j < kQK32; ++j) sum_x += x[j];
  for (int k = -kTries; k <= kTries; ++k) {
    const float id = float(nmax) * (1 + kStep * float(k)) / (hi - lo);
    for (int centered = 0; centered < 2; ++centered) {
      const float anchor = centered ? 0.5f * (lo + hi) : lo, offset = centered ? 0.5f * float(nmax) : 0.f;
      float q1[kLanes] = {}, qq[kLanes] = {}, xq[kLanes] = {};
      for (int j = 0; j < kQK32; j += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          const float q = g.value((x[j + l] - anchor) * id + offset);
          q1[l] += q;
          qq[l] += q * q;
          xq[l] += x[j + l] * q;
        }
      const float sum_q = lane_sum(q1), sum_qq = lane_sum(qq), sum_xq = lane_sum(xq);
      const float det = float(kQK32) * sum_qq - sum_q * sum_q;
      if (det <= 0) continue;
      const float d = (float(kQK32) * sum_xq - sum_q * sum_x) / det;
      try_scale(x, g, d, (sum_x - d * sum_q) / float(kQK32), &best);
    }
  }
  if (best.err == INFINITY) best = {0, round_fp16(lo), 0};
  return best;
}

// 4-bit codes packed as the legacy formats do: element j in the low nibble of byte j, j + 16 high.
void pack_nibbles(const uint8_t* idx, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((idx[j] & 0xf) | (idx[j + 16] & 0xf) << 4);
}

// The fifth bit of each code, element j at bit j (Q5_0 / Q5_1's qh, little-endian).
void pack_high_bits(const uint8_t* idx, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < kQK32; ++j) h |= uint32_t(idx[j] >> 4) << j;
  for (int b = 0; b < 4; ++b) qh[b] = uint8_t(h >> (8 * b));
}

}  // namespace

void quantize_row_kv(WeightType t, const float* src, void* dst, int64_t n) {
  const int64_t nb = n / kQK32;
  uint8_t idx[kQK32];
  switch (t) {
    case WeightType::Q4_0:
      for (int64_t i = 0; i < nb; ++i) {
        const float* x = src + i * kQK32;
        const LinearGrid g{-8, 7};
        const Fit f = fit_symmetric(x, g, -8, 7, signed_absmax(x) / -8);
        codes(x, g, f, idx);
        auto& b = static_cast<BlockQ4_0*>(dst)[i];
        b.d = f32_to_fp16(f.d);
        pack_nibbles(idx, b.qs);
      }
      break;
    case WeightType::Q5_0:
      for (int64_t i = 0; i < nb; ++i) {
        const float* x = src + i * kQK32;
        const LinearGrid g{-16, 15};
        const Fit f = fit_symmetric(x, g, -16, 15, signed_absmax(x) / -16);
        codes(x, g, f, idx);
        auto& b = static_cast<BlockQ5_0*>(dst)[i];
        b.d = f32_to_fp16(f.d);
        pack_nibbles(idx, b.qs);
        pack_high_bits(idx, b.qh);
      }
      break;
    case WeightType::IQ4_NL:
      for (int64_t i = 0; i < nb; ++i) {
        const float* x = src + i * kQK32;
        auto& b = static_cast<BlockIQ4_NL*>(dst)[i];
        quantize_row_iq4_nl(x, &b, kQK32);  // the reference block, whose scale its own search chose
        const Fit f = fit_symmetric(x, Iq4Grid{}, float(kIq4Values[0]), float(kIq4Values[15]), fp16_to_f32(b.d));
        codes(x, Iq4Grid{}, f, idx);
        b.d = f32_to_fp16(f.d);
        pack_nibbles(idx, b.qs);
      }
      break;
    case WeightType::Q4_1:
      for (int64_t i = 0; i < nb; ++i) {
        const float* x = src + i * kQK32;
        const Fit f = fit_affine(x, 15);
        codes(x, LinearGrid{0, 15}, f, idx);
        auto& b = static_cast<BlockQ4_1*>(dst)[i];
        b.d = f32_to_fp16(f.d);
        b.m = f32_to_fp16(f.m);
        pack_nibbles(idx, b.qs);
      }
      break;
    case WeightType::Q5_1:
      for (int64_t i = 0; i < nb; ++i) {
        const float* x = src + i * kQK32;
        const Fit f = fit_affine(x, 31);
        codes(x, LinearGrid{0, 31}, f, idx);
        auto& b = static_cast<BlockQ5_1*>(dst)[i];
        b.d = f32_to_fp16(f.d);
        b.m = f32_to_fp16(f.m);
        pack_nibbles(idx, b.qs);
        pack_high_bits(idx, b.qh);
      }
      break;
    default:
      quantize_row(t, src, dst, n);
      break;
  }
}

}  // namespace tandem::quant
