// AVX-512 decode kernels, every format's on AMD Zen (Uarch::Zen), Q5_0's on Intel too (fill_row_decode_for):
// 1..kMaxTokens activation rows against one weight row at a time, so each thread reads the weights as one
// sequential stream, with 512-bit integer dot products
// that need about half the instructions per weight byte of the 256-bit kernels (gemm_x86.inc). Zen 4 runs
// a 512-bit operation as two 256-bit halves, so the gain is in instructions issued, not in width; and it
// loses half its read bandwidth when four rows stream side by side (BENCHMARKS.md, "Zen 4").
// Calls with more tokens go to the kernel this level had before (prefill), except in the batch-invariant
// tables, where these kernels take every call.
//
// Q4_K's gemm first lays its activation rows out in the order its nibbles come out of a 64-byte load
// (per-thread scratch, 288 bytes per 256 activations). Integer sums are exact; only the order of float
// additions differs from the generic level. The 32-element formats Q8_0, Q4_0 and IQ4_NL take two
// blocks per vector against activations laid out per call (Legacy512), Q5_0 likewise with unsigned codes
// (Q5_0Pairs); Q4_1, Q5_1 and the other K-quants keep the 256-bit kernels.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"

// GCC 12's _mm512_undefined_* inside inlined intrinsics trip -Wuninitialized (GCC bug 105593, fixed in 13).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::cpu::avx512 {
namespace {

using tandem::quant::BlockQ4_K;
using tandem::quant::BlockQ6_K;
using tandem::quant::BlockQ8_0;
using tandem::quant::BlockQ8_K;

constexpr int kMaxTokens = 8;  // registers: 8 code/scale vectors + 2 accumulators per token

// The entries each micro-architecture's table of this level had before fill_row_decode.
GemmFn g_prefill[kNumUarchs][kWeightTypeIdLimit] = {};

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
// Weight bytes as two 32-byte loads: blocks are 144 or 210 bytes, so a 64-byte load usually spans two
// cache lines, and streaming from DRAM ran 20% slower with them on Zen 4 (in L2 it makes no difference).
inline __m512i load_weights512(const uint8_t* p) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(load256(p)), load256(p + 32), 1);
}

#include "backend/cpu/x86/scratch_x86.inc"
thread_local Buffer t_act;  // the activation rows laid out for the kernel

// ---- Q4_K against Q8_K ----------------------------------------------------------------------------
// A 64-byte load of qs holds sub-blocks 0 and 2 in its low nibbles and 1 and 3 in its high ones, so the
// activation's 32-byte sub-blocks are stored in the order 0 2 1 3 4 6 5 7, with one int16 sum each.
struct ActQ4K {
  int8_t qs[256];
  int16_t bsum[8];
  float d;
  float pad[3];
};
static_assert(sizeof(ActQ4K) == 288);

void layout_q4k(const BlockQ8_K* a, ActQ4K* out, int64_t nb) {
  static constexpr int kOrder[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int64_t i = 0; i < nb; ++i) {
    for (int k = 0; k < 8; ++k) std::memcpy(out[i].qs + 32 * k, a[i].qs + 32 * kOrder[k], 32);
    for (int k = 0; k < 8; ++k) out[i].bsum[k] = int16_t(a[i].bsums[2 * k] + a[i].bsums[2 * k + 1]);
    out[i].d = a[i].d;
  }
}

#include "backend/cpu/x86/q4k_scales_x86.inc"

// vpshufb control from 8 scale bytes to int16 scales for a vector of packed sub-block sums (see Q4K):
// 128-bit lanes 0,1 take scale a (int16 0..3) and b (4..7), lanes 2,3 scale c and d.
inline __m512i pick_pairs(int a, int b, int c, int d) {
  alignas(64) int8_t t[64];
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < 8; ++j) {
      t[16 * l + 2 * j] = int8_t(l < 2 ? (j < 4 ? a : b) : (j < 4 ? c : d));
      t[16 * l + 2 * j + 1] = int8_t(0x80);  // zero high byte
    }
  return _mm512_load_si512(t);
}

