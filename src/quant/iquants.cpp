// IQ4_NL and IQ4_XS, the formats on the non-linear 4-bit grid kIq4Values: dequantize like gguf-py,
// quantize like llama.cpp's quantize_iq4_nl / quantize_iq4_xs without an importance matrix.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/formats.h"
#include "quant/fp16.h"

namespace tandem::quant {
namespace {

// One super-block of n_super elements in sub-blocks of 32 (quantize_row_iq4_nl_impl in ggml-quants.c,
// quant_weights == NULL): per sub-block, try 2 * n_try + 1 scales around max / kIq4Values[0] and keep
// the best x^2-weighted fit; with several sub-blocks, round their scales to 6 bits around a half
// super-scale and re-pick codes. Writes *dh, the packed codes q4 and, for IQ4_XS, the 6-bit scales.
void quantize_iq4_super_block(int n_super, const float* x, uint16_t* dh, uint8_t* q4, uint16_t* scales_h,
                              uint8_t* scales_l, int n_try) {
  constexpr int kSub = 32;
  const int n_sub = n_super / kSub;
  float scales[kQK / kSub];
  uint8_t L[kQK];
  float weight[kSub];
  std::memset(q4, 0, size_t(n_super / 2));
  *dh = f32_to_fp16(0.f);
  const float v0 = kIq4Values[0];

  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < n_sub; ++ib) {
    const float* xb = x + ib * kSub;
    uint8_t* Lb = L + ib * kSub;
    for (int j = 0; j < kSub; ++j) weight[j] = xb[j] * xb[j];
    float amax = 0, max = 0;
    for (int j = 0; j < kSub; ++j) {
      if (std::fabs(xb[j]) > amax) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    if (amax < 1e-15f) {  // GROUP_MAX_EPS
      scales[ib] = 0;
      continue;
    }
    float d = n_try > 0 ? -max / v0 : max / v0;
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < kSub; ++j) {
      const int l = iq4_nearest_index(id * xb[j]);
      Lb[j] = uint8_t(l);
      const float q = kIq4Values[l];
      sumqx += weight[j] * q * xb[j];
      sumq2 += weight[j] * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -n_try; itry <= n_try; ++itry) {
      id = float(itry + kIq4Values[0]) / max;
      sumqx = sumq2 = 0;
      for (int j = 0; j < kSub; ++j) {
        const float q = kIq4Values[iq4_nearest_index(id * xb[j])];
        sumqx += weight[j] * q * xb[j];
        sumq2 += weight[j] * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        d = sumqx / sumq2;
        best = d * sumqx;
      }
    }
    scales[ib] = d;
    if (std::fabs(d) > amax_scale) {
      amax_scale = std::fabs(d);
      max_scale = d;
    }
  }

  if (n_sub > 1) {
    *scales_h = 0;
    const float d = -max_scale / 32;  // -0.0 for an all-zero block, which the file then stores
    *dh = f32_to_fp16(d);
    const float id = d != 0 ? 1 / d : 0.f;
    for (int ib = 0; ib < n_sub; ++ib) {
      int l = std::clamp(nearest_int(id * scales[ib]), -32, 31);
      const float dl = d * float(l);
      const float idl = dl != 0 ? 1 / dl : 0.f;
      for (int j = 0; j < kSub; ++j) L[ib * kSub + j] = uint8_t(iq4_nearest_index(idl * x[ib * kSub + j]));
      l += 32;
      if (ib % 2 == 0) scales_l[ib / 2] = uint8_t(l & 0xf);
      else scales_l[ib / 2] |= uint8_t((l & 0xf) << 4);
      *scales_h |= uint16_t((l >> 4) << (2 * ib));
    }
  } else {
    *dh = f32_to_fp16(scales[0]);
    if (n_try > 0) {
      const float id = scales[0] != 0 ? 1 / scales[0] : 0;
      for (int j = 0; j < n_super; ++j) L[j] = uint8_t(iq4_nearest_index(id * x[j]));
    }
  }
  for (int i = 0; i < n_super / 32; ++i)
    for (int j = 0; j < 16; ++j) q4[16 * i + j] = uint8_t(L[32 * i + j] | L[32 * i + 16 + j] << 4);
}

constexpr int kIq4Tries = 7;  // ntry of quantize_iq4_nl / quantize_iq4_xs in ggml-quants.c

}  // namespace

void dequantize_row_iq4_nl(const BlockIQ4_NL* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK32; ++i, y += kQK32) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * float(kIq4Values[x[i].qs[j] & 0xf]);
      y[j + 16] = d * float(kIq4Values[x[i].qs[j] >> 4]);
    }
  }
}

void dequantize_row_iq4_xs(const BlockIQ4_XS* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = fp16_to_f32(x[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const int ls = ((x[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) | ((x[i].scales_h >> (2 * ib)) & 3) << 4;
      const float dl = d * float(ls - 32);
      const uint8_t* qs = x[i].qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        y[32 * ib + j] = dl * float(kIq4Values[qs[j] & 0xf]);
        y[32 * ib + j + 16] = dl * float(kIq4Values[qs[j] >> 4]);
      }
    }
  }
}

void quantize_row_iq4_nl(const float* x, BlockIQ4_NL* y, int64_t n) {
  uint16_t unused_h;
  for (int64_t i = 0; i < n / kQK32; ++i)
    quantize_iq4_super_block(kQK32, x + kQK32 * i, &y[i].d, y[i].qs, &unused_h, nullptr, kIq4Tries);
}

void quantize_row_iq4_xs(const float* x, BlockIQ4_XS* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i)
    quantize_iq4_super_block(kQK, x + kQK * i, &y[i].d, y[i].qs, &y[i].scales_h, y[i].scales_l, kIq4Tries);
}

}  // namespace tandem::quant
