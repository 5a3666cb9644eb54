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

constexpr Isa kIsa = Isa::Avx2;
constexpr int kTileTokens = 4;  // accumulators: 4 ymm integer sums + 4 ymm float sums of 16 registers
constexpr int kTileRows = 8;    // a panel's rows in two halves, one ymm of floats each

// Every format but IQ4_XS (file comment): the sign trick of an offset-128 format needs |a| <= 127, and
// only Q8_K activations (256-element blocks) reach -128.
template <class P>
constexpr bool kHasPanel = !(P::kOffset == 128 && P::kBlock == 256);

template <class P>
constexpr bool kSigned = P::kOffset == 128;  // the sign trick (file comment); its bias is not used

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

#include "backend/cpu/x86/panel_x86.inc"

// Turns a signed type's panel of q + 128 into |q| (codes) and q (signs).
template <class P>
void finish_panel(Panel& p) {
  if constexpr (kSigned<P>) {
    p.signs = t_scratch.signs.get<uint8_t>(size_t(p.n) * 16);
    uint8_t* codes = t_scratch.codes.get<uint8_t>(size_t(p.n) * 16);  // the panel p.codes points to
    const __m256i flip = _mm256_set1_epi8(char(0x80));
    for (int64_t i = 0; i < p.n * 16; i += 32) {
      const __m256i q = _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(codes + i)), flip);
      _mm256_store_si256(reinterpret_cast<__m256i*>(p.signs + i), q);
      _mm256_store_si256(reinterpret_cast<__m256i*>(codes + i), _mm256_abs_epi8(q));
    }
  }
}

// 4 activation bytes at a in every 32-bit lane.
inline __m256i bcast4(const int8_t* a) {
  int32_t a4;
  std::memcpy(&a4, a, 4);
  return _mm256_set1_epi32(a4);
}

// ---- the token tile: rows row0 .. row0 + 7 of the panel (row0 is 0 or 8) -----------------------------

template <class P, int NT>
void tile(const Panel& p, int64_t t0, int row0, int nr, float* y, size_t y_stride) {
  constexpr int kSteps = P::kGroup / 4;
  const int64_t n_groups = p.n_groups;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  const int8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = p.aq + (t0 + t) * p.n;
  for (int64_t g = 0; g < n_groups; ++g) {
    __m256i is[NT];
    for (int t = 0; t < NT; ++t)
      is[t] = kSigned<P> ? _mm256_setzero_si256() : _mm256_set1_epi32(p.bias[(t0 + t) * n_groups + g]);
    const int64_t c = g * P::kGroup * 16 + 4 * row0;
    if constexpr (kSigned<P>) {
      for (int s = 0; s < kSteps; ++s) {
        const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(p.codes + c + 64 * s));
        const __m256i sv = _mm256_load_si256(reinterpret_cast<const __m256i*>(p.signs + c + 64 * s));
        for (int t = 0; t < NT; ++t) {
          const __m256i av = _mm256_sign_epi8(bcast4(a[t] + g * P::kGroup + 4 * s), sv);
          is[t] = _mm256_add_epi32(is[t], _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones));
        }
      }
    } else {
      // two steps' int16 pair sums added before one vpmaddwd: codes u <= 63 and |a| <= 128 keep each
      // below 16129 in magnitude, so their sum fits int16
      for (int s = 0; s < kSteps; s += 2) {
        const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(p.codes + c + 64 * s));
        const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(p.codes + c + 64 * s + 64));
        for (int t = 0; t < NT; ++t) {
          const int8_t* at = a[t] + g * P::kGroup + 4 * s;
          const __m256i p16 =
              _mm256_add_epi16(_mm256_maddubs_epi16(w0, bcast4(at)), _mm256_maddubs_epi16(w1, bcast4(at + 4)));
          is[t] = _mm256_add_epi32(is[t], _mm256_madd_epi16(p16, ones));
        }
      }
    }
    const __m256 ws = _mm256_load_ps(p.wscale + g * 16 + row0);
    for (int t = 0; t < NT; ++t) {
      const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(is[t]), _mm256_set1_ps(p.ascale[(t0 + t) * n_groups + g]));
      acc[t] = _mm256_fmadd_ps(v, ws, acc[t]);
    }
    if constexpr (P::kMin) {
      const __m256 wm = _mm256_load_ps(p.wmin + g * 16 + row0);
      for (int t = 0; t < NT; ++t)
        acc[t] = _mm256_fnmadd_ps(wm, _mm256_set1_ps(p.amin[(t0 + t) * n_groups + g]), acc[t]);
    }
  }
  // lanes below nr are stored: -1 - lane > -1 - nr exactly when lane < nr
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_setr_epi32(-1, -2, -3, -4, -5, -6, -7, -8), _mm256_set1_epi32(-1 - nr));
  for (int t = 0; t < NT; ++t) _mm256_maskstore_ps(y + t * y_stride, keep, acc[t]);
}

}  // namespace

void fill_panel_gemm(CpuKernels& k) {
  if (k.uarch == Uarch::Zen)
    fill_panels<Uarch::Zen>(k);
  else
    fill_panels<Uarch::Intel>(k);
}

}  // namespace tandem::cpu::avx2
