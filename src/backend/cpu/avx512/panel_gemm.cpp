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

constexpr int kTileTokens = 8;  // accumulators: 8 zmm integer sums + 8 zmm float sums

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

#include "backend/cpu/x86/scratch_x86.inc"
struct Scratch {
  Buffer codes, rows, wscale, wmin, aq, bias, ascale, amin;
};
thread_local Scratch t_scratch;

#include "backend/cpu/x86/panel_x86.inc"

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
