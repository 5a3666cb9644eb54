// AVX2 decode kernels for AMD Zen (Uarch::Zen, default tables): Q4_K and Q6_K against one activation
// row, one weight row at a time (one sequential stream per thread, as avx512/decode.cpp). Calls of other
// token counts go to the kernel this level had before. Not in the batch-invariant tables (kernels.h): they
// keep gemm_x86.inc's row kernel for every count, since these add their integer sums in another order.
//
// The activation row is laid out once per call so that one vpmaddubsw covers half of two sub-blocks:
// a 16-byte load of qs, broadcast to both 128-bit lanes and shifted by 0 | 4 bits, holds 16 codes of
// sub-block 2j | 2j+1, so the scales apply once per 64 codes (4 vpmaddwd per super-block where
// gemm_x86.inc's kernel takes 8). Integer sums are exact; only the order of float additions differs from
// the generic level.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"

namespace tandem::cpu::avx2 {
namespace {

using tandem::quant::BlockQ4_K;
using tandem::quant::BlockQ6_K;
using tandem::quant::BlockQ8_K;

// k.gemm[Q4_K] and k.gemm[Q6_K] before fill_zen_decode: every call of more than one token
GemmFn g_q4k_other = nullptr, g_q6k_other = nullptr;

#include "backend/cpu/x86/q4k_scales_x86.inc"
#include "backend/cpu/x86/scratch_x86.inc"
thread_local Buffer t_act;  // the activation row laid out for the kernel

inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Per super-block and pair j of sub-blocks (2j, 2j+1), 64 bytes: [a_2j[0..15] | a_2j+1[0..15]] then
// [a_2j[16..31] | a_2j+1[16..31]], the order in which the kernel's code vectors hold the weights.
void layout_q4k(const BlockQ8_K* a, int8_t* out, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i)
    for (int j = 0; j < 4; ++j) {
      const int8_t* lo = a[i].qs + 64 * j;  // sub-block 2j; 2j+1 follows
      int8_t* o = out + 256 * i + 64 * j;
      std::memcpy(o, lo, 16);
      std::memcpy(o + 16, lo + 32, 16);
      std::memcpy(o + 32, lo + 16, 16);
      std::memcpy(o + 48, lo + 48, 16);
    }
}

// vpshufb control: int16 lanes of 128-bit lane 0 take scale byte a, of lane 1 scale byte b.
inline __m256i pick_pair(int a, int b) {
  const short za = short(a | 0x8000), zb = short(b | 0x8000);  // bit 7 of the high byte: zero it
  return _mm256_setr_epi16(za, za, za, za, za, za, za, za, zb, zb, zb, zb, zb, zb, zb, zb);
}

float q4k_row(int64_t nb, const BlockQ4_K* w, const BlockQ8_K* a, const int8_t* lay) {
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);  // low nibbles | high nibbles
  for (int64_t i = 0; i < nb; ++i) {
    const BlockQ4_K& b = w[i];
    const int8_t* ai = lay + 256 * i;
    const __m128i sm = q4k_scales_mins(b.scales);
    const __m256i bc = _mm256_broadcastsi128_si256(sm);
    __m256i isum = _mm256_setzero_si256();
    for (int j = 0; j < 4; ++j) {
      const __m256i qa = _mm256_and_si256(_mm256_srlv_epi32(_mm256_broadcastsi128_si256(load128(b.qs + 32 * j)), shift), m4);
      const __m256i qb =
          _mm256_and_si256(_mm256_srlv_epi32(_mm256_broadcastsi128_si256(load128(b.qs + 32 * j + 16)), shift), m4);
      // two int16 pair sums of codes <= 15 and |a| <= 128 add to at most 7680: no saturation
      const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(qa, load256(ai + 64 * j)),
                                         _mm256_maddubs_epi16(qb, load256(ai + 64 * j + 32)));
      isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(bc, pick_pair(2 * j, 2 * j + 1))));
    }
    uint32_t dd;  // d, dmin
    std::memcpy(&dd, &b.d, 4);
    const __m128 f = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(int(dd))), _mm_set1_ps(a[i].d));  // d, dmin times a.d
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_broadcastss_ps(f), acc);
    // mins m0 m0 m1 m1 ... against the 16-element sums
    const __m256i m = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)), load256(a[i].bsums));
    accm = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_broadcastss_ps(_mm_movehdup_ps(f)), accm);
  }
  return hsum(_mm256_add_ps(acc, accm));
}

