// AVX2 decode and prefill of the panels repacked at load (CpuBackend::repack; layouts in x86/packed_x86.inc): the
// AVX-512 level's 16-row panels read as two ymm halves of 8 rows, through the token tiles of avx2/tiles_avx2.inc
// (calls of 16 tokens and more expand each panel into an unpacked panel's layout), so a token's bits are the
// same in a call of any size.
#include <immintrin.h>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"
#include "quant/formats.h"

namespace tandem::cpu::avx2 {
namespace {

#include "backend/cpu/avx2/tiles_avx2.inc"

// ---- panels kept from load: Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q8_0 and IQ4_XS (x86/packed_x86.inc) ------
// Decode reads the AVX-512 level's 16-row panels as two ymm halves of 8 rows: a step's codes one to five
// operations from a load, a group's scales for 8 rows one conversion, where the one-row kernels spent two scalar
// f16 conversions and a broadcast per block and row (Zen 5, --cpu-isa avx2, synth 1B Q4_0: 14 GB/s a thread,
// compute-bound). Calls of 16 tokens and more expand each panel into the unpacking kernel's layout
// and run its tiles. Both compute each group's exact integer sum and then the float steps of tile<P, NT>
// (tiles_avx2.inc) in the same order, so a token's bits depend on neither the call's token count nor its place in it.
#include "backend/cpu/x86/packed_x86.inc"

// 0xff in byte i where bit i of m is set.
inline __m256i bytes_from_bits(uint32_t m) {
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                          3, 3, 3, 3, 3, 3);
  const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);  // byte i: every bit but i % 8
  const __m256i v = _mm256_or_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(int(m)), spread), others);
  return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}

// IQ4_XS's and IQ4_NL's codes u for the 16 indices, in both 128-bit lanes (a vpshufb's table).
inline __m256i iq4_grid() {
  return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Grid.u)));
}

// Half h (rows 8h .. 8h + 7) of step s (inputs 4s .. 4s + 3 of group g) of a packed panel: [8 rows][4 codes] as
// the unpacked panel's unsigned bytes.
template <class P>
inline __m256i packed_half(const uint8_t* panel, int64_t n, int64_t g, int s, int h) {
  auto load = [](const uint8_t* at) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(at)); };
  if constexpr (P::kType == WeightType::IQ4_XS) {  // Q4_K's nibbles, each the index of its grid code u
    const uint8_t* sb = panel + size_t(g / 8) * PackedIQ4XS::kBytes;
    const __m256i v = load(sb + PackedIQ4XS::kNibbles + (4 * (g % 8) + (s & 3)) * 64 + 32 * h);
    const __m256i idx = _mm256_and_si256(s < 4 ? v : _mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f));
    return _mm256_shuffle_epi8(iq4_grid(), idx);
  } else if constexpr (kNibblePanel<P>) {
    const __m256i v = load(panel + g * 256 + (s & 3) * 64 + 32 * h);
    const __m256i c = _mm256_and_si256(s < 4 ? v : _mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f));
    if constexpr (kGridNibbles<P>) return _mm256_shuffle_epi8(iq4_grid(), c);
    if constexpr (!kFifthBits<P>) return c;
    uint32_t fifth;
    std::memcpy(&fifth, panel + packed_masks_at(n) + g * 64 + 8 * s + 4 * h, 4);
    return _mm256_or_si256(c, _mm256_and_si256(bytes_from_bits(fifth), _mm256_set1_epi8(16)));
  } else {
    return load(panel + g * P::kGroup * 16 + 64 * s + 32 * h);
  }
}

// Group g's weight scales for the 8 rows of half h, as the unpacked panel's floats (the same products).
template <class P>
inline __m256 packed_wscale(const uint8_t* panel, int64_t n, int64_t g, int h) {
  auto bytes = [](const uint8_t* at) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(at)); };
  auto f16 = [](const uint8_t* at) { return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(at))); };
  if constexpr (P::kType == WeightType::IQ4_XS) {  // d * (6-bit scale - 32)
    const uint8_t* sb = panel + size_t(g / 8) * PackedIQ4XS::kBytes;
    const __m256i sc = _mm256_cvtepi8_epi32(bytes(sb + PackedIQ4XS::kScales + 16 * (g % 8) + 8 * h));
    return _mm256_mul_ps(f16(sb + PackedIQ4XS::kD + 16 * h), _mm256_cvtepi32_ps(sc));
  } else {
    return f16(panel + packed_scales_at<P>(n) + 32 * g + 16 * h);
  }
}

// Group g's mins for the 8 rows of half h (P::kMin: Q4_1, Q5_1), as the unpacked panel's floats: the negated f16.
template <class P>
inline __m256 packed_wmin(const uint8_t* panel, int64_t n, int64_t g, int h) {
  const __m256 m =
      _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(panel + packed_mins_at<P>(n) + 32 * g + 16 * h)));
  return _mm256_xor_ps(m, _mm256_set1_ps(-0.0f));
}

