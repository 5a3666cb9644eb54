// AMX level: int8 tile matmuls (TDPBSSD) for prefill-shaped calls of Q4_0 Q5_0 Q8_0 IQ4_NL Q4_K Q5_K Q6_K
// and IQ4_XS; every other type, and calls with fewer than kMinTokens tokens, keep the AVX-512 kernels.
// Compiled with the AVX-512 and AMX flags; reached only after dispatch.cpp has checked that the CPU has
// AMX-INT8 and Linux granted XTILEDATA (cpu_features().amx_granted).
//
// One tile product per weight (sub-)block, because every block has its own scale:
//   C[t][r] = sum_k a[t][k] * q[r][k] over one block (exact int32), then y[t][r] += float(C) * scales.
// A = 16 activation rows, repacked once per call so that each tile is 16 contiguous 32- (or 16-) byte
// rows; B = 16 weight rows unpacked once per call into a "VNNI" panel [n_in/4][16 rows][4 bytes];
// C lanes are weight rows, so a tile row is 16 consecutive outputs of one token.
// Weight codes are signed int8 (Q6_K loses its +32 offset here), so the only correction left is the
// Q4_K / Q5_K min term, dmin * m * sum(a), taken from Q8_K's bsums. A tile store costs about as much as
// a tile product here (~6.5 ns each, measured), so Q4_K / Q5_K fold their integer sub-block scales into
// the codes (Split below) and store once per super-block instead of once per sub-block.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"

// GCC 12's _mm512_undefined_* inside inlined intrinsics (cvtepi32_ps, castsi256_si512) trip
// -Wuninitialized (GCC bug 105593, fixed in 13).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::cpu::amx {
namespace {

using tandem::quant::BlockIQ4_NL;
using tandem::quant::BlockIQ4_XS;
using tandem::quant::BlockQ4_0;
using tandem::quant::BlockQ4_K;
using tandem::quant::BlockQ5_0;
using tandem::quant::BlockQ5_K;
using tandem::quant::BlockQ6_K;
using tandem::quant::BlockQ8_0;
using tandem::quant::BlockQ8_K;

// Below this many tokens a tile is mostly padding and the AVX-512 kernel is as fast (amx_bench).
constexpr int64_t kMinTokens = 16;

// The level below (AVX-512), recorded by fill_kernels before it overwrites the entries.
GemmFn g_fallback[kWeightTypeIdLimit] = {};

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

// ---- tiles -----------------------------------------------------------------------------------------
// tmm0..3: C (16 x 16 int32); tmm4, tmm5: A (16 tokens x K bytes); tmm6, tmm7: B (K/4 x 64 bytes).
// Four C tiles keep four products in flight: one product's zero -> dot -> store chain is ~100 cycles.
// K is the block (or sub-block) length: 32, or 16 for Q6_K. The configuration is per thread and the
// pool's threads are not ours, so each thread loads it lazily and remembers which K it holds; nothing
// else in Tandem touches the tile registers.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64);

thread_local int t_config_k = 0;

void ensure_tile_config(int k) {
  if (t_config_k == k) return;
  TileConfig c;
  std::memset(&c, 0, sizeof c);
  c.palette_id = 1;
  for (int i = 0; i < 4; ++i) c.rows[i] = 16, c.colsb[i] = 64;
  for (int i = 4; i < 6; ++i) c.rows[i] = 16, c.colsb[i] = uint16_t(k);
  for (int i = 6; i < 8; ++i) c.rows[i] = uint8_t(k / 4), c.colsb[i] = 64;
  _tile_loadconfig(&c);
  t_config_k = k;
}

// ---- per-thread scratch ------------------------------------------------------------------------------
#include "backend/cpu/x86/scratch_x86.inc"

struct Scratch {
  Buffer panel, wscale, wmin, act, act_scale, act_bsum, cbuf;
};
thread_local Scratch t_scratch;

// ---- weight panels ---------------------------------------------------------------------------------
// 16 rows of 32 int8 codes -> dst[8][16][4]: the dword k of every row side by side (TDPBSSD's B
// layout). Two 8x8 dword transposes, one per 256-bit half (rows 0..7 and 8..15).
inline void store_vnni32(const __m256i* q, int8_t* dst) {
  __m512i z[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(q[i]), q[i + 8], 1);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i + 0] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // u[c] (c < 4): per 128-bit lane, rows 0..3 (of 8) of columns c and c + 4; u[c + 4]: rows 4..7.
  const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  for (int c = 0; c < 4; ++c) {
    _mm512_storeu_si512(dst + 64 * c, _mm512_permutex2var_epi64(u[c], lo, u[c + 4]));
    _mm512_storeu_si512(dst + 64 * (c + 4), _mm512_permutex2var_epi64(u[c], hi, u[c + 4]));
  }
}

