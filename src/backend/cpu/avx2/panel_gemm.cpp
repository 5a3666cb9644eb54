// AVX2 prefill GEMM (AMD Zen 2/3, Intel before AVX-512): the AVX-512 level's 16-row panels
// (x86/panel_x86.inc), unpacked once per call, with the int8 products done by vpmaddubsw + vpmaddwd on
// 8 rows (one half of a panel) x 4 tokens at a time.
//
// Per row r and token t, with the weights' scale groups g, the same sum as avx512/panel_gemm.cpp:
//   y = sum_g wscale[g][r] * ascale[t][g] * (sum_{k in g} u[r][k] a[t][k] + bias[t][g])
//       - sum_g wmin[g][r] * amin[t][g]
// vpmaddubsw adds two u8 x s8 products into a saturating int16: exact while u <= 63 (2 * 63 * 128 <
// 32767), which holds for Q2_K..Q6_K, Q4_0 and Q5_0. Q8_0 and IQ4_NL store u = q + 128 and would saturate,
// so their panels keep |q| and q instead and multiply |q| by sign(q) * a (llama.cpp's AVX2 trick), exact
// for |a| <= 127 as Q8_0 activations are. IQ4_XS is left to the row kernels: its Q8_K activations reach
// -128, whose sign flip does not fit in int8.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"

namespace tandem::cpu::avx2 {
namespace {

constexpr int kTileTokens = 4;  // accumulators: 4 ymm integer sums + 4 ymm float sums of 16 registers

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

#include "backend/cpu/x86/scratch_x86.inc"
struct Scratch {
  Buffer codes, signs, rows, wscale, wmin, aq, bias, ascale, amin;
};
thread_local Scratch t_scratch;

#include "backend/cpu/x86/panel_x86.inc"

template <class P>
constexpr bool kSigned = P::kOffset == 128;  // the sign trick (file comment); its bias is not used

// Turns a signed type's panel of q + 128 into |q| (codes) and q (signs), in place of codes.
template <class P>
void split_signs(int64_t n, uint8_t* codes, uint8_t* signs) {
  const __m256i flip = _mm256_set1_epi8(char(0x80));
  for (int64_t i = 0; i < n * 16; i += 32) {
    const __m256i q = _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(codes + i)), flip);
    _mm256_store_si256(reinterpret_cast<__m256i*>(signs + i), q);
    _mm256_store_si256(reinterpret_cast<__m256i*>(codes + i), _mm256_abs_epi8(q));
  }
}

// ---- the token tile: rows 8 * half .. 8 * half + 7 of the panel ---------------------------------------

template <class P, int NT>
void tile(int64_t n, const uint8_t* codes, const uint8_t* signs, const float* wscale, const float* wmin,
          const int8_t* aq, const int32_t* bias, const float* ascale, const float* amin, int64_t t0, int half, int nr,
          float* y, size_t y_stride) {
  constexpr int kSteps = P::kGroup / 4;
  const int64_t n_groups = n / P::kGroup;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  const int8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = aq + (t0 + t) * n;
  for (int64_t g = 0; g < n_groups; ++g) {
    __m256i is[NT];
    for (int t = 0; t < NT; ++t)
      is[t] = kSigned<P> ? _mm256_setzero_si256() : _mm256_set1_epi32(bias[(t0 + t) * n_groups + g]);
    const int64_t c = g * P::kGroup * 16 + 32 * half;
    for (int s = 0; s < kSteps; ++s) {
      const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + c + 64 * s));
      __m256i sv;
      if constexpr (kSigned<P>) sv = _mm256_load_si256(reinterpret_cast<const __m256i*>(signs + c + 64 * s));
      for (int t = 0; t < NT; ++t) {
        int32_t a4;
        std::memcpy(&a4, a[t] + g * P::kGroup + 4 * s, 4);
        __m256i av = _mm256_set1_epi32(a4);
        if constexpr (kSigned<P>) av = _mm256_sign_epi8(av, sv);
        is[t] = _mm256_add_epi32(is[t], _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones));
      }
    }
    const __m256 ws = _mm256_load_ps(wscale + g * 16 + 8 * half);
    for (int t = 0; t < NT; ++t) {
      const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(is[t]), _mm256_set1_ps(ascale[(t0 + t) * n_groups + g]));
      acc[t] = _mm256_fmadd_ps(v, ws, acc[t]);
    }
    if constexpr (P::kMin) {
      const __m256 wm = _mm256_load_ps(wmin + g * 16 + 8 * half);
      for (int t = 0; t < NT; ++t)
        acc[t] = _mm256_fnmadd_ps(wm, _mm256_set1_ps(amin[(t0 + t) * n_groups + g]), acc[t]);
    }
  }
  // lanes below nr are stored: -1 - lane > -1 - nr exactly when lane < nr
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_setr_epi32(-1, -2, -3, -4, -5, -6, -7, -8), _mm256_set1_epi32(-1 - nr));
  for (int t = 0; t < NT; ++t) _mm256_maskstore_ps(y + t * y_stride, keep, acc[t]);
}