// NT tokens (from t0) against one packed panel's rows [0, nr), group by group: one token (two of Q8_0) takes both
// halves at once, more a half at a time (16 ymm registers hold their sums for 8 rows beside the codes, not for 16;
// the second half's loads find the lines the first brought in). Each code vector is loaded once for the tile's
// tokens. Zen 5, one thread, Gemma 3's output shape (ms) both halves / a half at a time: 1 token Q4_0 2.30 / 2.60,
// Q8_0 4.30 / 4.80; 2 tokens Q4_0 3.78 / 3.06, Q8_0 5.29 / 7.22; 4 tokens (twice 2 before) Q4_0 7.01 / 5.40.
template <class P, int NT>
void packed_tile(const Panel& p, const uint8_t* panel, size_t panel_bytes, int64_t t0, int nr, float* y,
                 size_t y_stride) {
  constexpr int kHalves = NT == 1 || (kSigned<P> && NT == 2) ? 2 : 1;  // per pass over the groups
  const int64_t n_groups = p.n_groups;
  const size_t group_share = (panel_bytes / size_t(n_groups) + 63) / 64 * 64;  // of the next panel, per group
  const int8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = p.aq + (t0 + t) * p.n;
  for (int h0 = 0; h0 < 2 && 8 * h0 < nr; h0 += kHalves) {
    __m256 acc[kHalves][NT];
    for (int hh = 0; hh < kHalves; ++hh)
      for (int t = 0; t < NT; ++t) acc[hh][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < n_groups; ++g) {
      // The next panel, as far along. Without, a thread's panels streamed at 9-13 GB/s from DRAM (Zen 5, one
      // token through Gemma 3's 640 x 262144 output shape: Q4_0 10.0 -> 2.3 ms, Q5_0 5.7 -> 4.3, Q8_0 13.8 ->
      // 4.3), and even from L3 (4096 x 8192 Q8_0: 1.20 -> 0.64 ms).
      if (h0 == 0)
        for (size_t l = 0; l < group_share; l += 64)
          _mm_prefetch(reinterpret_cast<const char*>(panel + panel_bytes + g * group_share + l), _MM_HINT_T0);
      for (int hh = 0; hh < kHalves; ++hh) {
        const int h = h0 + hh;
        auto ws = [&] { return packed_wscale<P>(panel, p.n, g, h); };
        if constexpr (kSigned<P>)
          add_group<P, NT>(p, a, t0, g, [&](int s) {
            const __m256i q = _mm256_xor_si256(packed_half<P>(panel, p.n, g, s, h), _mm256_set1_epi8(char(0x80)));
            return SignedStep{_mm256_abs_epi8(q), q};
          }, ws, acc[hh]);
        else
          add_group<P, NT>(p, a, t0, g, [&](int s) { return packed_half<P>(panel, p.n, g, s, h); }, ws, acc[hh]);
        if constexpr (P::kMin) {  // as tile<P, NT>
          const __m256 wm = packed_wmin<P>(panel, p.n, g, h);
          for (int t = 0; t < NT; ++t)
            acc[hh][t] = _mm256_fnmadd_ps(wm, _mm256_set1_ps(p.amin[(t0 + t) * n_groups + g]), acc[hh][t]);
        }
      }
    }
    for (int hh = 0; hh < kHalves && 8 * (h0 + hh) < nr; ++hh) {
      const __m256i keep = store_mask(nr - 8 * (h0 + hh));
      for (int t = 0; t < NT; ++t) _mm256_maskstore_ps(y + t * y_stride + 8 * (h0 + hh), keep, acc[hh][t]);
    }
  }
}

constexpr int kPackedTileTokens = 4;  // a half's float and integer sums of four tokens beside the codes

template <class P, int NT>
void run_packed_tile(int nt, const Panel& p, const uint8_t* panel, size_t panel_bytes, int64_t t0, int nr, float* y,
                     size_t y_stride) {
  if constexpr (NT > 1) {
    if (nt < NT) return run_packed_tile<P, NT - 1>(nt, p, panel, panel_bytes, t0, nr, y, y_stride);
  }
  packed_tile<P, NT>(p, panel, panel_bytes, t0, nr, y, y_stride);
}