inline __m256i nibbles_32(const uint8_t* qs) {  // low nibbles to bytes 0..15, high to 16..31
  const __m128i v = load128(qs);
  const __m128i m = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

inline __m256i iq4_table() { return _mm256_broadcastsi128_si256(load128(tandem::quant::kIq4Values)); }

// ---- 32-element blocks against Q8_0: y = d_w * d_a * sum(q * a) ---------------------------------------

struct LQ4_0 {
  using W = BlockQ4_0;
  static __m256i quants(const W& b) { return _mm256_sub_epi8(nibbles_32(b.qs), _mm256_set1_epi8(8)); }
};
struct LQ5_0 {
  using W = BlockQ5_0;
  static __m256i quants(const W& b) {
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    // bit j clear: code - 16, i.e. 0xf0 | nibble as int8; bit set: nibble | 0x10 - 16 = nibble
    const __m256i high_clear = _mm256_movm_epi8(~qh);
    return _mm256_or_si256(nibbles_32(b.qs), _mm256_and_si256(high_clear, _mm256_set1_epi8(char(0xf0))));
  }
};
struct LQ8_0 {
  using W = BlockQ8_0;
  static __m256i quants(const W& b) { return load256(b.qs); }
};
struct LIQ4_NL {
  using W = BlockIQ4_NL;
  static __m256i quants(const W& b) { return _mm256_shuffle_epi8(iq4_table(), nibbles_32(b.qs)); }
};

template <class K>
struct Legacy {
  static constexpr int kSub = 32;       // tile K
  static constexpr int kSubPerBlock = 1;
  static constexpr int kBlock = 32;
  static constexpr bool kMin = false;
  // panel [nb * 8][16][4]; wscale [nb][16] = d_w (zero for rows >= nr)
  static void unpack(const uint8_t* w, size_t w_stride, int nr, int64_t nb, int8_t* panel, float* wscale, float*) {
    __m256i q[16];
    for (int r = nr; r < 16; ++r) q[r] = _mm256_setzero_si256();
    for (int64_t b = 0; b < nb; ++b) {
      for (int r = 0; r < nr; ++r) {
        const auto& blk = reinterpret_cast<const typename K::W*>(w + r * w_stride)[b];
        q[r] = K::quants(blk);
        wscale[b * 16 + r] = h2f(blk.d);
      }
      for (int r = nr; r < 16; ++r) wscale[b * 16 + r] = 0;
      store_vnni32(q, panel + b * 512);
    }
  }
};

// ---- 256-element super-blocks against Q8_K: y = d_a * (sum_j d_w*sc_j * sum(q_j * a_j) - dmin * m_j * bsum_j)

// Q4_K / Q5_K: the 8 6-bit scales and mins (llama.cpp's utmp shuffle), times d and dmin, as 8 floats
// in sc[0] and mn[0] (8 floats each, as integer vectors for store_vnni32).
template <class W>
inline void scales_mins_k4(const W& b, __m256i* sc, __m256i* mn) {
  constexpr uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
  uint32_t utmp[4];
  std::memcpy(utmp, b.scales, 12);
  utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
  const uint32_t uaux = utmp[1] & kmask1;
  utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
  utmp[2] = uaux;
  utmp[0] &= kmask1;
  const __m128i sm = load128(utmp);  // bytes 0..7 scales, 8..15 mins
  const __m256 s = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm));
  const __m256 m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8)));
  sc[0] = _mm256_castps_si256(_mm256_mul_ps(s, _mm256_set1_ps(h2f(b.d))));
  mn[0] = _mm256_castps_si256(_mm256_mul_ps(m, _mm256_set1_ps(h2f(b.dmin))));
}

struct SQ4_K {
  using W = BlockQ4_K;
  static constexpr int kSub = 32;
  static constexpr bool kMin = true;
  static void unpack(const W& b, __m256i* q, __m256i* sc, __m256i* mn) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int j = 0; j < 4; ++j) {
      const __m256i bits = load256(b.qs + 32 * j);
      q[2 * j] = _mm256_and_si256(bits, m4);
      q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
    }
    scales_mins_k4(b, sc, mn);
  }
};

struct SQ5_K {
  using W = BlockQ5_K;
  static constexpr int kSub = 32;
  static constexpr bool kMin = true;
  static void unpack(const W& b, __m256i* q, __m256i* sc, __m256i* mn) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m1 = _mm256_set1_epi8(1);
    const __m256i hb = load256(b.qh);
    for (int j = 0; j < 4; ++j) {
      const __m256i bits = load256(b.qs + 32 * j);
      const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), m1);
      const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), m1);
      q[2 * j] = _mm256_or_si256(_mm256_and_si256(bits, m4), _mm256_slli_epi16(h0, 4));
      q[2 * j + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), _mm256_slli_epi16(h1, 4));
    }
    scales_mins_k4(b, sc, mn);
  }
};

