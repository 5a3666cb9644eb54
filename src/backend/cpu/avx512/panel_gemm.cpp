// AVX-512 VNNI prefill GEMM for CPUs without AMX (AMD Zen 4/5, Intel before Sapphire Rapids): 16 weight
// rows are unpacked once per call into a "VNNI panel" (codes as unsigned bytes, [n_in / 4][16 rows][4]),
// then every token tile runs one vpdpbusd per 4 inputs x 16 rows x token, its activation bytes taken with
// an embedded broadcast. The panel is AMX's B-tile layout; this is the same product in zmm registers.
//
// Per row r and token t, with the weights' scale groups g (a block or sub-block):
//   y = sum_g wscale[g][r] * ascale[t][g] * (sum_{k in g} u[r][k] a[t][k] + bias[t][g])
//       - sum_g wmin[g][r] * amin[t][g]
// where u = code + kOffset >= 0 (vpdpbusd multiplies u8 by s8) and bias = -kOffset * sum_{k in g} a[t][k]
// undoes the offset (Q6_K's +32 is its own storage offset). Integer sums are exact.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13  // GCC bug 105593 (fixed in 13)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::cpu::avx512 {
namespace {

using tandem::quant::BlockIQ4_NL;
using tandem::quant::BlockIQ4_XS;
using tandem::quant::BlockQ2_K;
using tandem::quant::BlockQ3_K;
using tandem::quant::BlockQ4_0;
using tandem::quant::BlockQ4_K;
using tandem::quant::BlockQ5_K;
using tandem::quant::BlockQ5_0;
using tandem::quant::BlockQ6_K;
using tandem::quant::BlockQ8_0;
using tandem::quant::BlockQ8_K;

constexpr int kTileTokens = 8;  // accumulators: 8 zmm integer sums + 8 zmm float sums

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

#include "backend/cpu/x86/scratch_x86.inc"
struct Scratch {
  Buffer codes, rows, wscale, wmin, aq, bias, ascale, amin;
};
thread_local Scratch t_scratch;

// ---- weight formats: one row's block -> natural-order unsigned codes, per-group scales ----------------
// kGroup: elements per scale group; kMin: has a min term (Q4_K). unpack writes kBlock codes and
// kBlock / kGroup scales (and mins).

// The 6-bit scales and mins of Q4_K / Q5_K (ggml's get_scale_min_k4), times d and dmin.
template <class W>
void scales_mins_k4(const W& b, float* scale, float* min) {
  const uint8_t* q = b.scales;
  const float d = h2f(b.d), dmin = h2f(b.dmin);
  for (int j = 0; j < 8; ++j) {
    const int sc = j < 4 ? q[j] & 63 : (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    const int m = j < 4 ? q[j + 4] & 63 : (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    scale[j] = d * float(sc), min[j] = dmin * float(m);
  }
}

struct PQ4_K {
  using W = BlockQ4_K;
  static constexpr int kBlock = 256, kGroup = 32, kOffset = 0;
  static constexpr bool kMin = true;
  static void unpack(const W& b, uint8_t* u, float* scale, float* min) {
    scales_mins_k4(b, scale, min);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int j = 0; j < 4; ++j) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * j));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + 64 * j), _mm256_and_si256(v, m4));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(u + 64 * j + 32), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    }
  }
};

struct PQ5_K {
  using W = BlockQ5_K;
  static constexpr int kBlock = 256, kGroup = 32, kOffset = 0;
  static constexpr bool kMin = true;
  static void unpack(const W& b, uint8_t* u, float* scale, float* min) {
    scales_mins_k4(b, scale, min);
    for (int j = 0; j < 4; ++j)  // sub-blocks 2j (low nibbles) and 2j + 1 (high), fifth bit from qh
      for (int l = 0; l < 32; ++l) {
        u[64 * j + l] = uint8_t((b.qs[32 * j + l] & 0xf) | ((b.qh[l] >> (2 * j)) & 1) << 4);
        u[64 * j + 32 + l] = uint8_t((b.qs[32 * j + l] >> 4) | ((b.qh[l] >> (2 * j + 1)) & 1) << 4);
      }
  }
};