// One code vector per 64 bytes of qs: vpdpbusd sums 4 code x activation products per int32 lane, each
// lane within one 32-element sub-block; vpackssdw packs two such vectors to int16 (|sum| <= 4 * 15 * 128,
// so it never saturates) so that one vpmaddwd / vpdpwssd applies the 6-bit scales to both: 6 multiplies
// per super-block and token where vpmaddubsw + vpdpwssd per 64 codes took 8 (Zen 4 issues one 512-bit
// multiply per cycle). The min term is one 128-bit vpmaddwd of the mins with the activation's sub-block
// sums.
struct Q4K {
  using A = ActQ4K;
  static size_t act_bytes(int64_t n) { return size_t(n / 256) * sizeof(ActQ4K); }
  static bool fits(int64_t) { return true; }
  static void layout(const uint8_t* x, uint8_t* out, int64_t n) {
    layout_q4k(reinterpret_cast<const BlockQ8_K*>(x), reinterpret_cast<ActQ4K*>(out), n / 256);
  }

  // One token, software-pipelined by one super-block: block i + 1's loads and dot products are issued
  // before block i's scaling (decode_l2 +6% over leaving the overlap to the out-of-order window). The same
  // operations on the same values as row<NT> for NT > 1, so the same bits (batch-invariant tables).
  static void row1(int64_t nb, const BlockQ4_K* w, const ActQ4K* a, __m512i c01, __m512i c23, __m512& acc,
                   __m128& accm) {
    struct Step {
      __m512i d0, d1, d2, d3, s01, s23;
      __m128i mins;
      __m128 dw;
    };
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    auto start = [&](int64_t i, Step& s) {
      const BlockQ4_K& b = w[i];
      const ActQ4K& at = a[i];
      const __m128i sm = q4k_scales_mins(b.scales);
      const __m512i bc = _mm512_broadcast_i32x4(sm);
      s.s01 = _mm512_shuffle_epi8(bc, c01), s.s23 = _mm512_shuffle_epi8(bc, c23);
      s.mins = _mm_unpackhi_epi8(sm, _mm_setzero_si128());
      uint32_t dd;
      std::memcpy(&dd, &b.d, 4);
      s.dw = _mm_cvtph_ps(_mm_cvtsi32_si128(int(dd)));
      const __m512i z0 = load_weights512(b.qs), z1 = load_weights512(b.qs + 64);
      s.d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(z0, m4), load512(at.qs));
      s.d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4),
                                 load512(at.qs + 64));
      s.d2 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(z1, m4), load512(at.qs + 128));
      s.d3 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4),
                                 load512(at.qs + 192));
    };
    Step next;
    start(0, next);
    for (int64_t i = 0; i < nb; ++i) {
      const Step s = next;
      if (i + 1 < nb) start(i + 1, next);
      const __m512i is = _mm512_dpwssd_epi32(_mm512_madd_epi16(_mm512_packs_epi32(s.d0, s.d1), s.s01),
                                             _mm512_packs_epi32(s.d2, s.d3), s.s23);
      const __m128 f = _mm_mul_ps(s.dw, _mm_set1_ps(a[i].d));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_broadcastss_ps(f), acc);
      const __m128i m = _mm_madd_epi16(s.mins, load128(a[i].bsum));
      accm = _mm_fnmadd_ps(_mm_cvtepi32_ps(m), _mm_permute_ps(f, 0x55), accm);
    }
  }

  template <int NT>
  static void row(int64_t n, const uint8_t* wv, const uint8_t* const* act, float* y, size_t y_stride) {
    const auto* w = reinterpret_cast<const BlockQ4_K*>(wv);
    const ActQ4K* a[NT];
    __m512 acc[NT];
    __m128 accm[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const ActQ4K*>(act[t]);
      acc[t] = _mm512_setzero_ps();
      accm[t] = _mm_setzero_ps();
    }
    // packs(d0, d1) holds sub-blocks 0 | 1 in lanes 0,1 and 2 | 3 in lanes 2,3 (activation order 0 2 1 3)
    const __m512i c01 = pick_pairs(0, 1, 2, 3), c23 = pick_pairs(4, 5, 6, 7);
    if constexpr (NT == 1) {
      row1(n / 256, w, a[0], c01, c23, acc[0], accm[0]);
    } else {
      const __m512i m4 = _mm512_set1_epi8(0x0f);
      for (int64_t i = 0; i < n / 256; ++i) {
        const BlockQ4_K& b = w[i];
        const __m128i sm = q4k_scales_mins(b.scales);
        const __m512i bc = _mm512_broadcast_i32x4(sm);
        const __m512i s01 = _mm512_shuffle_epi8(bc, c01), s23 = _mm512_shuffle_epi8(bc, c23);
        const __m128i mins = _mm_unpackhi_epi8(sm, _mm_setzero_si128());
        const __m512i z0 = load_weights512(b.qs), z1 = load_weights512(b.qs + 64);
        const __m512i q0 = _mm512_and_si512(z0, m4), q1 = _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4);
        const __m512i q2 = _mm512_and_si512(z1, m4), q3 = _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4);
        uint32_t dd;  // d, dmin
        std::memcpy(&dd, &b.d, 4);
        const __m128 dw = _mm_cvtph_ps(_mm_cvtsi32_si128(int(dd)));
        for (int t = 0; t < NT; ++t) {
          const ActQ4K& at = a[t][i];
          const __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q0, load512(at.qs));
          const __m512i d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q1, load512(at.qs + 64));
          const __m512i d2 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q2, load512(at.qs + 128));
          const __m512i d3 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q3, load512(at.qs + 192));
          const __m512i is = _mm512_dpwssd_epi32(_mm512_madd_epi16(_mm512_packs_epi32(d0, d1), s01),
                                                 _mm512_packs_epi32(d2, d3), s23);
          const __m128 f = _mm_mul_ps(dw, _mm_set1_ps(at.d));  // d * a.d, dmin * a.d
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_broadcastss_ps(f), acc[t]);
          const __m128i m = _mm_madd_epi16(mins, load128(at.bsum));
          accm[t] = _mm_fnmadd_ps(_mm_cvtepi32_ps(m), _mm_permute_ps(f, 0x55), accm[t]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      __m128 m = accm[t];
      m = _mm_add_ps(m, _mm_movehl_ps(m, m));
      m = _mm_add_ss(m, _mm_movehdup_ps(m));
      y[t * y_stride] = _mm512_reduce_add_ps(acc[t]) + _mm_cvtss_f32(m);
    }
  }
};