// Q6_K: 16 sub-blocks of 16 with int8 scales; codes - 32 are signed 6-bit.
struct SQ6_K {
  using W = BlockQ6_K;
  static constexpr int kSub = 16;
  static constexpr bool kMin = false;
  static void unpack(const W& b, __m256i* q, __m256i* sc, __m256i*) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    for (int c = 0; c < 2; ++c) {
      const __m256i l0 = load256(b.ql + 64 * c), l1 = load256(b.ql + 64 * c + 32);
      const __m256i h = load256(b.qh + 32 * c);
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(h, m3), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4);
      const __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4);
      const __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4);
      q[4 * c + 0] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l0, m4), h0), k32);
      q[4 * c + 1] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l1, m4), h1), k32);
      q[4 * c + 2] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), h2), k32);
      q[4 * c + 3] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), h3), k32);
    }
    const __m256 d = _mm256_set1_ps(h2f(b.d));
    for (int h = 0; h < 2; ++h)
      sc[h] = _mm256_castps_si256(
          _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(b.scales + 8 * h))))));
  }
};

struct SIQ4_XS {
  using W = BlockIQ4_XS;
  static constexpr int kSub = 32;
  static constexpr bool kMin = false;
  static void unpack(const W& b, __m256i* q, __m256i* sc, __m256i*) {
    const __m256i table = iq4_table();
    alignas(32) float s[8];
    const float d = h2f(b.d);
    for (int k = 0; k < 8; ++k) {
      const int ls = ((b.scales_l[k / 2] >> (4 * (k % 2))) & 0xf) | ((b.scales_h >> (2 * k)) & 3) << 4;
      s[k] = d * float(ls - 32);
      q[k] = _mm256_shuffle_epi8(table, nibbles_32(b.qs + 16 * k));
    }
    sc[0] = _mm256_castps_si256(_mm256_load_ps(s));
  }
};

// Q4_K / Q5_K without per-sub-block tile stores: the 6-bit scale splits as sc = lo + (hi << kShift)
// with q * lo and q * hi still bytes (Q4_K: 4 + 2 bits, q <= 15; Q5_K: 3 + 3, q <= 31), so two panels
// of pre-scaled codes (unsigned, TDPBSUD) accumulate a whole super-block in two C tiles, K = 64:
//   y += d_a * d_w * (C_lo + (C_hi << kShift)) - sum_j dmin * m_j * bsum_j
inline void k4_scale_bytes(const uint8_t* s12, uint8_t* out) {  // the 8 scales of scales_mins_k4
  constexpr uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
  uint32_t u[3];
  std::memcpy(u, s12, 12);
  const uint32_t u0 = u[0] & kmask1, u1 = (u[2] & kmask2) | (((u[0] >> 6) & kmask3) << 4);
  std::memcpy(out, &u0, 4);
  std::memcpy(out + 4, &u1, 4);
}

template <class K, int kShiftBits>
struct Split {
  static constexpr int kSub = 64;  // tile K
  static constexpr int kBlock = 256;
  static constexpr bool kMin = true;
  static constexpr int kShift = kShiftBits;
  // panel [nb][lo, hi][64][16][4] (8 KB per super-block); wscale [nb][16] = d; wmin [nb][8][16] = dmin * m
  static void unpack(const uint8_t* w, size_t w_stride, int nr, int64_t nb, int8_t* panel, float* wscale,
                     float* wmin) {
    __m256i lo[8][16], hi[8][16], mn[16];
    for (int r = nr; r < 16; ++r) {
      for (int c = 0; c < 8; ++c) lo[c][r] = hi[c][r] = _mm256_setzero_si256();
      mn[r] = _mm256_setzero_si256();
    }
    for (int64_t b = 0; b < nb; ++b) {
      for (int r = 0; r < nr; ++r) {
        const auto& blk = reinterpret_cast<const typename K::W*>(w + r * w_stride)[b];
        __m256i q[8], sc_f;
        K::unpack(blk, q, &sc_f, &mn[r]);
        uint8_t sc[8];
        k4_scale_bytes(blk.scales, sc);
        for (int j = 0; j < 8; ++j) {  // bytes times a small constant: 16-bit products never carry
          lo[j][r] = _mm256_mullo_epi16(q[j], _mm256_set1_epi16(short(sc[j] & ((1 << kShift) - 1))));
          hi[j][r] = _mm256_mullo_epi16(q[j], _mm256_set1_epi16(short(sc[j] >> kShift)));
        }
        wscale[b * 16 + r] = h2f(blk.d);
      }
      for (int r = nr; r < 16; ++r) wscale[b * 16 + r] = 0;
      for (int j = 0; j < 8; ++j) {
        store_vnni32(lo[j], panel + b * 8192 + j * 512);
        store_vnni32(hi[j], panel + b * 8192 + 4096 + j * 512);
      }
      store_vnni32(mn, reinterpret_cast<int8_t*>(wmin + b * 8 * 16));
    }
  }
};