// kernels.h PackedGemmFn.
template <class P>
void packed_gemm(int64_t n, const uint8_t* panels, int64_t n_rows, const void* x, size_t x_stride, int64_t n_tokens,
                 float* y, size_t y_stride) {
  Panel p;
  prepare_activations<P>(p, n, x, x_stride, n_tokens);
  const size_t bytes = packed_panel_bytes<P>(n);
  if (n_tokens >= kMinTokens) {
    Scratch& s = t_scratch;
    uint8_t* codes = s.codes.get<uint8_t>(size_t(n) * 16);  // finish_panel's
    float* wscale = s.wscale.get<float>(size_t(p.n_groups) * 16);
    float* wmin = P::kMin ? s.wmin.get<float>(size_t(p.n_groups) * 16) : nullptr;
    p.codes = codes, p.wscale = wscale, p.wmin = wmin;
    for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
      const uint8_t* panel = panels + size_t(r0 / 16) * bytes;
      for (int64_t g = 0; g < p.n_groups; ++g) {
        for (int st = 0; st < P::kGroup / 4; ++st)
          for (int h = 0; h < 2; ++h)
            _mm256_store_si256(reinterpret_cast<__m256i*>(codes + g * P::kGroup * 16 + 64 * st + 32 * h),
                               packed_half<P>(panel, n, g, st, h));
        for (int h = 0; h < 2; ++h) {
          _mm256_store_ps(wscale + 16 * g + 8 * h, packed_wscale<P>(panel, n, g, h));
          if constexpr (P::kMin) _mm256_store_ps(wmin + 16 * g + 8 * h, packed_wmin<P>(panel, n, g, h));
        }
      }
      finish_panel<P>(p);
      panel_tiles<P>(p, int(n_rows - r0 < 16 ? n_rows - r0 : 16), n_tokens, y + r0, y_stride);
    }
    return;
  }
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    const int nr = int(n_rows - r0 < 16 ? n_rows - r0 : 16);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kPackedTileTokens) {
      const int nt = int(n_tokens - t0 < kPackedTileTokens ? n_tokens - t0 : kPackedTileTokens);
      run_packed_tile<P, kPackedTileTokens>(nt, p, panels + size_t(r0 / 16) * bytes, bytes, t0, nr,
                                            y + t0 * y_stride + r0, y_stride);
    }
  }
}

// A super-block format's packed panels for calls of fewer than kMinTokens tokens: Tile::run<NT>(a, nb, panel, nr, y,
// y_stride) over each panel, a tile of at most kPackedTileTokens tokens (a: their Q8_K rows) at a time.
template <class Tile, int NT>
void run_super_tile(int nt, const BlockQ8_K* const* a, int64_t nb, const uint8_t* panel, int nr, float* y,
                    size_t y_stride) {
  if constexpr (NT > 1) {
    if (nt < NT) return run_super_tile<Tile, NT - 1>(nt, a, nb, panel, nr, y, y_stride);
  }
  Tile::template run<NT>(a, nb, panel, nr, y, y_stride);
}

template <class Tile>
void super_few_tokens(int64_t n, const uint8_t* panels, size_t bytes, int64_t n_rows, const void* x, size_t x_stride,
                      int64_t n_tokens, float* y, size_t y_stride) {
  const auto* xb = static_cast<const uint8_t*>(x);
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    const int nr = int(n_rows - r0 < 16 ? n_rows - r0 : 16);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kPackedTileTokens) {
      const int nt = int(n_tokens - t0 < kPackedTileTokens ? n_tokens - t0 : kPackedTileTokens);
      const BlockQ8_K* a[kPackedTileTokens];
      for (int t = 0; t < nt; ++t) a[t] = reinterpret_cast<const BlockQ8_K*>(xb + (t0 + t) * x_stride);
      run_super_tile<Tile, kPackedTileTokens>(nt, a, n / 256, panels + size_t(r0 / 16) * bytes, nr,
                                              y + t0 * y_stride + r0, y_stride);
    }
  }
}

// ---- Q6_K, Q3_K and Q2_K panels kept from load (x86/packed_x86.inc) --------------------------------------
// Decode reads a group's codes of 8 rows from one or two loads, a few operations a step, where Q6_K's one-row
// kernel (decode.cpp) spent a shuffle per step on the scales and ran at 30 GB/s a thread from L3 (Zen 5), and the
// float tile's per-group scale steps held Q3_K and Q2_K to 15-17. Against the Q8_K activations as they are, kSum
// steps' vpmaddubsw pair sums add in int16 before one vpmaddwd by the group's integer scale; a code offset u = q +
// kOffset comes off as kOffset * sum_g scale_g * bsum_g, and Q2_K's mins as sum_g min_g * bsum_g in
// the same vpmaddwd per pair of groups against the activation's bsums. That is the exact integer q6k_tile forms for
// a super-block, then the same float steps, so a token's bits are the same in a call of any size (calls of
// kMinTokens and more unpack each panel into q6k_tile's layout).

// 8 bytes at p in an xmm's low half.
inline __m128i bytes8(const uint8_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }
inline __m256i load32(const uint8_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }

// The formats of the integer-scale tiles below. Each gives: Packed, its layout; kOffset, a power of two: codes u = q +
// kOffset (Q2_K: none, its codes are its q and its mins come off instead, kMin); kSum, the steps whose pair
// sums add in int16 (2 * kSum * max u * 128 <= 32767); codes(sb, g, h, u), group g's four steps for the 8 rows of
// half h; scales(sb, g, h), their scales as int8; bias(sb, g, h), the bytes taken against the bsums (the scales,
// or Q2_K's mins).
struct Q6KFormat {
  using Packed = PackedQ6K;
  static constexpr int kOffset = 32, kSum = 2;
  static constexpr bool kMin = false;
  static __m128i scales(const uint8_t* sb, int g, int h) { return bytes8(sb + PackedQ6K::kScales + 16 * g + 8 * h); }
  static __m128i bias(const uint8_t* sb, int g, int h) { return scales(sb, g, h); }
  // The low nibbles of steps 0..3, two groups to a byte; the two high bits of a group's four steps in one load.
  static void codes(const uint8_t* sb, int g, int h, __m256i (&u)[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    const __m256i high = load32(sb + PackedQ6K::kHigh + 64 * g + 32 * h);
    // each step's two high bits to bits 4 and 5 (16-bit shifts: the mask drops what crossed a byte)
    const __m256i hi[4] = {_mm256_slli_epi16(high, 4), _mm256_slli_epi16(high, 2), high, _mm256_srli_epi16(high, 2)};
    for (int s = 0; s < 4; ++s) {
      const __m256i v = load32(sb + PackedQ6K::kLow + (4 * (g / 2) + s) * 64 + 32 * h);
      const __m256i low = _mm256_and_si256(g % 2 ? _mm256_srli_epi16(v, 4) : v, m4);
      u[s] = _mm256_or_si256(low, _mm256_and_si256(hi[s], m30));
    }
  }
};

struct Q3KFormat {
  using Packed = PackedQ3K;
  static constexpr int kOffset = 4, kSum = 4;
  static constexpr bool kMin = false;
  static __m128i scales(const uint8_t* sb, int g, int h) { return bytes8(sb + PackedQ3K::kScales + 16 * g + 8 * h); }
  static __m128i bias(const uint8_t* sb, int g, int h) { return scales(sb, g, h); }
  // Two bits a step, four steps to a byte; the third bits of two groups' steps in one load, a step to a bit.
  static void codes(const uint8_t* sb, int g, int h, __m256i (&u)[4]) {
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    const __m256i v = load32(sb + PackedQ3K::kLow + 64 * g + 32 * h);
    const __m256i high = load32(sb + PackedQ3K::kHigh + 64 * (g / 2) + 32 * h);
    const __m256i third = g % 2 ? _mm256_srli_epi16(high, 4) : high;  // step s's bit at bit s
    const __m256i at2[4] = {_mm256_slli_epi16(third, 2), _mm256_slli_epi16(third, 1), third,
                            _mm256_srli_epi16(third, 1)};  // ... moved to bit 2
    const __m256i low[4] = {v, _mm256_srli_epi16(v, 2), _mm256_srli_epi16(v, 4), _mm256_srli_epi16(v, 6)};
    for (int s = 0; s < 4; ++s) u[s] = _mm256_or_si256(_mm256_and_si256(low[s], m3), _mm256_and_si256(at2[s], m4));
  }
};

struct Q2KFormat {
  using Packed = PackedQ2K;
  static constexpr int kOffset = 0, kSum = 4;
  static constexpr bool kMin = true;
  static __m128i scales(const uint8_t* sb, int g, int h) {
    return _mm_and_si128(bytes8(sb + PackedQ2K::kScales + 16 * g + 8 * h), _mm_set1_epi8(0x0f));
  }
  static __m128i bias(const uint8_t* sb, int g, int h) {  // the mins
    return _mm_and_si128(_mm_srli_epi16(bytes8(sb + PackedQ2K::kScales + 16 * g + 8 * h), 4), _mm_set1_epi8(0x0f));
  }
  static void codes(const uint8_t* sb, int g, int h, __m256i (&u)[4]) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i v = load32(sb + PackedQ2K::kCodes + 64 * g + 32 * h);
    const __m256i low[4] = {v, _mm256_srli_epi16(v, 2), _mm256_srli_epi16(v, 4), _mm256_srli_epi16(v, 6)};
    for (int s = 0; s < 4; ++s) u[s] = _mm256_and_si256(low[s], m3);
  }
};

// 8 rows' int8 scales as [s, s] int16 pairs, vpmaddwd's other operand.
inline __m256i scale_pairs(__m128i bytes) { return _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(bytes, bytes)); }

// Groups g and g + 1's bias bytes of 8 rows as [b_g, b_g+1] int16 pairs, against [bsum_g, bsum_g+1].
template <class F>
inline __m256i bias_pairs(const uint8_t* sb, int g, int h) {
  return _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(F::bias(sb, g, h), F::bias(sb, g + 1, h)));
}

// A panel's 8 rows' d (or Q2_K's dmin) at the layout's offset `at`, half h.
inline __m256 f16x8(const uint8_t* sb, size_t at, int h) {
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(sb + at + 16 * h)));
}