// ---- Q6_K against Q8_K (activations as quantized: a 64-byte load of ql is in element order) -----------
struct Q6K {
  using A = BlockQ8_K;
  static size_t act_bytes(int64_t) { return 0; }
  static bool fits(int64_t) { return true; }
  static void layout(const uint8_t*, uint8_t*, int64_t) {}

  template <int NT>
  static void row(int64_t n, const uint8_t* wv, const uint8_t* const* act, float* y, size_t y_stride) {
    const auto* w = reinterpret_cast<const BlockQ6_K*>(wv);
    const BlockQ8_K* a[NT];
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const BlockQ8_K*>(act[t]);
      acc[t] = _mm512_setzero_ps();
    }
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    // qh bits 0-1 | 2-3 go to bits 4-5 of the low half's codes, bits 4-5 | 6-7 to the high half's
    const __m512i shl = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2), shr = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
    // 128-bit lane l of a code vector holds one 16-element group: group l (low half) or 4 + l (high)
    alignas(64) int8_t lo_ctl[64], hi_ctl[64];
    for (int l = 0; l < 4; ++l)
      for (int j = 0; j < 8; ++j) {
        lo_ctl[16 * l + 2 * j] = int8_t(2 * l), lo_ctl[16 * l + 2 * j + 1] = int8_t(2 * l + 1);
        hi_ctl[16 * l + 2 * j] = int8_t(2 * (4 + l)), hi_ctl[16 * l + 2 * j + 1] = int8_t(2 * (4 + l) + 1);
      }
    const __m512i pick_lo = _mm512_load_si512(lo_ctl), pick_hi = _mm512_load_si512(hi_ctl);
    for (int64_t i = 0; i < n / 256; ++i) {
      const BlockQ6_K& b = w[i];
      const __m256i s16 = _mm256_cvtepi8_epi16(load128(b.scales));
      __m512i q[4], s[4];
      for (int c = 0; c < 2; ++c) {
        const __m512i bc = _mm512_broadcast_i32x4(c ? _mm256_extracti128_si256(s16, 1) : _mm256_castsi256_si128(s16));
        const __m512i l = load_weights512(b.ql + 64 * c);
        const __m512i h = _mm512_broadcast_i64x4(load256(b.qh + 32 * c));
        q[2 * c] = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_and_si512(_mm512_sllv_epi64(h, shl), m30));
        q[2 * c + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                       _mm512_and_si512(_mm512_srlv_epi64(h, shr), m30));
        s[2 * c] = _mm512_shuffle_epi8(bc, pick_lo);
        s[2 * c + 1] = _mm512_shuffle_epi8(bc, pick_hi);
      }
      const float d = h2f(b.d);
      for (int t = 0; t < NT; ++t) {
        const BlockQ8_K& at = a[t][i];
        // codes <= 63 and |a| <= 128: maddubs pair sums <= 16128
        __m512i i0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_maddubs_epi16(q[0], load512(at.qs)), s[0]);
        __m512i i1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_maddubs_epi16(q[2], load512(at.qs + 128)), s[2]);
        i0 = _mm512_dpwssd_epi32(i0, _mm512_maddubs_epi16(q[1], load512(at.qs + 64)), s[1]);
        i1 = _mm512_dpwssd_epi32(i1, _mm512_maddubs_epi16(q[3], load512(at.qs + 192)), s[3]);
        // codes are stored + 32: subtract 32 * sum(scale * bsum)
        const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(s16, load256(at.bsums)), 5);
        const __m512i is = _mm512_sub_epi32(_mm512_add_epi32(i0, i1), _mm512_zextsi256_si512(corr));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(d * at.d), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) y[t * y_stride] = _mm512_reduce_add_ps(acc[t]);
  }
};