// Q6_K without per-sub-block tile stores: each int8 sub-block scale is written in balanced base 7,
// sc = e0 + 7 e1 + 49 e2 with digits in [-3, 3], so codes times a digit stay bytes (|q| <= 32, |q e| <= 96):
// three panels of pre-scaled codes accumulate a whole super-block in three C tiles, K = 64:
//   y += d_a * d_w * (C0 + 7 C1 + 49 C2)
// (16 products and 3 tile stores per super-block instead of 16 and 16.)
struct Digits6 {
  static constexpr int kSub = 64;  // tile K
  static constexpr int kBlock = 256;
  static constexpr bool kMin = false;
  static constexpr bool kDigits = true;
  // bytes q * e for a per-byte digit vector e in [-3, 3]
  static __m256i times_digit(__m256i q, __m256i e) {
    const __m256i q2 = _mm256_add_epi8(q, q), q3 = _mm256_add_epi8(q2, q);
    const __m256i mag = _mm256_abs_epi8(e);
    __m256i v = _mm256_blendv_epi8(q, q2, _mm256_cmpeq_epi8(mag, _mm256_set1_epi8(2)));
    v = _mm256_blendv_epi8(v, q3, _mm256_cmpeq_epi8(mag, _mm256_set1_epi8(3)));
    return _mm256_sign_epi8(v, e);  // negated for negative digits, zero for zero
  }
  // panel [nb][3][64][16][4] (12 KB per super-block); wscale [nb][16] = d
  static void unpack(const uint8_t* w, size_t w_stride, int nr, int64_t nb, int8_t* panel, float* wscale, float*) {
    __m256i dq[3][8][16];
    for (int r = nr; r < 16; ++r)
      for (int k = 0; k < 3; ++k)
        for (int c = 0; c < 8; ++c) dq[k][c][r] = _mm256_setzero_si256();
    for (int64_t b = 0; b < nb; ++b) {
      for (int r = 0; r < nr; ++r) {
        const auto& blk = reinterpret_cast<const BlockQ6_K*>(w + r * w_stride)[b];
        __m256i q[8], unused[2];
        SQ6_K::unpack(blk, q, unused, nullptr);
        alignas(32) int8_t digits[3][16];
        for (int s = 0; s < 16; ++s) {
          int rest = blk.scales[s];
          for (int k = 0; k < 3; ++k) {
            const int e = ((rest % 7) + 10) % 7 - 3;  // the digit in [-3, 3] congruent to rest mod 7
            digits[k][s] = int8_t(e);
            rest = (rest - e) / 7;
          }
        }
        for (int k = 0; k < 3; ++k)
          for (int c = 0; c < 8; ++c) {  // chunk c holds sub-blocks 2c (bytes 0..15) and 2c + 1
            const __m256i e = _mm256_set_m128i(_mm_set1_epi8(digits[k][2 * c + 1]), _mm_set1_epi8(digits[k][2 * c]));
            dq[k][c][r] = times_digit(q[c], e);
          }
        wscale[b * 16 + r] = h2f(blk.d);
      }
      for (int r = nr; r < 16; ++r) wscale[b * 16 + r] = 0;
      for (int k = 0; k < 3; ++k)
        for (int c = 0; c < 8; ++c) store_vnni32(dq[k][c], panel + b * 12288 + k * 4096 + c * 512);
    }
  }
};