// Q2_K / Q3_K: element e = 128 n + 32 j + l has its two bits at qs[32 n + l] >> 2 j
inline int code2(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

struct PQ2_K {
  using W = BlockQ2_K;
  static constexpr int kBlock = 256, kGroup = 16, kOffset = 0;
  static constexpr bool kMin = true;
  static void unpack(const W& b, uint8_t* u, float* scale, float* min) {
    const float d = h2f(b.d), dmin = h2f(b.dmin);
    for (int g = 0; g < 16; ++g) scale[g] = d * float(b.scales[g] & 0xf), min[g] = dmin * float(b.scales[g] >> 4);
    for (int e = 0; e < 256; ++e) u[e] = uint8_t(code2(b.qs, e));
  }
};

struct PQ3_K {
  using W = BlockQ3_K;
  static constexpr int kBlock = 256, kGroup = 16, kOffset = 4;  // q - 4 * !hbit = u - 4
  static constexpr bool kMin = false;
  static void unpack(const W& b, uint8_t* u, float* scale, float*) {
    const float d = h2f(b.d);
    for (int g = 0; g < 16; ++g) {  // 6-bit scales: low nibbles in bytes 0..7, high bit pairs in 8..11
      const int lo = g < 8 ? b.scales[g] & 0xf : b.scales[g - 8] >> 4;
      const int hi = (b.scales[8 + g % 4] >> (2 * (g / 4))) & 3;
      scale[g] = d * float((lo | hi << 4) - 32);
    }
    for (int e = 0; e < 256; ++e) u[e] = uint8_t(code2(b.qs, e) | ((b.hmask[e % 32] >> (e / 32)) & 1) << 2);
  }
};

struct PIQ4_XS {
  using W = BlockIQ4_XS;
  static constexpr int kBlock = 256, kGroup = 32, kOffset = 128;  // the table's values + 128
  static constexpr bool kMin = false;
  static void unpack(const W& b, uint8_t* u, float* scale, float*) {
    const float d = h2f(b.d);
    for (int j = 0; j < 8; ++j) {
      const int ls = ((b.scales_l[j / 2] >> (4 * (j % 2))) & 0xf) | ((b.scales_h >> (2 * j)) & 3) << 4;
      scale[j] = d * float(ls - 32);
      for (int l = 0; l < 16; ++l) {
        u[32 * j + l] = uint8_t(tandem::quant::kIq4Values[b.qs[16 * j + l] & 0xf] + 128);
        u[32 * j + 16 + l] = uint8_t(tandem::quant::kIq4Values[b.qs[16 * j + l] >> 4] + 128);
      }
    }
  }
};

struct PQ6_K {
  using W = BlockQ6_K;
  static constexpr int kBlock = 256, kGroup = 16, kOffset = 32;  // codes are stored + 32
  static constexpr bool kMin = false;
  static void unpack(const W& b, uint8_t* u, float* scale, float*) {
    const float d = h2f(b.d);
    for (int g = 0; g < 16; ++g) scale[g] = d * b.scales[g];
    for (int c = 0; c < 2; ++c) {  // ggml's dequantize_row_q6_K, 128 elements per half
      const uint8_t* ql = b.ql + 64 * c;
      const uint8_t* qh = b.qh + 32 * c;
      uint8_t* o = u + 128 * c;
      for (int l = 0; l < 32; ++l) {
        o[l] = uint8_t((ql[l] & 0xf) | ((qh[l] >> 0) & 3) << 4);
        o[l + 32] = uint8_t((ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4);
        o[l + 64] = uint8_t((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
        o[l + 96] = uint8_t((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
      }
    }
  }
};

template <class Block, int kOff>
struct Legacy32 {
  using W = Block;
  static constexpr int kBlock = 32, kGroup = 32, kOffset = kOff;
  static constexpr bool kMin = false;
};
struct PQ4_0 : Legacy32<BlockQ4_0, 8> {
  static void unpack(const W& b, uint8_t* u, float* scale, float*) {
    scale[0] = h2f(b.d);
    for (int j = 0; j < 16; ++j) u[j] = b.qs[j] & 0xf, u[j + 16] = b.qs[j] >> 4;
  }
};
struct PQ5_0 : Legacy32<BlockQ5_0, 16> {
  static void unpack(const W& b, uint8_t* u, float* scale, float*) {
    scale[0] = h2f(b.d);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    for (int j = 0; j < 16; ++j) {
      u[j] = uint8_t((b.qs[j] & 0xf) | ((qh >> j) & 1) << 4);
      u[j + 16] = uint8_t((b.qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    }
  }
};
struct PQ8_0 : Legacy32<BlockQ8_0, 128> {
  static void unpack(const W& b, uint8_t* u, float* scale, float*) {
    scale[0] = h2f(b.d);
    for (int j = 0; j < 32; ++j) u[j] = uint8_t(b.qs[j] + 128);
  }
};
struct PIQ4_NL : Legacy32<BlockIQ4_NL, 128> {
  static void unpack(const W& b, uint8_t* u, float* scale, float*) {
    scale[0] = h2f(b.d);
    for (int j = 0; j < 16; ++j) {
      u[j] = uint8_t(tandem::quant::kIq4Values[b.qs[j] & 0xf] + 128);
      u[j + 16] = uint8_t(tandem::quant::kIq4Values[b.qs[j] >> 4] + 128);
    }
  }
};

// ---- activation formats: Q8_K (k-quants) and Q8_0 (32-element blocks) as contiguous int8 + per group ----

template <class P>
struct ActPrep;

template <class P>
  requires(P::kBlock == 256)
struct ActPrep<P> {
  static void run(int64_t n, const uint8_t* x, int8_t* aq, int32_t* bias, float* ascale, float* amin) {
    const auto* a = reinterpret_cast<const BlockQ8_K*>(x);
    constexpr int kPer = 256 / P::kGroup;  // groups per super-block
    for (int64_t b = 0; b < n / 256; ++b) {
      std::memcpy(aq + 256 * b, a[b].qs, 256);
      for (int g = 0; g < kPer; ++g) {
        int s = 0;  // bsums are per 16 elements
        for (int h = 0; h < P::kGroup / 16; ++h) s += a[b].bsums[g * (P::kGroup / 16) + h];
        bias[b * kPer + g] = -P::kOffset * s;
        ascale[b * kPer + g] = a[b].d;
        if constexpr (P::kMin) amin[b * kPer + g] = a[b].d * float(s);
      }
    }
  }
};

template <class P>
  requires(P::kBlock == 32)
struct ActPrep<P> {
  static void run(int64_t n, const uint8_t* x, int8_t* aq, int32_t* bias, float* ascale, float*) {
    const auto* a = reinterpret_cast<const BlockQ8_0*>(x);
    for (int64_t b = 0; b < n / 32; ++b) {
      std::memcpy(aq + 32 * b, a[b].qs, 32);
      int s = 0;
      for (int j = 0; j < 32; ++j) s += a[b].qs[j];
      bias[b] = -P::kOffset * s;
      ascale[b] = h2f(a[b].d);
    }
  }
};

// ---- panel unpack: 16 rows (nr real, the rest zero) -> codes [n / 4][16][4], scales [groups][16] -------

template <class P>
void unpack_panel(const uint8_t* w, size_t w_stride, int nr, int64_t n, uint8_t* codes, float* wscale,
                  float* wmin, uint8_t* rows) {
  const int64_t nb = n / P::kBlock, n_groups = n / P::kGroup;
  constexpr int kPer = P::kBlock / P::kGroup;
  for (int64_t b = 0; b < nb; ++b) {
    // natural-order codes of the block, one 256- (or 32-) byte row each, then their dwords side by side
    for (int r = 0; r < 16; ++r) {
      float s[kPer], m[kPer];
      if (r < nr) {
        P::unpack(reinterpret_cast<const typename P::W*>(w + r * w_stride)[b], rows + r * P::kBlock, s, m);
      } else {
        std::memset(rows + r * P::kBlock, 0, P::kBlock);
        for (int g = 0; g < kPer; ++g) s[g] = m[g] = 0;
      }
      for (int g = 0; g < kPer; ++g) {
        wscale[(b * kPer + g) * 16 + r] = s[g];
        if constexpr (P::kMin) wmin[(b * kPer + g) * 16 + r] = m[g];
      }
    }
    uint32_t* out = reinterpret_cast<uint32_t*>(codes + b * P::kBlock * 16);
    for (int s = 0; s < P::kBlock / 4; ++s)
      for (int r = 0; r < 16; ++r) std::memcpy(&out[s * 16 + r], rows + r * P::kBlock + 4 * s, 4);
  }
  (void)n_groups;
}

// ---- the token tile ----------------------------------------------------------------------------------

template <class P, int NT>
void tile(int64_t n, const uint8_t* codes, const float* wscale, const float* wmin, const int8_t* aq,
          const int32_t* bias, const float* ascale, const float* amin, int64_t t0, int nr, float* y, size_t y_stride) {
  constexpr int kSteps = P::kGroup / 4;
  const int64_t n_groups = n / P::kGroup;
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const int8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = aq + (t0 + t) * n;
  for (int64_t g = 0; g < n_groups; ++g) {
    __m512i is[NT];
    for (int t = 0; t < NT; ++t) is[t] = _mm512_set1_epi32(bias[(t0 + t) * n_groups + g]);
    const uint8_t* c = codes + g * P::kGroup * 16;
    for (int s = 0; s < kSteps; ++s) {
      const __m512i wv = _mm512_load_si512(c + 64 * s);
      for (int t = 0; t < NT; ++t) {
        int32_t a4;
        std::memcpy(&a4, a[t] + g * P::kGroup + 4 * s, 4);
        is[t] = _mm512_dpbusd_epi32(is[t], wv, _mm512_set1_epi32(a4));
      }
    }
    const __m512 ws = _mm512_load_ps(wscale + g * 16);
    for (int t = 0; t < NT; ++t) {
      const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(is[t]), _mm512_set1_ps(ascale[(t0 + t) * n_groups + g]));
      acc[t] = _mm512_fmadd_ps(v, ws, acc[t]);
    }
    if constexpr (P::kMin) {
      const __m512 wm = _mm512_load_ps(wmin + g * 16);
      for (int t = 0; t < NT; ++t)
        acc[t] = _mm512_fnmadd_ps(wm, _mm512_set1_ps(amin[(t0 + t) * n_groups + g]), acc[t]);
    }
  }
  const __mmask16 keep = __mmask16((1u << nr) - 1);
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * y_stride, keep, acc[t]);
}

template <class P, int NT>
void run_tile(int nt, int64_t n, const uint8_t* codes, const float* wscale, const float* wmin, const int8_t* aq,
              const int32_t* bias, const float* ascale, const float* amin, int64_t t0, int nr, float* y,
              size_t y_stride) {
  if constexpr (NT > 1) {
    if (nt < NT) return run_tile<P, NT - 1>(nt, n, codes, wscale, wmin, aq, bias, ascale, amin, t0, nr, y, y_stride);
  }
  tile<P, NT>(n, codes, wscale, wmin, aq, bias, ascale, amin, t0, nr, y, y_stride);
}

GemmFn g_small[kWeightTypeIdLimit] = {};  // the entries this level had before: calls of few tokens

constexpr int64_t kMinTokens = 16;  // below this the decode-shaped kernels are as fast

template <class P, WeightType kType>
void panel_gemm(int64_t n, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
                int64_t n_tokens, float* y, size_t y_stride) {
  if (n_tokens < kMinTokens) return g_small[uint32_t(kType)](n, w, w_stride, n_rows, x, x_stride, n_tokens, y, y_stride);
  Scratch& s = t_scratch;
  const int64_t n_groups = n / P::kGroup;
  int8_t* aq = s.aq.get<int8_t>(size_t(n_tokens * n));
  int32_t* bias = s.bias.get<int32_t>(size_t(n_tokens * n_groups));
  float* ascale = s.ascale.get<float>(size_t(n_tokens * n_groups));
  float* amin = s.amin.get<float>(size_t(n_tokens * n_groups));
  const auto* xb = static_cast<const uint8_t*>(x);
  for (int64_t t = 0; t < n_tokens; ++t)
    ActPrep<P>::run(n, xb + t * x_stride, aq + t * n, bias + t * n_groups, ascale + t * n_groups, amin + t * n_groups);
  uint8_t* codes = s.codes.get<uint8_t>(size_t(n) * 16);
  float* wscale = s.wscale.get<float>(size_t(n_groups) * 16);
  float* wmin = s.wmin.get<float>(size_t(n_groups) * 16);
  uint8_t* rows = s.rows.get<uint8_t>(16 * P::kBlock);
  const auto* wb = static_cast<const uint8_t*>(w);
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    const int nr = int(n_rows - r0 < 16 ? n_rows - r0 : 16);
    unpack_panel<P>(wb + r0 * w_stride, w_stride, nr, n, codes, wscale, wmin, rows);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
      const int nt = int(n_tokens - t0 < kTileTokens ? n_tokens - t0 : kTileTokens);
      run_tile<P, kTileTokens>(nt, n, codes, wscale, wmin, aq, bias, ascale, amin, t0, nr, y + t0 * y_stride + r0,
                               y_stride);
    }
  }
}

}  // namespace

void fill_panel_gemm(CpuKernels& k) {
  using WT = WeightType;
  auto set = [&](WT t, GemmFn g) {
    g_small[uint32_t(t)] = k.gemm[uint32_t(t)];
    k.gemm[uint32_t(t)] = g;
    k.gemm_isa[uint32_t(t)] = Isa::Avx512;
    k.panel[uint32_t(t)] = true;
  };
  set(WT::Q2_K, panel_gemm<PQ2_K, WT::Q2_K>);
  set(WT::Q3_K, panel_gemm<PQ3_K, WT::Q3_K>);
  set(WT::Q4_K, panel_gemm<PQ4_K, WT::Q4_K>);
  set(WT::Q5_K, panel_gemm<PQ5_K, WT::Q5_K>);
  set(WT::IQ4_XS, panel_gemm<PIQ4_XS, WT::IQ4_XS>);
  set(WT::Q6_K, panel_gemm<PQ6_K, WT::Q6_K>);
  set(WT::Q4_0, panel_gemm<PQ4_0, WT::Q4_0>);
  set(WT::Q5_0, panel_gemm<PQ5_0, WT::Q5_0>);
  set(WT::Q8_0, panel_gemm<PQ8_0, WT::Q8_0>);
  set(WT::IQ4_NL, panel_gemm<PIQ4_NL, WT::IQ4_NL>);
}

}  // namespace tandem::cpu::avx512