// ---- 32-element formats against Q8_0, two blocks per 512-bit vector -----------------------------------
// The activation is laid out once per call as pairs of blocks: codes + 128 (unsigned, so dpbusd takes
// them with the weights' signed codes directly) and the two scales already broadcast; the weight side
// subtracts 128 * its own code sums, once per block pair for every token. Integer sums stay exact; per
// weight pair and token that is one dpbusd, one conversion, one multiply and one FMA, where the 256-bit
// kernels spend a sign step, a scalar f16 conversion and a broadcast per block and token. It exists for
// calls of several tokens (the server's decode steps): at one token the 256-bit kernels stream as fast.
struct ActPair {
  uint8_t qs[64];  // block 2p's codes + 128 | block 2p+1's
  float d[16];     // block 2p's scale x 8 | block 2p+1's x 8 (0 past an odd row's end)
};
static_assert(sizeof(ActPair) == 128);

// Vector code: decode_gemm lays the activations out again in every call, i.e. for every chunk of rows.
void layout_pairs(const BlockQ8_0* a, ActPair* out, int64_t nb) {
  for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
    const bool two = 2 * p + 1 < nb;
    const __m256i xa = load256(a[2 * p].qs), xb = two ? load256(a[2 * p + 1].qs) : _mm256_setzero_si256();
    const __m512i qs = _mm512_inserti64x4(_mm512_castsi256_si512(xa), xb, 1);
    _mm512_store_si512(out[p].qs, _mm512_xor_si512(qs, _mm512_set1_epi8(char(0x80))));
    _mm512_store_ps(out[p].d, _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(h2f(a[2 * p].d))),
                                                 _mm256_set1_ps(two ? h2f(a[2 * p + 1].d) : 0.0f), 1));
  }
}

