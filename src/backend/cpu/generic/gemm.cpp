// Portable scalar matmul kernels: one integer dot product per (row, token), the reference the SIMD
// levels are tested against. Same activation formats and integer sums as llama.cpp's *_q8_* vec_dots
// (ggml-cpu/quants.c, generic paths); only the float accumulation order may differ.
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"
#include "quant/formats.h"
#include "quant/fp16.h"
#include "quant/iq1_grid.h"
#include "quant/iq_grids.h"

namespace tandem::cpu::generic {
namespace {

using namespace tandem::quant;

inline float h2f(uint16_t h) { return fp16_to_f32(h); }

// ---- 32-element blocks --------------------------------------------------------------------------

float dot_q4_0(int64_t nb, const BlockQ4_0* w, const BlockQ8_0* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int j = 0; j < 16; ++j)
      isum += ((w[i].qs[j] & 0xf) - 8) * a[i].qs[j] + ((w[i].qs[j] >> 4) - 8) * a[i].qs[j + 16];
    sum += float(isum) * (h2f(w[i].d) * h2f(a[i].d));
  }
  return sum;
}

float dot_q4_1(int64_t nb, const BlockQ4_1* w, const BlockQ8_1* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int j = 0; j < 16; ++j) isum += (w[i].qs[j] & 0xf) * a[i].qs[j] + (w[i].qs[j] >> 4) * a[i].qs[j + 16];
    sum += float(isum) * (h2f(w[i].d) * h2f(a[i].d)) + h2f(w[i].m) * h2f(a[i].s);
  }
  return sum;
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

float dot_q5_0(int64_t nb, const BlockQ5_0* w, const BlockQ8_0* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    const uint32_t qh = load_u32(w[i].qh);
    int isum = 0;
    for (int j = 0; j < 16; ++j) {
      const int q0 = int((w[i].qs[j] & 0xf) | ((qh >> j) & 1) << 4) - 16;
      const int q1 = int((w[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16;
      isum += q0 * a[i].qs[j] + q1 * a[i].qs[j + 16];
    }
    sum += float(isum) * (h2f(w[i].d) * h2f(a[i].d));
  }
  return sum;
}

float dot_q5_1(int64_t nb, const BlockQ5_1* w, const BlockQ8_1* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    const uint32_t qh = load_u32(w[i].qh);
    int isum = 0;
    for (int j = 0; j < 16; ++j) {
      const int q0 = int((w[i].qs[j] & 0xf) | ((qh >> j) & 1) << 4);
      const int q1 = int((w[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
      isum += q0 * a[i].qs[j] + q1 * a[i].qs[j + 16];
    }
    sum += float(isum) * (h2f(w[i].d) * h2f(a[i].d)) + h2f(w[i].m) * h2f(a[i].s);
  }
  return sum;
}

float dot_q8_0(int64_t nb, const BlockQ8_0* w, const BlockQ8_0* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int j = 0; j < 32; ++j) isum += w[i].qs[j] * a[i].qs[j];
    sum += float(isum) * (h2f(w[i].d) * h2f(a[i].d));
  }
  return sum;
}

float dot_iq4_nl(int64_t nb, const BlockIQ4_NL* w, const BlockQ8_0* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int j = 0; j < 16; ++j)
      isum += kIq4Values[w[i].qs[j] & 0xf] * a[i].qs[j] + kIq4Values[w[i].qs[j] >> 4] * a[i].qs[j + 16];
    sum += float(isum) * (h2f(w[i].d) * h2f(a[i].d));
  }
  return sum;
}

// ---- 256-element super-blocks against Q8_K ------------------------------------------------------
// Element e of a block: code and scale as in quant/kquants.cpp's dequantizers; sums per sub-block.

