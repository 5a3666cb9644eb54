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

constexpr Isa kIsa = Isa::Avx512;
constexpr int kTileTokens = 8;  // accumulators: 8 zmm integer sums + 8 zmm float sums
constexpr int kTileRows = 16;   // the whole panel: one zmm of floats

template <class P>
constexpr bool kHasPanel = true;

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

#include "backend/cpu/x86/panel_x86.inc"

template <class P>
void finish_panel(Panel&) {}  // vpdpbusd takes the unsigned codes as they are

// ---- the token tile ----------------------------------------------------------------------------------

// Q8_K activations (256-element blocks) have one scale per block: a block's groups add their sums scaled
// by the weights' group scales (one FMA per group and token), and the activation scale multiplies that
// once per block; per group, the two float steps of a 32-element block (Q8_0) would cost half again as
// many multiplies as the 4 vpdpbusd of a 16-element group (Q6_K, Q3_K, Q2_K).
template <class P, int NT>
void tile(const Panel& p, int64_t t0, int, int nr, float* y, size_t y_stride) {
  constexpr int kSteps = P::kGroup / 4;
  constexpr int kPer = P::kBlock / P::kGroup;  // groups under one activation scale
  const int64_t n_groups = p.n_groups;
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const int8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = p.aq + (t0 + t) * p.n;
  for (int64_t g0 = 0; g0 < n_groups; g0 += kPer) {
    __m512 blk[NT];  // the block's sum before the activation scale
    for (int t = 0; t < NT; ++t) blk[t] = _mm512_setzero_ps();
    for (int64_t g = g0; g < g0 + kPer; ++g) {
      __m512i is[NT];
      for (int t = 0; t < NT; ++t) is[t] = _mm512_set1_epi32(p.bias[(t0 + t) * n_groups + g]);
      const uint8_t* c = p.codes + g * P::kGroup * 16;
      for (int s = 0; s < kSteps; ++s) {
        const __m512i wv = _mm512_load_si512(c + 64 * s);
        for (int t = 0; t < NT; ++t) {
          int32_t a4;
          std::memcpy(&a4, a[t] + g * P::kGroup + 4 * s, 4);
          is[t] = _mm512_dpbusd_epi32(is[t], wv, _mm512_set1_epi32(a4));
        }
      }
      const __m512 ws = _mm512_load_ps(p.wscale + g * 16);
      for (int t = 0; t < NT; ++t) blk[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[t]), ws, blk[t]);
      if constexpr (P::kMin) {
        const __m512 wm = _mm512_load_ps(p.wmin + g * 16);
        for (int t = 0; t < NT; ++t)
          acc[t] = _mm512_fnmadd_ps(wm, _mm512_set1_ps(p.amin[(t0 + t) * n_groups + g]), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_fmadd_ps(blk[t], _mm512_set1_ps(p.ascale[(t0 + t) * n_groups + g0]), acc[t]);
  }
  const __mmask16 keep = __mmask16((1u << nr) - 1);
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * y_stride, keep, acc[t]);
}

}  // namespace

// Reached for Zen's table only (kernels.cpp), so its entries are kept in g_small[Zen].
void fill_panel_gemm(CpuKernels& k) { fill_panels<Uarch::Zen>(k); }

}  // namespace tandem::cpu::avx512