// 32 nibbles of 16 bytes in the legacy order: low nibbles to bytes 0..15, high nibbles to 16..31.
inline __m256i nibbles_32(const uint8_t* qs) {
  const __m128i v = load128(qs), m = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}
inline __m512i pair512(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

// codes(w, two): the signed codes of blocks w[0] and (if two, else zeros) w[1], one per byte.
struct PairQ8_0 {
  using W = tandem::quant::BlockQ8_0;
  static __m512i codes(const W* w, bool two) {
    return pair512(load256(w[0].qs), two ? load256(w[1].qs) : _mm256_setzero_si256());
  }
};
struct PairQ4_0 {
  using W = tandem::quant::BlockQ4_0;
  static __m512i codes(const W* w, bool two) {
    const __m512i n = pair512(nibbles_32(w[0].qs), two ? nibbles_32(w[1].qs) : _mm256_set1_epi8(8));
    return _mm512_sub_epi8(n, _mm512_set1_epi8(8));
  }
};
struct PairIQ4_NL {
  using W = tandem::quant::BlockIQ4_NL;
  static __m512i codes(const W* w, bool two) {
    const __m512i table = _mm512_broadcast_i32x4(load128(tandem::quant::kIq4Values));
    const __m512i c = _mm512_shuffle_epi8(table, pair512(nibbles_32(w[0].qs), two ? nibbles_32(w[1].qs) : _mm256_setzero_si256()));
    return two ? c : _mm512_zextsi256_si512(_mm512_castsi512_si256(c));
  }
};

template <class P>
struct Legacy512 {
  using W = typename P::W;
  static size_t act_bytes(int64_t n) { return size_t((n / 32 + 1) / 2) * sizeof(ActPair); }
  static bool fits(int64_t) { return true; }
  static void layout(const uint8_t* x, uint8_t* out, int64_t n) {
    layout_pairs(reinterpret_cast<const BlockQ8_0*>(x), reinterpret_cast<ActPair*>(out), n / 32);
  }

  template <int NT>
  static void row(int64_t n, const uint8_t* wv, const uint8_t* const* act, float* y, size_t y_stride) {
    const auto* w = reinterpret_cast<const W*>(wv);
    const int64_t nb = n / 32;
    const ActPair* a[NT];
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const ActPair*>(act[t]);
      acc[t] = _mm512_setzero_ps();
    }
    const __m512i k128 = _mm512_set1_epi8(char(0x80));
    for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
      const bool two = 2 * p + 1 < nb;
      const __m512i q = P::codes(w + 2 * p, two);
      // (a + 128) . q - 128 * sum(q) = a . q, per int32 lane
      const __m512i neg_corr = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), k128, q));
      const __m512 dw = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(h2f(w[2 * p].d))),
                                           _mm256_set1_ps(two ? h2f(w[2 * p + 1].d) : 0.0f), 1);
      for (int t = 0; t < NT; ++t) {
        const ActPair& at = a[t][p];
        const __m512i s = _mm512_dpbusd_epi32(neg_corr, _mm512_load_si512(at.qs), q);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_load_ps(at.d)), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) y[t * y_stride] = _mm512_reduce_add_ps(acc[t]);
  }
};