float dot_q2_K(int64_t nb, const BlockQ2_K* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0, msum = 0;
    for (int s = 0; s < 16; ++s) {
      int sub = 0;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * s + l;
        sub += ((w[i].qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3) * a[i].qs[e];
      }
      isum += (w[i].scales[s] & 0xf) * sub;
      msum += (w[i].scales[s] >> 4) * a[i].bsums[s];
    }
    sum += a[i].d * (h2f(w[i].d) * float(isum) - h2f(w[i].dmin) * float(msum));
  }
  return sum;
}

int q3_scale(const uint8_t* s, int j) {
  const int lo = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (lo | hi << 4) - 32;
}

float dot_q3_K(int64_t nb, const BlockQ3_K* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int s = 0; s < 16; ++s) {
      int sub = 0;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * s + l;
        const int q = (w[i].qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        const int high = (w[i].hmask[e % 32] >> (e / 32)) & 1;
        sub += (q - (high ? 0 : 4)) * a[i].qs[e];
      }
      isum += q3_scale(w[i].scales, s) * sub;
    }
    sum += a[i].d * h2f(w[i].d) * float(isum);
  }
  return sum;
}

float dot_q4_K(int64_t nb, const BlockQ4_K* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0, msum = 0;
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      unpack_scale_min_k4(s, w[i].scales, &sc, &m);
      int sub = 0;
      for (int l = 0; l < 32; ++l) {
        const int e = 32 * s + l;
        sub += ((w[i].qs[(e / 64) * 32 + l] >> (4 * (s % 2))) & 0xf) * a[i].qs[e];
      }
      isum += sc * sub;
      msum += m * (a[i].bsums[2 * s] + a[i].bsums[2 * s + 1]);
    }
    sum += a[i].d * (h2f(w[i].d) * float(isum) - h2f(w[i].dmin) * float(msum));
  }
  return sum;
}

float dot_q5_K(int64_t nb, const BlockQ5_K* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0, msum = 0;
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      unpack_scale_min_k4(s, w[i].scales, &sc, &m);
      int sub = 0;
      for (int l = 0; l < 32; ++l) {
        const int e = 32 * s + l;
        const int q = ((w[i].qs[(e / 64) * 32 + l] >> (4 * (s % 2))) & 0xf) | ((w[i].qh[l] >> s) & 1) << 4;
        sub += q * a[i].qs[e];
      }
      isum += sc * sub;
      msum += m * (a[i].bsums[2 * s] + a[i].bsums[2 * s + 1]);
    }
    sum += a[i].d * (h2f(w[i].d) * float(isum) - h2f(w[i].dmin) * float(msum));
  }
  return sum;
}

float dot_q6_K(int64_t nb, const BlockQ6_K* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int s = 0; s < 16; ++s) {
      int sub = 0;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * s + l;
        const int c = e / 128, quarter = (e % 128) / 32, k = e % 32;
        const uint8_t* ql = w[i].ql + 64 * c;
        const uint8_t* qh = w[i].qh + 32 * c;
        const int lo = (ql[k + 32 * (quarter & 1)] >> (4 * (quarter >> 1))) & 0xf;
        const int hi = (qh[k] >> (2 * quarter)) & 3;
        sub += ((lo | hi << 4) - 32) * a[i].qs[e];
      }
      isum += w[i].scales[s] * sub;
    }
    sum += a[i].d * h2f(w[i].d) * float(isum);
  }
  return sum;
}

float dot_iq4_xs(int64_t nb, const BlockIQ4_XS* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int s = 0; s < 8; ++s) {
      const int ls = ((w[i].scales_l[s / 2] >> (4 * (s % 2))) & 0xf) | ((w[i].scales_h >> (2 * s)) & 3) << 4;
      const uint8_t* qs = w[i].qs + 16 * s;
      const int8_t* q8 = a[i].qs + 32 * s;
      int sub = 0;
      for (int j = 0; j < 16; ++j) sub += kIq4Values[qs[j] & 0xf] * q8[j] + kIq4Values[qs[j] >> 4] * q8[j + 16];
      isum += (ls - 32) * sub;
    }
    sum += a[i].d * h2f(w[i].d) * float(isum);
  }
  return sum;
}