template <class K>
struct Super {
  static constexpr int kSub = K::kSub;
  static constexpr int kSubPerBlock = 256 / kSub;
  static constexpr int kBlock = 256;
  static constexpr bool kMin = K::kMin;
  // panel [nb * 64][16][4]; wscale [nb * kSubPerBlock][16] = d * sc; wmin [nb * 8][16] = dmin * m
  static void unpack(const uint8_t* w, size_t w_stride, int nr, int64_t nb, int8_t* panel, float* wscale,
                     float* wmin) {
    // [32-element chunk][row] codes; [8 sub-blocks][row] scales (floats), transposed like the codes
    __m256i q[8][16], sc[2][16], mn[16];
    for (int r = nr; r < 16; ++r) {
      for (int c = 0; c < 8; ++c) q[c][r] = _mm256_setzero_si256();
      sc[0][r] = sc[1][r] = mn[r] = _mm256_setzero_si256();
    }
    for (int64_t b = 0; b < nb; ++b) {
      for (int r = 0; r < nr; ++r) {
        const auto& blk = reinterpret_cast<const typename K::W*>(w + r * w_stride)[b];
        __m256i qr[8], s[2], m;
        K::unpack(blk, qr, s, &m);
        for (int c = 0; c < 8; ++c) q[c][r] = qr[c];
        sc[0][r] = s[0];
        if constexpr (kSubPerBlock == 16) sc[1][r] = s[1];
        if constexpr (kMin) mn[r] = m;
      }
      for (int c = 0; c < 8; ++c) store_vnni32(q[c], panel + b * 4096 + c * 512);
      for (int h = 0; h < kSubPerBlock / 8; ++h)
        store_vnni32(sc[h], reinterpret_cast<int8_t*>(wscale + (b * kSubPerBlock + 8 * h) * 16));
      if constexpr (kMin) store_vnni32(mn, reinterpret_cast<int8_t*>(wmin + b * 8 * 16));
    }
  }
};

// ---- tile products ---------------------------------------------------------------------------------

// c = A (16 activation rows at a, a_stride apart) x B (panel rows at p), through C tile slot & 3.
// GCC's tile intrinsics paste their tile numbers into the asm text, so they must be literals: a macro,
// and a switch. A and B alternate so that loads overlap the dot products.
#define TANDEM_AMX_PRODUCT(C, A, B) \
  do {                              \
    _tile_zero(C);                  \
    _tile_loadd(A, a, a_stride);    \
    _tile_loadd(B, p, 64);          \
    _tile_dpbssd(C, A, B);          \
    _tile_stored(C, c, 64);         \
  } while (0)
inline void product(int slot, const int8_t* a, size_t a_stride, const int8_t* p, int32_t* c) {
  switch (slot & 3) {
    case 0: TANDEM_AMX_PRODUCT(0, 4, 6); break;
    case 1: TANDEM_AMX_PRODUCT(1, 5, 7); break;
    case 2: TANDEM_AMX_PRODUCT(2, 4, 6); break;
    default: TANDEM_AMX_PRODUCT(3, 5, 7); break;
  }
}
#undef TANDEM_AMX_PRODUCT

inline __m512 cvt_row(const int32_t* c) { return _mm512_cvtepi32_ps(_mm512_load_si512(c)); }

// Legacy blocks: acc[t] += float(C_b[t]) * (d_w[b] * d_a[t][b]); ascale [nb][16] is d_a per token.
// Products run kAhead blocks ahead of the float work that reads them (cbuf: 2 * kAhead slots); the
// 16 accumulators stay in registers (the token loops are unrolled), out receives them at the end.
void tile_legacy(int64_t nb, const int8_t* a, const int8_t* panel, const float* wscale,
                 const float* ascale, int32_t* cbuf, __m512* out) {
  constexpr int64_t kAhead = 4;
  __m512 acc[16];
#pragma GCC unroll 16
  for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
  auto issue = [&](int64_t b) {
    product(int(b), a + b * 512, 32, panel + b * 512, cbuf + (b & (2 * kAhead - 1)) * 256);
  };
  for (int64_t b = 0; b < imin(kAhead, nb); ++b) issue(b);
  for (int64_t b = 0; b < nb; ++b) {
    if (b + kAhead < nb) issue(b + kAhead);
    const int32_t* c = cbuf + (b & (2 * kAhead - 1)) * 256;
    const __m512 wd = _mm512_load_ps(wscale + b * 16);
    const float* ad = ascale + b * 16;
#pragma GCC unroll 16
    for (int t = 0; t < 16; ++t)
      acc[t] = _mm512_fmadd_ps(cvt_row(c + 16 * t), _mm512_mul_ps(wd, _mm512_set1_ps(ad[t])), acc[t]);
  }
#pragma GCC unroll 16
  for (int t = 0; t < 16; ++t) out[t] = acc[t];
}