// One super-block's integer sums and bsum terms of a token into acc: the float steps every tile of these formats
// shares (so the same bits in any call).
template <class F>
inline __m256 add_super(__m256 acc, __m256i is, __m256i bias, __m256 dw, __m256 dmin, float ad) {
  if constexpr (F::kMin) {
    return add_super_min(acc, is, bias, dw, dmin, ad);
  } else {
    const __m256i total = _mm256_sub_epi32(is, _mm256_slli_epi32(bias, std::countr_zero(unsigned(F::kOffset))));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(dw, _mm256_set1_ps(ad)), acc);
  }
}

// NT tokens (a: their Q8_K rows) against one panel's rows [0, nr): one token takes both halves at once, more a half
// at a time (as packed_tile above).
template <class F, int NT>
void group16_packed_tile(const BlockQ8_K* const* a, int64_t nb, const uint8_t* panel, int nr, float* y,
                         size_t y_stride) {
  constexpr size_t kBytes = F::Packed::kBytes;
  constexpr int kHalves = NT == 1 ? 2 : 1;
  constexpr size_t kShare = (kBytes / 16 + 63) / 64 * 64;  // of the next super-block, per group
  for (int h0 = 0; h0 < 2 && 8 * h0 < nr; h0 += kHalves) {
    __m256 acc[kHalves][NT];
    for (int hh = 0; hh < kHalves; ++hh)
      for (int t = 0; t < NT; ++t) acc[hh][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* sb = panel + size_t(b) * kBytes;
      __m256i is[kHalves][NT];
      for (int hh = 0; hh < kHalves; ++hh)
        for (int t = 0; t < NT; ++t) is[hh][t] = _mm256_setzero_si256();
      for (int g = 0; g < 16; ++g) {
        // The next super-block (the next panel's first after the last), a share per group: without, the loads
        // wait on DRAM with too few misses in flight (as packed_tile's prefetch above).
        if (h0 == 0)
          for (size_t l = 0; l < kShare; l += 64)
            _mm_prefetch(reinterpret_cast<const char*>(sb + kBytes + g * kShare + l), _MM_HINT_T0);
        for (int hh = 0; hh < kHalves; ++hh) {
          const int h = h0 + hh;
          __m256i u[4];
          F::codes(sb, g, h, u);
          const __m256i sc = scale_pairs(F::scales(sb, g, h));
          for (int s = 0; s < 4; s += F::kSum)
            for (int t = 0; t < NT; ++t) {
              const int8_t* at = a[t][b].qs + 16 * g + 4 * s;
              __m256i p16 = _mm256_maddubs_epi16(u[s], bcast4(at));
              for (int j = 1; j < F::kSum; ++j)
                p16 = _mm256_add_epi16(p16, _mm256_maddubs_epi16(u[s + j], bcast4(at + 4 * j)));
              is[hh][t] = _mm256_add_epi32(is[hh][t], _mm256_madd_epi16(p16, sc));
            }
        }
      }
      for (int hh = 0; hh < kHalves; ++hh) {
        const int h = h0 + hh;
        __m256i bias[NT];  // sum_g bias_g * bsum_g
        for (int t = 0; t < NT; ++t) bias[t] = _mm256_setzero_si256();
        for (int g = 0; g < 16; g += 2) {
          const __m256i pairs = bias_pairs<F>(sb, g, h);
          for (int t = 0; t < NT; ++t) {
            int32_t bs;
            std::memcpy(&bs, a[t][b].bsums + g, 4);
            bias[t] = _mm256_add_epi32(bias[t], _mm256_madd_epi16(pairs, _mm256_set1_epi32(bs)));
          }
        }
        const __m256 dw = f16x8(sb, F::Packed::kD, h);
        __m256 dmin = dw;
        if constexpr (F::kMin) dmin = f16x8(sb, F::Packed::kDmin, h);
        for (int t = 0; t < NT; ++t) acc[hh][t] = add_super<F>(acc[hh][t], is[hh][t], bias[t], dw, dmin, a[t][b].d);
      }
    }
    for (int hh = 0; hh < kHalves && 8 * (h0 + hh) < nr; ++hh) {
      const __m256i keep = store_mask(nr - 8 * (h0 + hh));
      for (int t = 0; t < NT; ++t) _mm256_maskstore_ps(y + t * y_stride + 8 * (h0 + hh), keep, acc[hh][t]);
    }
  }
}

template <class F>
struct Group16PackedTile {
  template <int NT>
  static void run(const BlockQ8_K* const* a, int64_t nb, const uint8_t* panel, int nr, float* y, size_t y_stride) {
    group16_packed_tile<F, NT>(a, nb, panel, nr, y, y_stride);
  }
};