// ---- Q5_0 against Q8_0: unsigned codes, two blocks per 512-bit vector -----------------------------------
// The codes stay unsigned (0..31, the weight being code - 16), so dpbusd takes them against the signed
// activation codes directly and the -16 * sum(activations) term is the accumulator's starting value, laid
// out once per call: per pair and token one dpbusd, one conversion, one multiply and one FMA, and per pair
// a 3-operation nibble split and one masked OR for the fifth bits. That streams a row at memory speed on
// one Zen 4 core, where the signed two-block kernel (Legacy512) computed at 14 GB/s (BENCHMARKS.md).
// Lanes hold block A's elements 0..15, block B's 0..15, A's 16..31, B's 16..31: the order in which the
// nibbles of A's and B's 16 code bytes, loaded side by side, come out.
// From three tokens on, or once the three 64-byte fields of every pair no longer fit L1 beside the weights
// (ffn_down's 10944 columns), loading every token's correction costs more than computing the weights' own
// (-128 * sum(code - 16), once per pair for all tokens, against the codes + 128): both give the same
// exact integer per lane, so every token count and row length gives a row the same bits.
// Four arrays of 64 bytes per pair, one after the other: interleaved per pair, a 256-byte stride put each
// field's lines in a quarter of L1's sets, which long rows overflowed (half speed at 10944 columns).
struct ActQ5 {
  static constexpr size_t kPairBytes = 256;
  const uint8_t* base;
  int64_t n_pairs;
  const int8_t* qs(int64_t p) const { return reinterpret_cast<const int8_t*>(base) + 64 * p; }  // codes, lane order
  const uint8_t* qs_u(int64_t p) const { return base + 64 * (n_pairs + p); }                   // the same + 128
  // -16 * the sum of each lane's four codes
  const int32_t* corr(int64_t p) const { return reinterpret_cast<const int32_t*>(base + 64 * (2 * n_pairs + p)); }
  // the lane's block scale (0 past an odd row's end)
  const float* d(int64_t p) const { return reinterpret_cast<const float*>(base + 64 * (3 * n_pairs + p)); }
};