template <class P, int NT>
void run_tile(int nt, int64_t n, const uint8_t* codes, const uint8_t* signs, const float* wscale, const float* wmin,
              const int8_t* aq, const int32_t* bias, const float* ascale, const float* amin, int64_t t0, int half,
              int nr, float* y, size_t y_stride) {
  if constexpr (NT > 1) {
    if (nt < NT)
      return run_tile<P, NT - 1>(nt, n, codes, signs, wscale, wmin, aq, bias, ascale, amin, t0, half, nr, y, y_stride);
  }
  tile<P, NT>(n, codes, signs, wscale, wmin, aq, bias, ascale, amin, t0, half, nr, y, y_stride);
}

// The entries this level had before, per micro-architecture's table: calls of few tokens.
GemmFn g_small[kNumUarchs][kWeightTypeIdLimit] = {};

constexpr int64_t kMinTokens = 16;  // below this the row kernels are as fast

template <class P, WeightType kType, Uarch kUarch>
void panel_gemm(int64_t n, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
                int64_t n_tokens, float* y, size_t y_stride) {
  if (n_tokens < kMinTokens)
    return g_small[int(kUarch)][uint32_t(kType)](n, w, w_stride, n_rows, x, x_stride, n_tokens, y, y_stride);
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
  uint8_t* signs = kSigned<P> ? s.signs.get<uint8_t>(size_t(n) * 16) : nullptr;
  float* wscale = s.wscale.get<float>(size_t(n_groups) * 16);
  float* wmin = s.wmin.get<float>(size_t(n_groups) * 16);
  uint8_t* rows = s.rows.get<uint8_t>(16 * P::kBlock);
  const auto* wb = static_cast<const uint8_t*>(w);
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    const int nr = int(n_rows - r0 < 16 ? n_rows - r0 : 16);
    unpack_panel<P>(wb + r0 * w_stride, w_stride, nr, n, codes, wscale, wmin, rows);
    if constexpr (kSigned<P>) split_signs<P>(n, codes, signs);
    for (int half = 0; 8 * half < nr; ++half) {
      const int nh = nr - 8 * half < 8 ? nr - 8 * half : 8;
      for (int64_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
        const int nt = int(n_tokens - t0 < kTileTokens ? n_tokens - t0 : kTileTokens);
        run_tile<P, kTileTokens>(nt, n, codes, signs, wscale, wmin, aq, bias, ascale, amin, t0, half, nh,
                                 y + t0 * y_stride + r0 + 8 * half, y_stride);
      }
    }
  }
}

template <Uarch kUarch>
void fill(CpuKernels& k) {
  using WT = WeightType;
  auto set = [&](WT t, GemmFn g) {
    g_small[int(kUarch)][uint32_t(t)] = k.gemm[uint32_t(t)];
    k.gemm[uint32_t(t)] = g;
    k.gemm_isa[uint32_t(t)] = Isa::Avx2;
    k.panel[uint32_t(t)] = true;
  };
  set(WT::Q2_K, panel_gemm<PQ2_K, WT::Q2_K, kUarch>);
  set(WT::Q3_K, panel_gemm<PQ3_K, WT::Q3_K, kUarch>);
  set(WT::Q4_K, panel_gemm<PQ4_K, WT::Q4_K, kUarch>);
  set(WT::Q5_K, panel_gemm<PQ5_K, WT::Q5_K, kUarch>);
  set(WT::Q6_K, panel_gemm<PQ6_K, WT::Q6_K, kUarch>);
  set(WT::Q4_0, panel_gemm<PQ4_0, WT::Q4_0, kUarch>);
  set(WT::Q5_0, panel_gemm<PQ5_0, WT::Q5_0, kUarch>);
  set(WT::Q8_0, panel_gemm<PQ8_0, WT::Q8_0, kUarch>);
  set(WT::IQ4_NL, panel_gemm<PIQ4_NL, WT::IQ4_NL, kUarch>);
}

}  // namespace

void fill_panel_gemm(CpuKernels& k) {
  if (k.uarch == Uarch::Zen)
    fill<Uarch::Zen>(k);
  else
    fill<Uarch::Intel>(k);
}

}  // namespace tandem::cpu::avx2