// A packed panel in q6k_tile's layout (q6k_unpack_panel's): codes q = u - kOffset, scale pairs, d, the +128's
// correction -128 * sum_g scale_g * sum(q in g) per row, and Q2_K's min pairs and dmin.
template <class F>
void group16_panel_from_packed(const uint8_t* panel, int64_t n, const Q6Panel& p) {
  const __m256i off = _mm256_set1_epi8(char(F::kOffset)),
                ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1), low16 = _mm256_set1_epi32(0xffff);
  for (int64_t b = 0; b < n / 256; ++b) {
    const uint8_t* sb = panel + size_t(b) * F::Packed::kBytes;
    for (int h = 0; h < 2; ++h) {
      __m256i c = _mm256_setzero_si256();
      for (int g = 0; g < 16; ++g) {
        __m256i u[4];
        F::codes(sb, g, h, u);
        __m256i sum = _mm256_setzero_si256();  // per row: sum(q in g), |sum| <= 512
        for (int s = 0; s < 4; ++s) {
          const __m256i q = _mm256_sub_epi8(u[s], off);
          _mm256_store_si256(reinterpret_cast<__m256i*>(p.codes + (b * 16 + g) * 256 + 64 * s + 32 * h), q);
          sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16));
        }
        const __m256i pairs = scale_pairs(F::scales(sb, g, h));
        _mm256_store_si256(reinterpret_cast<__m256i*>(p.sc + (b * 16 + g) * 16 + 8 * h), pairs);
        c = _mm256_add_epi32(c, _mm256_madd_epi16(pairs, _mm256_and_si256(sum, low16)));
        if constexpr (F::kMin)
          if (g % 2 == 0)
            _mm256_store_si256(reinterpret_cast<__m256i*>(p.mins + (b * 8 + g / 2) * 16 + 8 * h), bias_pairs<F>(sb, g, h));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(p.corr + b * 16 + 8 * h),
                         _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(c, 7)));
      _mm256_store_ps(p.d + b * 16 + 8 * h, f16x8(sb, F::Packed::kD, h));
      if constexpr (F::kMin) _mm256_store_ps(p.dmin + b * 16 + 8 * h, f16x8(sb, F::Packed::kDmin, h));
    }
  }
}

// kernels.h PackedGemmFn for Q6_K, Q3_K and Q2_K.
template <class F>
void group16_packed_gemm(int64_t n, const uint8_t* panels, int64_t n_rows, const void* x, size_t x_stride,
                         int64_t n_tokens, float* y, size_t y_stride) {
  const size_t bytes = size_t(n / 256) * F::Packed::kBytes;
  if (n_tokens >= kMinTokens) {
    const Q6Panel p = q6k_prepare(n, x, x_stride, n_tokens, F::kMin);
    for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
      group16_panel_from_packed<F>(panels + size_t(r0 / 16) * bytes, n, p);
      q6k_panel_tiles(p, int(n_rows - r0 < 16 ? n_rows - r0 : 16), n_tokens, y + r0, y_stride);
    }
    return;
  }
  super_few_tokens<Group16PackedTile<F>>(n, panels, bytes, n_rows, x, x_stride, n_tokens, y, y_stride);
}

// ---- Q4_K and Q5_K panels kept from load (x86/packed_x86.inc's PackedQ4K, PackedQ5K) -------------------
// As Q6_K's above: a sub-block's 8 rows are four loads, each two steps' codes in its nibbles (Q5_K's fifth bits one
// load more, a step to a bit; codes <= 31 still let four steps' pair sums add in int16, q4k_tile); four steps' pair
// sums add in int16 before one vpmaddwd by the sub-block's 6-bit scale, and the mins one vpmaddwd per two sub-blocks
// against the activation's sub-block sums. The exact integers and the float steps of q4k_tile, so the same bits in a
// call of any size (calls of kMinTokens and more unpack each panel into q4k_tile's layout). Integer mins where they
// were a float multiply-add per sub-block: 19.5 -> 23.6 GB/s a thread out of L2, one token (AMD EPYC Zen 3,
// decode_l2_packed/Q4_K/avx2-zen, three alternations); prefill unchanged within the noise. Q5_K, which went through the
// float tile (a float step per 32 inputs), this way: one token out of L2 40 -> 53 GFLOP/s, prefill512_packed 108 -> 128
// GFLOP/s, synth 1B Q5_K_M pp256 +15-24% (same machine).

// Sub-blocks q and q + 1's mins for the 8 rows of half h as int16 pairs.
inline __m256i q4k_min_pairs(const uint8_t* sb, int q, int h) {
  return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(bytes8(sb + PackedQ4K::kMins + 16 * q + 8 * h),
                                                bytes8(sb + PackedQ4K::kMins + 16 * (q + 1) + 8 * h)));
}

// Sub-block q's scales for the 8 rows of half h as [s, s] int16 pairs.
inline __m256i q4k_scale_pairs(const uint8_t* sb, int q, int h) {
  return scale_pairs(bytes8(sb + PackedQ4K::kScales + 16 * q + 8 * h));
}