struct Q5_0Pairs {
  using W = tandem::quant::BlockQ5_0;
  // Prefetched ahead of the pair being read: without it, long rows (10944 columns) streamed at half speed.
  static constexpr int kPrefetchBytes = 1024;
  static constexpr int64_t kOwnCorrMaxColumns = 4096;  // 64 pairs: 12 KiB of qs, corr and d per token
  static int64_t n_pairs(int64_t n) { return (n / 32 + 1) / 2; }
  static size_t act_bytes(int64_t n) { return size_t(n_pairs(n)) * ActQ5::kPairBytes; }
  static bool fits(int64_t) { return true; }
  // Vector code: decode_gemm lays the activations out again in every call, i.e. for every chunk of rows.
  static void layout(const uint8_t* x, uint8_t* out_bytes, int64_t n) {
    const auto* a = reinterpret_cast<const BlockQ8_0*>(x);
    const ActQ5 o{out_bytes, n_pairs(n)};
    const int64_t nb = n / 32;
    const __m512i lane_block = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
    for (int64_t p = 0; p < (nb + 1) / 2; ++p) {
      const BlockQ8_0& qa = a[2 * p];
      const bool two = 2 * p + 1 < nb;
      const __m256i xa = load256(qa.qs), xb = two ? load256(a[2 * p + 1].qs) : _mm256_setzero_si256();
      const uint32_t scales = qa.d | (two ? uint32_t(a[2 * p + 1].d) << 16 : 0u);
      const __m512i qs = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(xa, xb, 0x20)),
                                            _mm256_permute2x128_si256(xa, xb, 0x31), 1);
      const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), qs);
      _mm512_store_si512(const_cast<int8_t*>(o.qs(p)), qs);
      _mm512_store_si512(const_cast<uint8_t*>(o.qs_u(p)), _mm512_xor_si512(qs, _mm512_set1_epi8(char(0x80))));
      const __m512 d = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(int(scales))));
      _mm512_store_si512(const_cast<int32_t*>(o.corr(p)),
                         _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sums, 4)));
      _mm512_store_ps(const_cast<float*>(o.d(p)), _mm512_permutexvar_ps(lane_block, d));
    }
  }

  template <int NT>
  static void row(int64_t n, const uint8_t* wv, const uint8_t* const* act, float* y, size_t y_stride) {
    const auto* w = reinterpret_cast<const W*>(wv);
    const int64_t nb = n / 32;
    ActQ5 a[NT];
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = ActQ5{act[t], n_pairs(n)};
      acc[t] = _mm512_setzero_ps();
    }
    const __m512i low4 = _mm512_set1_epi8(0x0f), bit5 = _mm512_set1_epi8(0x10), k128 = _mm512_set1_epi8(char(0x80));
    const __m512i shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);  // A's and B's high nibbles to lanes 8..15
    const __m512i lane_block = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
    auto pair = [&](int64_t p, bool two, auto own_corr) __attribute__((always_inline)) {
      const W& wa = w[2 * p];
      _mm_prefetch(reinterpret_cast<const char*>(&wa) + kPrefetchBytes, _MM_HINT_T0);
      uint32_t ha, hb = 0;
      std::memcpy(&ha, wa.qh, 4);
      __m256i qs = _mm256_zextsi128_si256(load128(wa.qs));
      uint32_t scales = wa.d;
      if (two) {  // an odd row's last block pairs with zeros, never with the next row's first
        const W& wb = w[2 * p + 1];
        std::memcpy(&hb, wb.qh, 4);
        qs = _mm256_inserti128_si256(qs, load128(wb.qs), 1);
        scales |= uint32_t(wb.d) << 16;
      }
      const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(qs), qs, 1);
      const __m512i nib = _mm512_and_si512(_mm512_srlv_epi64(both, shift), low4);
      const uint64_t fifth = (ha & 0xffffu) | uint64_t(hb & 0xffffu) << 16 | uint64_t(ha >> 16) << 32 |
                             uint64_t(hb >> 16) << 48;
      const __m512i c = _mm512_mask_add_epi8(nib, __mmask64(fifth), nib, bit5);
      const __m512 dw =
          _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(int(scales)))));
      if constexpr (own_corr) {
        for (int t = 0; t < NT; ++t) {
          const __m512i s = _mm512_dpbusd_epi32(_mm512_load_si512(a[t].corr(p)), c, _mm512_load_si512(a[t].qs(p)));
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_load_ps(a[t].d(p))), acc[t]);
        }
      } else {
        const __m512i signed_codes = _mm512_sub_epi8(c, bit5);
        const __m512i neg_corr =
            _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), k128, signed_codes));
        for (int t = 0; t < NT; ++t) {
          const __m512i s = _mm512_dpbusd_epi32(neg_corr, _mm512_load_si512(a[t].qs_u(p)), signed_codes);
          acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_load_ps(a[t].d(p))), acc[t]);
        }
      }
    };
    auto all_pairs = [&](auto own_corr) __attribute__((always_inline)) {
      for (int64_t p = 0; p < nb / 2; ++p) pair(p, true, own_corr);
      if (nb % 2) pair(nb / 2, false, own_corr);
    };
    if (NT < 3 && n <= kOwnCorrMaxColumns)
      all_pairs(std::true_type{});
    else
      all_pairs(std::false_type{});
    for (int t = 0; t < NT; ++t) y[t * y_stride] = _mm512_reduce_add_ps(acc[t]);
  }
};

// ---- driver -------------------------------------------------------------------------------------------

template <class K, int NT>
void run_row(int nt, int64_t n, const uint8_t* w, const uint8_t* const* act, float* y, size_t y_stride) {
  if constexpr (NT > 1) {
    if (nt < NT) return run_row<K, NT - 1>(nt, n, w, act, y, y_stride);
  }
  K::template row<NT>(n, w, act, y, y_stride);
}