// ---- lattice i-quants against Q8_K -----------------------------------------------------------------
// The dequantizers' scales as integers over a power of two: IQ2_* d (2s + 1) / 8, IQ3_XXS d (2s + 1) / 4,
// IQ3_S d (2s + 1), IQ1_* d (2s + 1) (8 grid +- 1) / 8; the integer sums are exact.

// sum_j grid[j] * sign_j * q[j] over the n bytes of a grid point (signs: bit j negates element j).
template <int kN, class Point>
int signed_point_dot(Point point, uint8_t signs, const int8_t* q) {
  int sum = 0;
  for (int j = 0; j < kN; ++j) {
    const int v = int(uint8_t(point >> (8 * j))) * q[j];
    sum += signs >> j & 1 ? -v : v;
  }
  return sum;
}

float dot_iq2_xxs(int64_t nb, const BlockIQ2_XXS* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int s = 0; s < 8; ++s) {
      uint32_t aux[2];
      std::memcpy(aux, w[i].qs + 4 * s, 8);
      int sub = 0;
      for (int g = 0; g < 4; ++g)
        sub += signed_point_dot<8>(kIq2xxsGrid[aux[0] >> (8 * g) & 255], kIqSigns[aux[1] >> (7 * g) & 127],
                                   a[i].qs + 32 * s + 8 * g);
      isum += int(2 * (aux[1] >> 28) + 1) * sub;
    }
    sum += 0.125f * h2f(w[i].d) * a[i].d * float(isum);
  }
  return sum;
}

float dot_iq2_xs(int64_t nb, const BlockIQ2_XS* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int g = 0; g < 32; ++g)
      isum += (2 * (w[i].scales[g / 4] >> (4 * (g / 2 % 2)) & 15) + 1) *
              signed_point_dot<8>(kIq2xsGrid[w[i].qs[g] & 511], kIqSigns[w[i].qs[g] >> 9], a[i].qs + 8 * g);
    sum += 0.125f * h2f(w[i].d) * a[i].d * float(isum);
  }
  return sum;
}

float dot_iq2_s(int64_t nb, const BlockIQ2_S* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int g = 0; g < 32; ++g) {
      const int index = w[i].qs[g] | (w[i].qh[g / 4] >> (2 * (g % 4)) & 3) << 8;
      isum += (2 * (w[i].scales[g / 4] >> (4 * (g / 2 % 2)) & 15) + 1) *
              signed_point_dot<8>(kIq2sGrid[index], w[i].qs[32 + g], a[i].qs + 8 * g);
    }
    sum += 0.125f * h2f(w[i].d) * a[i].d * float(isum);
  }
  return sum;
}

float dot_iq3_xxs(int64_t nb, const BlockIQ3_XXS* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int s = 0; s < 8; ++s) {
      uint32_t aux;
      std::memcpy(&aux, w[i].qs + 64 + 4 * s, 4);
      int sub = 0;
      for (int g = 0; g < 8; ++g)
        sub += signed_point_dot<4>(kIq3xxsGrid[w[i].qs[8 * s + g]],
                                   kIqSigns[aux >> (7 * (g / 2)) & 127] >> (4 * (g % 2)), a[i].qs + 32 * s + 4 * g);
      isum += int(2 * (aux >> 28) + 1) * sub;
    }
    sum += 0.25f * h2f(w[i].d) * a[i].d * float(isum);
  }
  return sum;
}

float dot_iq3_s(int64_t nb, const BlockIQ3_S* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int g = 0; g < 64; ++g) {
      const uint32_t point = kIq3sGrid[w[i].qs[g] | (w[i].qh[g / 8] >> (g % 8) & 1) << 8];
      isum += (2 * (w[i].scales[g / 16] >> (4 * (g / 8 % 2)) & 15) + 1) *
              signed_point_dot<4>(point, w[i].signs[g / 2] >> (4 * (g % 2)), a[i].qs + 4 * g);
    }
    sum += h2f(w[i].d) * a[i].d * float(isum);
  }
  return sum;
}