// Sub-block q's codes of steps j (lo) and j + 4 (hi), half h, j < 4: the nibbles, and Q5_K's fifth bits.
struct Q4KCodes {
  using Packed = PackedQ4K;
  static void codes(const uint8_t* sb, int q, int j, int h, __m256i& lo, __m256i& hi) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i v = load32(sb + PackedQ4K::kNibbles + (4 * q + j) * 64 + 32 * h);
    lo = _mm256_and_si256(v, m4);
    hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
  }
};

struct Q5KCodes {
  using Packed = PackedQ5K;
  static void codes(const uint8_t* sb, int q, int j, int h, __m256i& lo, __m256i& hi) {
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    Q4KCodes::codes(sb, q, j, h, lo, hi);
    const __m256i f = load32(sb + PackedQ5K::kFifth + 64 * q + 32 * h);  // step s's fifth bit at bit s
    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(f, 4 - j), bit4));
    hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srli_epi16(f, j), bit4));
  }
};

// NT tokens (a: their Q8_K rows) against one panel's rows [0, nr): one token takes both halves at once, more a half
// at a time.
template <class F, int NT>
void q4k_packed_tile(const BlockQ8_K* const* a, int64_t nb, const uint8_t* panel, int nr, float* y,
                     size_t y_stride) {
  constexpr size_t kBytes = F::Packed::kBytes;
  constexpr int kHalves = NT == 1 ? 2 : 1;
  constexpr size_t kShare = (kBytes / 8 + 63) / 64 * 64;  // of the next super-block, per sub-block
  for (int h0 = 0; h0 < 2 && 8 * h0 < nr; h0 += kHalves) {
    __m256 acc[kHalves][NT];
    for (int hh = 0; hh < kHalves; ++hh)
      for (int t = 0; t < NT; ++t) acc[hh][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* sb = panel + size_t(b) * kBytes;
      __m256i is[kHalves][NT];
      for (int hh = 0; hh < kHalves; ++hh)
        for (int t = 0; t < NT; ++t) is[hh][t] = _mm256_setzero_si256();
      for (int q = 0; q < 8; ++q) {
        if (h0 == 0)  // the next super-block, a share per sub-block (as Q6_K's)
          for (size_t l = 0; l < kShare; l += 64)
            _mm_prefetch(reinterpret_cast<const char*>(sb + kBytes + q * kShare + l), _MM_HINT_T0);
        for (int hh = 0; hh < kHalves; ++hh) {
          const int h = h0 + hh;
          __m256i u[8];  // steps 0..7
          for (int j = 0; j < 4; ++j) F::codes(sb, q, j, h, u[j], u[j + 4]);
          const __m256i sc = q4k_scale_pairs(sb, q, h);
          for (int t = 0; t < NT; ++t) {
            const int8_t* at = a[t][b].qs + 32 * q;
            __m256i lo = _mm256_maddubs_epi16(u[0], bcast4(at));
            __m256i hi = _mm256_maddubs_epi16(u[4], bcast4(at + 16));
            for (int j = 1; j < 4; ++j) {
              lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(u[j], bcast4(at + 4 * j)));
              hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(u[j + 4], bcast4(at + 16 + 4 * j)));
            }
            is[hh][t] = _mm256_add_epi32(is[hh][t],
                                         _mm256_add_epi32(_mm256_madd_epi16(lo, sc), _mm256_madd_epi16(hi, sc)));
          }
        }
      }
      int32_t pairs[NT][4];
      for (int t = 0; t < NT; ++t) q4k_sum_pairs(a[t][b], pairs[t]);
      for (int hh = 0; hh < kHalves; ++hh) {
        const int h = h0 + hh;
        __m256i ms[NT];
        for (int t = 0; t < NT; ++t) ms[t] = _mm256_setzero_si256();
        for (int i = 0; i < 4; ++i) {
          const __m256i m = q4k_min_pairs(sb, 2 * i, h);
          for (int t = 0; t < NT; ++t)
            ms[t] = _mm256_add_epi32(ms[t], _mm256_madd_epi16(m, _mm256_set1_epi32(pairs[t][i])));
        }
        const __m256 dw = f16x8(sb, PackedQ4K::kD, h), dmin = f16x8(sb, PackedQ4K::kDmin, h);
        for (int t = 0; t < NT; ++t) acc[hh][t] = add_super_min(acc[hh][t], is[hh][t], ms[t], dw, dmin, a[t][b].d);
      }
    }
    for (int hh = 0; hh < kHalves && 8 * (h0 + hh) < nr; ++hh) {
      const __m256i keep = store_mask(nr - 8 * (h0 + hh));
      for (int t = 0; t < NT; ++t) _mm256_maskstore_ps(y + t * y_stride + 8 * (h0 + hh), keep, acc[hh][t]);
    }
  }
}