void gemm_q4k(int64_t n_in, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
              int64_t n_tokens, float* y, size_t y_stride) {
  if (n_tokens != 1) return g_q4k_other(n_in, w, w_stride, n_rows, x, x_stride, n_tokens, y, y_stride);
  const int64_t nb = n_in / 256;
  const auto* a = static_cast<const BlockQ8_K*>(x);
  int8_t* lay = t_act.get<int8_t>(size_t(n_in));
  layout_q4k(a, lay, nb);
  const auto* wb = static_cast<const uint8_t*>(w);
  for (int64_t r = 0; r < n_rows; ++r) y[r] = q4k_row(nb, reinterpret_cast<const BlockQ4_K*>(wb + r * w_stride), a, lay);
}

// vpshufb control: int16 lanes of 128-bit lane 0 take int16 a of their lane, of lane 1 int16 b.
inline __m256i pick_pair16(int a, int b) {
  const short za = short(2 * a | (2 * a + 1) << 8), zb = short(2 * b | (2 * b + 1) << 8);
  return _mm256_setr_epi16(za, za, za, za, za, za, za, za, zb, zb, zb, zb, zb, zb, zb, zb);
}

// Q6_K: a 32-byte code vector holds sub-blocks 2k (low 128-bit lane) and 2k+1 (high), so one vpmaddwd
// against [scale 2k x 8 | scale 2k+1 x 8] scales its vpmaddubsw pair sums. gemm_x86.inc's KQ6_K unpacks
// a whole super-block first (8 code and 8 scale vectors: more than AVX2's 16 registers hold); here each
// code vector is made and used at once. Codes are stored + 32: 32 * sum(scale * bsum) comes off at the end.
float q6k_row(int64_t nb, const BlockQ6_K* w, const BlockQ8_K* a) {
  __m256 acc = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
  for (int64_t i = 0; i < nb; ++i) {
    const BlockQ6_K& b = w[i];
    const BlockQ8_K& at = a[i];
    const __m256i s16 = _mm256_cvtepi8_epi16(load128(b.scales));  // scales 0..7 | 8..15: halves c = 0 | 1
    __m256i isum = _mm256_setzero_si256();
    for (int c = 0; c < 2; ++c) {
      // an immediate each (clang wants a constant where GCC folds the unrolled c)
      const __m256i sc = c ? _mm256_permute2x128_si256(s16, s16, 0x11) : _mm256_permute2x128_si256(s16, s16, 0x00);
      const __m256i l0 = load256(b.ql + 64 * c), l1 = load256(b.ql + 64 * c + 32), h = load256(b.qh + 32 * c);
      // ggml's layout: elements 32j + l of the half take the nibble of ql[l] (j even) or ql[32 + l] (odd), low
      // for j < 2, and bits 2j, 2j+1 of qh[l]; moved to bits 4-5 (16-bit shifts: the 0x30 mask drops the
      // bits that cross a byte)
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30)),
          _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m30)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                          _mm256_and_si256(_mm256_srli_epi16(h, 2), m30))};
      for (int j = 0; j < 4; ++j) {
        // codes <= 63 and |a| <= 128: pair sums <= 16128, no saturation
        const __m256i p = _mm256_maddubs_epi16(q[j], load256(at.qs + 128 * c + 32 * j));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc, pick_pair16(2 * j, 2 * j + 1))));
      }
    }
    const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(s16, load256(at.bsums)), 5);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum, corr)), _mm256_set1_ps(h2f(b.d) * at.d), acc);
  }
  return hsum(acc);
}

void gemm_q6k(int64_t n_in, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
              int64_t n_tokens, float* y, size_t y_stride) {
  if (n_tokens != 1) return g_q6k_other(n_in, w, w_stride, n_rows, x, x_stride, n_tokens, y, y_stride);
  const auto* a = static_cast<const BlockQ8_K*>(x);
  const auto* wb = static_cast<const uint8_t*>(w);
  for (int64_t r = 0; r < n_rows; ++r)
    y[r] = q6k_row(n_in / 256, reinterpret_cast<const BlockQ6_K*>(wb + r * w_stride), a);
}

}  // namespace

void fill_zen_decode(CpuKernels& k) {
  g_q4k_other = k.gemm[uint32_t(WeightType::Q4_K)];
  k.gemm[uint32_t(WeightType::Q4_K)] = gemm_q4k;
  g_q6k_other = k.gemm[uint32_t(WeightType::Q6_K)];
  k.gemm[uint32_t(WeightType::Q6_K)] = gemm_q6k;
}

}  // namespace tandem::cpu::avx2