// Super-blocks: the sub-block products of super-block b + 1 are issued between the token rows of b's
// float work, which is, per token,
//   acc[t] += d_a[t] * sum_j float(C_j[t]) * wscale_j  -  sum_j wmin_j * bsum_j[t]   (bsum pre-scaled by d_a)
template <int kSub, bool kMin>
void tile_super(int64_t nb, const int8_t* a, const int8_t* panel, const float* wscale, const float* wmin,
                const float* ascale, const float* bsum, int32_t* cbuf, __m512* acc) {
  constexpr int kN = 256 / kSub;
  constexpr int kPanelBytes = kSub / 4 * 64;  // per sub-block
  for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
  auto issue = [&](int64_t b, int j) {
    product(j, a + b * 4096 + j * kPanelBytes, kSub, panel + b * 4096 + j * kPanelBytes,
            cbuf + ((b & 1) * kN + j) * 256);
  };
  for (int j = 0; j < kN; ++j) issue(0, j);
  for (int64_t b = 0; b < nb; ++b) {
    const int32_t* cb = cbuf + (b & 1) * kN * 256;
    const float* sc = wscale + b * kN * 16;
    const float* mn = wmin + b * 8 * 16;
    for (int t = 0; t < 16; ++t) {
      if (b + 1 < nb)
        for (int j = (t * kN + 15) / 16; j < ((t + 1) * kN + 15) / 16; ++j) issue(b + 1, j);
      __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
      for (int j = 0; j < kN; j += 2) {
        s0 = _mm512_fmadd_ps(cvt_row(cb + j * 256 + 16 * t), _mm512_load_ps(sc + j * 16), s0);
        s1 = _mm512_fmadd_ps(cvt_row(cb + (j + 1) * 256 + 16 * t), _mm512_load_ps(sc + (j + 1) * 16), s1);
      }
      acc[t] = _mm512_fmadd_ps(_mm512_add_ps(s0, s1), _mm512_set1_ps(ascale[b * 16 + t]), acc[t]);
      if constexpr (kMin) {
        const float* bs = bsum + (t * nb + b) * 8;
        for (int j = 0; j < 8; ++j) acc[t] = _mm512_fnmadd_ps(_mm512_load_ps(mn + j * 16), _mm512_set1_ps(bs[j]), acc[t]);
      }
    }
  }
}

// Split K-quants: per super-block 8 dot products (4 K-steps x lo, hi) into one C pair, 2 tile stores;
// the pair of super-block b + 1 is computed before the float work of b reads b's pair.
#define TANDEM_AMX_SPLIT(CL, CH)                                   \
  do {                                                             \
    _tile_zero(CL);                                                \
    _tile_zero(CH);                                                \
    for (int c = 0; c < 4; ++c) {                                  \
      _tile_loadd(4, ab + c * 1024, 64);                           \
      _tile_loadd(6, pb + c * 1024, 64);                           \
      _tile_loadd(7, pb + 4096 + c * 1024, 64);                    \
      _tile_dpbsud(CL, 4, 6);                                      \
      _tile_dpbsud(CH, 4, 7);                                      \
    }                                                              \
    _tile_stored(CL, cb, 64);                                      \
    _tile_stored(CH, cb + 256, 64);                                \
  } while (0)
inline void split_products(int64_t b, const int8_t* a, const int8_t* panel, int32_t* cbuf) {
  const int8_t* ab = a + b * 4096;
  const int8_t* pb = panel + b * 8192;
  int32_t* cb = cbuf + (b & 1) * 512;
  if (b & 1) TANDEM_AMX_SPLIT(2, 3);
  else TANDEM_AMX_SPLIT(0, 1);
}
#undef TANDEM_AMX_SPLIT

// Q6_K digits: per super-block 12 dot products (4 K-steps x 3 digit panels) into three C tiles, 3
// stores; super-block b + 1's products run before the float work of b (C tiles 0-2 and 3-5 alternate).
#define TANDEM_AMX_DIGITS(C0, C1, C2)             \
  do {                                            \
    _tile_zero(C0);                               \
    _tile_zero(C1);                               \
    _tile_zero(C2);                               \
    for (int c = 0; c < 4; ++c) {                 \
      _tile_loadd(6, ab + c * 1024, 64);          \
      _tile_loadd(7, pb + c * 1024, 64);          \
      _tile_dpbssd(C0, 6, 7);                     \
      _tile_loadd(7, pb + 4096 + c * 1024, 64);   \
      _tile_dpbssd(C1, 6, 7);                     \
      _tile_loadd(7, pb + 8192 + c * 1024, 64);   \
      _tile_dpbssd(C2, 6, 7);                     \
    }                                             \
    _tile_stored(C0, cb, 64);                     \
    _tile_stored(C1, cb + 256, 64);               \
    _tile_stored(C2, cb + 512, 64);               \
  } while (0)
inline void digit_products(int64_t b, const int8_t* a, const int8_t* panel, int32_t* cbuf) {
  const int8_t* ab = a + b * 4096;
  const int8_t* pb = panel + b * 12288;
  int32_t* cb = cbuf + (b & 1) * 768;
  if (b & 1) TANDEM_AMX_DIGITS(3, 4, 5);
  else TANDEM_AMX_DIGITS(0, 1, 2);
}
#undef TANDEM_AMX_DIGITS