// sum_j grid[j] * q[j] over an IQ1 grid point (int8 bytes -1, 0, 1) and sum_j q[j].
inline void iq1_point_dot(uint64_t point, const int8_t* q, int* gq, int* qsum) {
  for (int j = 0; j < 8; ++j) {
    *gq += int8_t(point >> (8 * j)) * q[j];
    *qsum += q[j];
  }
}

float dot_iq1_s(int64_t nb, const BlockIQ1_S* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int isum = 0;
    for (int s = 0; s < 8; ++s) {
      const uint16_t qh = w[i].qh[s];
      int gq = 0, qsum = 0;
      for (int g = 0; g < 4; ++g)
        iq1_point_dot(kIq1sGrid[w[i].qs[4 * s + g] | (qh >> (3 * g) & 7) << 8], a[i].qs + 32 * s + 8 * g, &gq, &qsum);
      isum += (2 * (qh >> 12 & 7) + 1) * (8 * gq + (qh & 0x8000 ? -qsum : qsum));
    }
    sum += 0.125f * h2f(w[i].d) * a[i].d * float(isum);
  }
  return sum;
}

float dot_iq1_m(int64_t nb, const BlockIQ1_M* w, const BlockQ8_K* a) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    uint16_t sc[4];
    std::memcpy(sc, w[i].scales, 8);
    const uint16_t d = uint16_t((sc[0] >> 12) | (sc[1] >> 8 & 0xf0) | (sc[2] >> 4 & 0xf00) | (sc[3] & 0xf000));
    int isum = 0;
    for (int g = 0; g < 32; ++g) {
      const uint8_t nibble = w[i].qh[g / 2] >> (4 * (g % 2)) & 15;
      int gq = 0, qsum = 0;
      iq1_point_dot(kIq1sGrid[w[i].qs[g] | (nibble & 7) << 8], a[i].qs + 8 * g, &gq, &qsum);
      isum += (2 * (sc[g / 8] >> (3 * (g / 2 % 4)) & 7) + 1) * (8 * gq + (nibble & 8 ? -qsum : qsum));
    }
    sum += 0.125f * h2f(d) * a[i].d * float(isum);
  }
  return sum;
}

// ---- plain float formats (n is the element count) -----------------------------------------------

// Accumulated in double, as ggml's scalar f16 dot (ggml_float): no summation-order error to speak of.
float dot_f32(int64_t n, const float* w, const float* a) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(w[i]) * a[i];
  return float(sum);
}
float dot_f16(int64_t n, const uint16_t* w, const uint16_t* a) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(fp16_to_f32(w[i])) * fp16_to_f32(a[i]);
  return float(sum);
}
float dot_bf16(int64_t n, const uint16_t* w, const uint16_t* a) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(bf16_to_f32(w[i])) * bf16_to_f32(a[i]);
  return float(sum);
}

// y[t][r] = Dot(row r, token t). kBlock: elements per block (1 for float formats, where Dot takes n).
template <class W, class A, int kBlock, float (*Dot)(int64_t, const W*, const A*)>
void gemm(int64_t n_in, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
          int64_t n_tokens, float* y, size_t y_stride) {
  const int64_t nb = n_in / kBlock;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const auto* a = reinterpret_cast<const A*>(static_cast<const uint8_t*>(x) + t * x_stride);
    for (int64_t r = 0; r < n_rows; ++r) {
      const auto* wr = reinterpret_cast<const W*>(static_cast<const uint8_t*>(w) + r * w_stride);
      y[t * y_stride + r] = Dot(nb, wr, a);
    }
  }
}

}  // namespace