// Calls of fewer tokens than this go to g_prefill in the default tables: one Q8_0 token streams faster
// through the 256-bit kernel (decode_vocab, Zen 4: 9.4 vs 12.5 ms, under load).
template <class K>
constexpr int kMinTokens = 1;
template <>
constexpr int kMinTokens<Legacy512<PairQ8_0>> = 2;

// kAllTokens (batch-invariant tables): every call runs these kernels, 8 tokens at a time, so a token's
// bits do not depend on how many others share the call; else calls of more tokens go to g_prefill.
template <class K, WeightType kType, bool kAllTokens, Uarch kUarch>
void decode_gemm(int64_t n_in, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
                 int64_t n_tokens, float* y, size_t y_stride) {
  if (!kAllTokens && (n_tokens > kMaxTokens || n_tokens < kMinTokens<K> || !K::fits(n_in)))
    return g_prefill[int(kUarch)][uint32_t(kType)](n_in, w, w_stride, n_rows, x, x_stride, n_tokens, y, y_stride);
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  const size_t ab = K::act_bytes(n_in);
  uint8_t* buf = ab ? t_act.get<uint8_t>(ab * size_t(kMaxTokens)) : nullptr;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxTokens) {
    const int nt = int(n_tokens - t0 < kMaxTokens ? n_tokens - t0 : kMaxTokens);
    const uint8_t* act[kMaxTokens];
    for (int t = 0; t < nt; ++t) {
      const uint8_t* row = xb + (t0 + t) * x_stride;
      if (ab) K::layout(row, buf + t * ab, n_in);
      act[t] = ab ? buf + t * ab : row;
    }
    for (int64_t r = 0; r < n_rows; ++r)
      run_row<K, kMaxTokens>(nt, n_in, wb + r * w_stride, act, y + t0 * y_stride + r, y_stride);
  }
}

// K's decode kernel becomes the entry for kType in k, keeping the entry it replaces for the calls it hands on.
template <class K, WeightType kType, Uarch kUarch>
void set_row_decode(CpuKernels& k) {
  g_prefill[int(kUarch)][uint32_t(kType)] = k.gemm[uint32_t(kType)];
  k.gemm[uint32_t(kType)] =
      k.batch_invariant ? decode_gemm<K, kType, true, kUarch> : decode_gemm<K, kType, false, kUarch>;
  k.gemm_isa[uint32_t(kType)] = Isa::Avx512;
}

template <Uarch kUarch>
void fill_row_decode_for(CpuKernels& k) {
  using WT = WeightType;
  // Q5_0's fifth bits cost the four-row kernels more than its rows' bytes on Intel too: synth 1B Q5_0 tg64
  // 13.4-13.8 -> 16.6-17.6 t/s (Intel Xeon, 2 threads). There the four-row kernels stream the other formats
  // faster: Q4_K_M 16.8-17.7 vs 15.5-15.9 t/s, Q6_K 16.1-16.3 vs 14.0-14.6, Q4_0 14.5-15.2 vs 13.8 (BENCHMARKS.md).
  set_row_decode<Q5_0Pairs, WT::Q5_0, kUarch>(k);
  if constexpr (kUarch == Uarch::Zen) {
    set_row_decode<Q4K, WT::Q4_K, kUarch>(k);
    set_row_decode<Q6K, WT::Q6_K, kUarch>(k);
    set_row_decode<Legacy512<PairQ8_0>, WT::Q8_0, kUarch>(k);
    set_row_decode<Legacy512<PairQ4_0>, WT::Q4_0, kUarch>(k);
    set_row_decode<Legacy512<PairIQ4_NL>, WT::IQ4_NL, kUarch>(k);
  }
}

}  // namespace

void fill_row_decode(CpuKernels& k) {
  if (k.uarch == Uarch::Zen)
    fill_row_decode_for<Uarch::Zen>(k);
  else
    fill_row_decode_for<Uarch::Intel>(k);
}

}  // namespace tandem::cpu::avx512