void tile_digits(int64_t nb, const int8_t* a, const int8_t* panel, const float* wscale, const float* ascale,
                 int32_t* cbuf, __m512* acc) {
  for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
  digit_products(0, a, panel, cbuf);
  for (int64_t b = 0; b < nb; ++b) {
    if (b + 1 < nb) digit_products(b + 1, a, panel, cbuf);
    const int32_t* cb = cbuf + (b & 1) * 768;
    const __m512 dw = _mm512_load_ps(wscale + b * 16);
    for (int t = 0; t < 16; ++t) {
      const __m512i c1 = _mm512_load_si512(cb + 256 + 16 * t), c2 = _mm512_load_si512(cb + 512 + 16 * t);
      // C0 + 7 C1 + 49 C2, as shifts: 7x = 8x - x, 49x = 64x - 16x + x
      __m512i isum = _mm512_add_epi32(_mm512_load_si512(cb + 16 * t), _mm512_sub_epi32(_mm512_slli_epi32(c1, 3), c1));
      isum = _mm512_add_epi32(isum, _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(c2, 6), _mm512_slli_epi32(c2, 4)), c2));
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), dw), _mm512_set1_ps(ascale[b * 16 + t]), acc[t]);
    }
  }
}

template <int kShift>
void tile_split(int64_t nb, const int8_t* a, const int8_t* panel, const float* wscale, const float* wmin,
                const float* ascale, const float* bsum, int32_t* cbuf, __m512* acc) {
  for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
  split_products(0, a, panel, cbuf);
  for (int64_t b = 0; b < nb; ++b) {
    if (b + 1 < nb) split_products(b + 1, a, panel, cbuf);
    const int32_t* cb = cbuf + (b & 1) * 512;
    const __m512 dw = _mm512_load_ps(wscale + b * 16);
    const float* mn = wmin + b * 8 * 16;
    for (int t = 0; t < 16; ++t) {
      const __m512i isum = _mm512_add_epi32(_mm512_load_si512(cb + 16 * t),
                                            _mm512_slli_epi32(_mm512_load_si512(cb + 256 + 16 * t), kShift));
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(isum), dw);
      v = _mm512_fmadd_ps(v, _mm512_set1_ps(ascale[b * 16 + t]), acc[t]);
      const float* bs = bsum + (t * nb + b) * 8;
      for (int j = 0; j < 8; ++j) v = _mm512_fnmadd_ps(_mm512_load_ps(mn + j * 16), _mm512_set1_ps(bs[j]), v);
      acc[t] = v;
    }
  }
}

// ---- driver ----------------------------------------------------------------------------------------

template <class P>
constexpr bool kSplit = requires { P::kShift; };
template <class P>
constexpr bool kDigits = requires { P::kDigits; };