void quantize_act_q8_0(const float* x, void* out, int64_t n);
void quantize_act_q8_1(const float* x, void* out, int64_t n);
void quantize_act_q8_K(const float* x, void* out, int64_t n);
void quantize_act_f32(const float* x, void* out, int64_t n);
void quantize_act_f16(const float* x, void* out, int64_t n);
void quantize_act_bf16(const float* x, void* out, int64_t n);

void fill_kernels(CpuKernels& k) {
  auto set = [&](WeightType t, QuantizeActFn q, GemmFn g) {
    k.quantize_act[uint32_t(t)] = q;
    k.gemm[uint32_t(t)] = g;
    k.gemm_isa[uint32_t(t)] = Isa::Generic;
  };
  using WT = WeightType;
  set(WT::F32, quantize_act_f32, gemm<float, float, 1, dot_f32>);
  set(WT::F16, quantize_act_f16, gemm<uint16_t, uint16_t, 1, dot_f16>);
  set(WT::BF16, quantize_act_bf16, gemm<uint16_t, uint16_t, 1, dot_bf16>);
  set(WT::Q4_0, quantize_act_q8_0, gemm<BlockQ4_0, BlockQ8_0, 32, dot_q4_0>);
  set(WT::Q4_1, quantize_act_q8_1, gemm<BlockQ4_1, BlockQ8_1, 32, dot_q4_1>);
  set(WT::Q5_0, quantize_act_q8_0, gemm<BlockQ5_0, BlockQ8_0, 32, dot_q5_0>);
  set(WT::Q5_1, quantize_act_q8_1, gemm<BlockQ5_1, BlockQ8_1, 32, dot_q5_1>);
  set(WT::Q8_0, quantize_act_q8_0, gemm<BlockQ8_0, BlockQ8_0, 32, dot_q8_0>);
  set(WT::IQ4_NL, quantize_act_q8_0, gemm<BlockIQ4_NL, BlockQ8_0, 32, dot_iq4_nl>);
  set(WT::Q2_K, quantize_act_q8_K, gemm<BlockQ2_K, BlockQ8_K, 256, dot_q2_K>);
  set(WT::Q3_K, quantize_act_q8_K, gemm<BlockQ3_K, BlockQ8_K, 256, dot_q3_K>);
  set(WT::Q4_K, quantize_act_q8_K, gemm<BlockQ4_K, BlockQ8_K, 256, dot_q4_K>);
  set(WT::Q5_K, quantize_act_q8_K, gemm<BlockQ5_K, BlockQ8_K, 256, dot_q5_K>);
  set(WT::Q6_K, quantize_act_q8_K, gemm<BlockQ6_K, BlockQ8_K, 256, dot_q6_K>);
  set(WT::IQ4_XS, quantize_act_q8_K, gemm<BlockIQ4_XS, BlockQ8_K, 256, dot_iq4_xs>);
  set(WT::IQ2_XXS, quantize_act_q8_K, gemm<BlockIQ2_XXS, BlockQ8_K, 256, dot_iq2_xxs>);
  set(WT::IQ2_XS, quantize_act_q8_K, gemm<BlockIQ2_XS, BlockQ8_K, 256, dot_iq2_xs>);
  set(WT::IQ2_S, quantize_act_q8_K, gemm<BlockIQ2_S, BlockQ8_K, 256, dot_iq2_s>);
  set(WT::IQ3_XXS, quantize_act_q8_K, gemm<BlockIQ3_XXS, BlockQ8_K, 256, dot_iq3_xxs>);
  set(WT::IQ3_S, quantize_act_q8_K, gemm<BlockIQ3_S, BlockQ8_K, 256, dot_iq3_s>);
  set(WT::IQ1_S, quantize_act_q8_K, gemm<BlockIQ1_S, BlockQ8_K, 256, dot_iq1_s>);
  set(WT::IQ1_M, quantize_act_q8_K, gemm<BlockIQ1_M, BlockQ8_K, 256, dot_iq1_m>);
}

}  // namespace tandem::cpu::generic