template <class F>
struct Q4KPackedTile {
  template <int NT>
  static void run(const BlockQ8_K* const* a, int64_t nb, const uint8_t* panel, int nr, float* y, size_t y_stride) {
    q4k_packed_tile<F, NT>(a, nb, panel, nr, y, y_stride);
  }
};

// A packed panel in q4k_tile's layout (unpack_panel<PQ4_K>'s codes, k_int_scales' scales).
template <class F>
void q4k_panel_from_packed(const uint8_t* panel, int64_t n, uint8_t* codes, const Q4KScales& k) {
  for (int64_t b = 0; b < n / 256; ++b) {
    const uint8_t* sb = panel + size_t(b) * F::Packed::kBytes;
    for (int h = 0; h < 2; ++h) {
      for (int q = 0; q < 8; ++q) {
        uint8_t* c = codes + (b * 8 + q) * 512 + 32 * h;
        for (int j = 0; j < 4; ++j) {
          __m256i lo, hi;
          F::codes(sb, q, j, h, lo, hi);
          _mm256_store_si256(reinterpret_cast<__m256i*>(c + 64 * j), lo);
          _mm256_store_si256(reinterpret_cast<__m256i*>(c + 64 * (j + 4)), hi);
        }
        _mm256_store_si256(reinterpret_cast<__m256i*>(k.sc + (b * 8 + q) * 16 + 8 * h), q4k_scale_pairs(sb, q, h));
        if (q % 2 == 0)
          _mm256_store_si256(reinterpret_cast<__m256i*>(k.mins + (b * 4 + q / 2) * 16 + 8 * h),
                             q4k_min_pairs(sb, q, h));
      }
      _mm256_store_ps(k.d + b * 16 + 8 * h, f16x8(sb, PackedQ4K::kD, h));
      _mm256_store_ps(k.dmin + b * 16 + 8 * h, f16x8(sb, PackedQ4K::kDmin, h));
    }
  }
}

// kernels.h PackedGemmFn for Q4_K and Q5_K.
template <class F>
void q4k_packed_gemm(int64_t n, const uint8_t* panels, int64_t n_rows, const void* x, size_t x_stride,
                     int64_t n_tokens, float* y, size_t y_stride) {
  const size_t bytes = size_t(n / 256) * F::Packed::kBytes;
  if (n_tokens >= kMinTokens) {
    Panel p;
    prepare_activations<PQ4_K>(p, n, x, x_stride, n_tokens);
    uint8_t* codes = t_scratch.codes.get<uint8_t>(size_t(n) * 16);
    const Q4KScales k = q4k_scales(n, x, x_stride, n_tokens);
    p.codes = codes, p.wscale = nullptr, p.wmin = nullptr;
    for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
      q4k_panel_from_packed<F>(panels + size_t(r0 / 16) * bytes, n, codes, k);
      q4k_panel_tiles(p, k, int(n_rows - r0 < 16 ? n_rows - r0 : 16), n_tokens, y + r0, y_stride);
    }
    return;
  }
  super_few_tokens<Q4KPackedTile<F>>(n, panels, bytes, n_rows, x, x_stride, n_tokens, y, y_stride);
}

template <class P>
void set_packed(CpuKernels& k) {
  k.pack[uint32_t(P::kType)] = pack<P>;
  k.packed_gemm[uint32_t(P::kType)] = packed_gemm<P>;
}

}  // namespace

// The formats whose one-row decode kernels are compute-bound at this level (the code above).
void fill_packed(CpuKernels& k) {
  set_packed<PQ8_0>(k);
  set_packed<PQ4_0>(k);
  set_packed<PQ5_0>(k);
  set_packed<PIQ4_XS>(k);
  set_packed<PIQ4_NL>(k);
  set_packed<PQ4_1>(k);
  set_packed<PQ5_1>(k);
  k.pack[uint32_t(WeightType::Q4_K)] = pack<PQ4_K>;
  k.packed_gemm[uint32_t(WeightType::Q4_K)] = q4k_packed_gemm<Q4KCodes>;
  k.pack[uint32_t(WeightType::Q5_K)] = pack<PQ5_K>;
  k.packed_gemm[uint32_t(WeightType::Q5_K)] = q4k_packed_gemm<Q5KCodes>;
  k.pack[uint32_t(WeightType::Q6_K)] = pack<PQ6_K>;
  k.packed_gemm[uint32_t(WeightType::Q6_K)] = group16_packed_gemm<Q6KFormat>;
  k.pack[uint32_t(WeightType::Q3_K)] = pack<PQ3_K>;
  k.packed_gemm[uint32_t(WeightType::Q3_K)] = group16_packed_gemm<Q3KFormat>;
  k.pack[uint32_t(WeightType::Q2_K)] = pack<PQ2_K>;
  k.packed_gemm[uint32_t(WeightType::Q2_K)] = group16_packed_gemm<Q2KFormat>;
}

}  // namespace tandem::cpu::avx2