template <class K, bool kLegacy>
void gemm(int64_t n_in, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
          int64_t n_tokens, float* y, size_t y_stride) {
  constexpr uint32_t kId = uint32_t(K::kType);
  if (n_tokens < kMinTokens) return g_fallback[kId](n_in, w, w_stride, n_rows, x, x_stride, n_tokens, y, y_stride);
  using P = typename K::Panel;
  ensure_tile_config(P::kSub);
  Scratch& s = t_scratch;
  const int64_t nb = n_in / P::kBlock;
  const int64_t n_tiles = (n_tokens + 15) / 16;
  const auto* xb = static_cast<const uint8_t*>(x);

  // Activations, once per call, packed per 16-token tile as [sub-block][token][kSub bytes] so that each
  // A tile is 16 contiguous rows (tokens past n_tokens are zeros), with their scales beside them:
  // ascale [tile][block][token] = d; bsum (Q4_K, Q5_K) [tile][token][block][8] = d * sum of 32 codes.
  constexpr int kSub = P::kSub;
  int8_t* apack = s.act.get<int8_t>(size_t(n_tiles * n_in * 16));
  float* ascale = s.act_scale.get<float>(size_t(n_tiles * nb * 16));
  float* bsum = P::kMin ? s.act_bsum.get<float>(size_t(n_tiles * 16 * nb * 8)) : nullptr;
  for (int64_t tile = 0; tile < n_tiles; ++tile) {
    int8_t* at = apack + tile * n_in * 16;
    for (int t = 0; t < 16; ++t) {
      const int64_t tok = tile * 16 + t;
      const uint8_t* row = xb + tok * x_stride;
      for (int64_t b = 0; b < nb; ++b) {
        const int8_t* qs;
        float d;
        if (tok >= n_tokens) {
          qs = nullptr;
          d = 0;
        } else if constexpr (kLegacy) {
          const auto* blk = reinterpret_cast<const BlockQ8_0*>(row) + b;
          qs = blk->qs;
          d = h2f(blk->d);
        } else {
          const auto* blk = reinterpret_cast<const BlockQ8_K*>(row) + b;
          qs = blk->qs;
          d = blk->d;
          if constexpr (P::kMin) {
            const __m256i pairs = _mm256_madd_epi16(load256(blk->bsums), _mm256_set1_epi16(1));
            _mm256_storeu_ps(bsum + ((tile * 16 + t) * nb + b) * 8,
                             _mm256_mul_ps(_mm256_cvtepi32_ps(pairs), _mm256_set1_ps(d)));
          }
        }
        if (!qs && P::kMin) _mm256_storeu_ps(bsum + ((tile * 16 + t) * nb + b) * 8, _mm256_setzero_ps());
        ascale[(tile * nb + b) * 16 + t] = d;
        int8_t* dst = at + b * P::kBlock * 16 + t * kSub;
        for (int j = 0; j < P::kBlock / kSub; ++j) {
          if constexpr (kSub == 64) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j * 16 * kSub),
                                qs ? load256(qs + j * kSub) : _mm256_setzero_si256());
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j * 16 * kSub + 32),
                                qs ? load256(qs + j * kSub + 32) : _mm256_setzero_si256());
          } else if constexpr (kSub == 32)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j * 16 * kSub),
                                qs ? load256(qs + j * kSub) : _mm256_setzero_si256());
          else
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j * 16 * kSub),
                             qs ? load128(qs + j * kSub) : _mm_setzero_si128());
        }
      }
    }
  }

  int8_t* panel = s.panel.get<int8_t>(size_t(n_in) * 48);  // Split: two panels, Digits6 three
  float* wscale = s.wscale.get<float>(size_t(n_in / P::kSub) * 16);
  float* wmin = P::kMin ? s.wmin.get<float>(size_t(n_in / 32) * 16) : nullptr;
  int32_t* cbuf = s.cbuf.get<int32_t>(2 * 16 * 256);  // two super-blocks of Q6_K products
  const auto* wb = static_cast<const uint8_t*>(w);
  __m512 acc[16];
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    const int nr = int(imin(16, n_rows - r0));
    P::unpack(wb + r0 * w_stride, w_stride, nr, nb, panel, wscale, wmin);
    const __mmask16 mask = __mmask16((1u << nr) - 1);
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int8_t* a = apack + tile * n_in * 16;
      if constexpr (kSplit<P>)
        tile_split<P::kShift>(nb, a, panel, wscale, wmin, ascale + tile * nb * 16, bsum + tile * 16 * nb * 8, cbuf, acc);
      else if constexpr (kDigits<P>)
        tile_digits(nb, a, panel, wscale, ascale + tile * nb * 16, cbuf, acc);
      else if constexpr (kLegacy)
        tile_legacy(nb, a, panel, wscale, ascale + tile * nb * 16, cbuf, acc);
      else
        tile_super<P::kSub, P::kMin>(nb, a, panel, wscale, wmin, ascale + tile * nb * 16,
                                     P::kMin ? bsum + tile * 16 * nb * 8 : nullptr, cbuf, acc);
      const int nt = int(imin(16, n_tokens - tile * 16));
      for (int t = 0; t < nt; ++t) _mm512_mask_storeu_ps(y + (tile * 16 + t) * y_stride + r0, mask, acc[t]);
    }
  }
}

template <WeightType T, class P>
struct Kind {
  static constexpr WeightType kType = T;
  using Panel = P;
};

}  // namespace

void fill_kernels(CpuKernels& k) {
  using WT = WeightType;
  auto set = [&](WT t, GemmFn g) {
    g_fallback[uint32_t(t)] = k.gemm[uint32_t(t)];
    k.gemm[uint32_t(t)] = g;
    k.gemm_isa[uint32_t(t)] = Isa::Amx;
    k.panel[uint32_t(t)] = true;
  };
  set(WT::Q4_0, gemm<Kind<WT::Q4_0, Legacy<LQ4_0>>, true>);
  set(WT::Q5_0, gemm<Kind<WT::Q5_0, Legacy<LQ5_0>>, true>);
  set(WT::Q8_0, gemm<Kind<WT::Q8_0, Legacy<LQ8_0>>, true>);
  set(WT::IQ4_NL, gemm<Kind<WT::IQ4_NL, Legacy<LIQ4_NL>>, true>);
  set(WT::Q4_K, gemm<Kind<WT::Q4_K, Split<SQ4_K, 4>>, false>);
  set(WT::Q5_K, gemm<Kind<WT::Q5_K, Split<SQ5_K, 3>>, false>);
  set(WT::Q6_K, gemm<Kind<WT::Q6_K, Digits6>, false>);
  set(WT::IQ4_XS, gemm<Kind<WT::IQ4_XS, Super<SIQ4_XS>>, false>);
}

}  // namespace tandem::cpu::amx
