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
#include <type_traits>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"
#include "quant/formats.h"

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

template <class P>
constexpr bool kAbsActivations = false;  // panel_x86.inc: every tile here takes a as it is

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

#include "backend/cpu/x86/packed_x86.inc"

// A nibble panel expanded to Q8_0's packed layout (codes as bytes, then the f16 scales) for one call of many tokens:
// the same operations on the same values as the nibble panel's tile, so the same bits, without unpacking every
// step for every tile (Q5_0 prefill512_packed: 316 GFLOP/s from the nibbles, 339 from unpacked rows).
template <class P>
struct Bytes : P {};

// Step s (inputs 4s .. 4s + 3 of group g) of a packed panel: [16 rows][4 codes] as unsigned bytes.
template <class P>
inline __m512i packed_step(const uint8_t* panel, int64_t n, int64_t g, int s) {
  if constexpr (kNibblePanel<P>) {
    const __m512i v = _mm512_load_si512(panel + g * 256 + (s & 3) * 64);
    const __m512i c = _mm512_and_si512(s < 4 ? v : _mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
    if constexpr (kGridNibbles<P>)
      return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Grid.u))), c);
    if constexpr (!kFifthBits<P>) return c;
    uint64_t fifth;
    std::memcpy(&fifth, panel + packed_masks_at(n) + g * 64 + 8 * s, 8);
    return _mm512_mask_add_epi8(c, __mmask64(fifth), c, _mm512_set1_epi8(16));
  }
  return _mm512_load_si512(panel + g * P::kGroup * 16 + 64 * s);
}

// Part `part` of kParts of the next super-block of each panel, so that a tile's loads find it in L1: the k-quant
// tiles issue several operations per 64 bytes, and without it the out-of-order window held too few misses to
// stream from DRAM (synth 1B tg64 on Intel Xeon, 2 threads: Q4_K_M 22 -> 30.6 t/s, Q6_K 17.8 -> 24.7; two or
// four super-blocks ahead gained less). Always inlined: GCC finds the function pure (a prefetch writes nothing) and
// drops calls of it that are left standing, which once took every prefetch out of the k-quant tiles.
template <size_t kBytes, int kParts, int NP>
[[gnu::always_inline]] inline void prefetch_ahead(const uint8_t* const* sb, int part) {
  constexpr size_t kSlice = (kBytes / kParts + 63) / 64 * 64;
  for (int j = 0; j < NP; ++j)
    for (size_t o = 0; o < kSlice; o += 64)
      _mm_prefetch(reinterpret_cast<const char*>(sb[j] + kBytes + part * kSlice + o), _MM_HINT_T0);
}

// NT tokens against NP consecutive panels: per row and token the operations of tile<P, NT> (an exact integer
// sum per block, times the activation's scale, then fused with the weight's into one float sum per row, blocks
// in order), so a token's bits depend on neither NT nor NP. Few tokens take several panels, whose independent
// sums overlap vpdpbusd's latency (and two chains per sum below four products a step).
template <class P, int NT, int NP>
void packed_tile(const Panel& p, const uint8_t* panels, size_t panel_bytes, int64_t t0, int nr, float* y,
                 size_t y_stride) {
  constexpr int kSteps = P::kGroup / 4;
  constexpr int kChains = NT * NP <= 4 && kSteps % 2 == 0 ? 2 : 1;
  // Several tokens per panel leave the hardware prefetcher behind (measured on Zen 4: 8 tokens 21 -> 18 ms over
  // Gemma 3's output matrix; on an Intel Xeon, one thread: 2 tokens 9.3 -> 6.0 ms, 4 tokens 10.6 -> 6.3); one
  // token over four Q8_0 panels keeps it busy enough (Zen 4: 10.4 -> 12 ms with these prefetches, Zen 5: 5.5 ->
  // 6.4; Intel: no change), not over one (Zen 5: 5.5 -> 4.5 ms with them), nor over the nibble panels' half as many
  // bytes per operation (Zen 5, one token: Q4_0 5.4 -> 2.9 ms, Q5_0 7.3 -> 3.2).
  constexpr bool kPrefetch = NT > 1 || NP == 1 || kNibblePanel<P>;
  const int64_t n_groups = p.n_groups;
  const uint8_t* codes[NP];
  const uint16_t *scales[NP], *mins[NP];
  for (int j = 0; j < NP; ++j) {
    codes[j] = panels + size_t(j) * panel_bytes;
    scales[j] = reinterpret_cast<const uint16_t*>(codes[j] + packed_scales_at<P>(p.n));
    mins[j] = reinterpret_cast<const uint16_t*>(codes[j] + packed_mins_at<P>(p.n));
  }
  const size_t group_share = (panel_bytes / size_t(n_groups) + 63) / 64 * 64;  // of a panel, to prefetch per group
  __m512 acc[NP][NT];
  for (int j = 0; j < NP; ++j)
    for (int t = 0; t < NT; ++t) acc[j][t] = _mm512_setzero_ps();
  const int8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = p.aq + (t0 + t) * p.n;
  for (int64_t g = 0; g < n_groups; ++g) {
    __m512i is[kChains][NP][NT];
    for (int t = 0; t < NT; ++t) {
      const __m512i b = _mm512_set1_epi32(p.bias[(t0 + t) * n_groups + g]);
      for (int j = 0; j < NP; ++j) {
        is[0][j][t] = b;
        if constexpr (kChains == 2) is[1][j][t] = _mm512_setzero_si512();
      }
    }
    if constexpr (kPrefetch)  // the panels the next tile takes, as far along
      for (int j = 0; j < NP; ++j)
        for (size_t l = 0; l < group_share; l += 64)
          _mm_prefetch(reinterpret_cast<const char*>(codes[0] + (NP + j) * panel_bytes + g * group_share + l),
                       _MM_HINT_T0);
    for (int s = 0; s < kSteps; ++s) {
      __m512i wv[NP];
      for (int j = 0; j < NP; ++j) wv[j] = packed_step<P>(codes[j], p.n, g, s);
      for (int t = 0; t < NT; ++t) {
        int32_t a4;
        std::memcpy(&a4, a[t] + g * P::kGroup + 4 * s, 4);
        const __m512i av = _mm512_set1_epi32(a4);
        for (int j = 0; j < NP; ++j) is[s % kChains][j][t] = _mm512_dpbusd_epi32(is[s % kChains][j][t], wv[j], av);
      }
    }
    for (int j = 0; j < NP; ++j) {
      const __m512 ws =
          _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(scales[j] + 16 * g)));
      for (int t = 0; t < NT; ++t) {
        __m512i sum = is[0][j][t];
        if constexpr (kChains == 2) sum = _mm512_add_epi32(sum, is[1][j][t]);
        const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(p.ascale[(t0 + t) * n_groups + g]));
        acc[j][t] = _mm512_fmadd_ps(v, ws, acc[j][t]);
      }
      if constexpr (P::kMin) {  // Q4_1, Q5_1: minus (-m) * amin, as tile<P, NT>
        const __m512 wm = _mm512_xor_ps(
            _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(mins[j] + 16 * g))), _mm512_set1_ps(-0.0f));
        for (int t = 0; t < NT; ++t)
          acc[j][t] = _mm512_fnmadd_ps(wm, _mm512_set1_ps(p.amin[(t0 + t) * n_groups + g]), acc[j][t]);
      }
    }
  }
  for (int j = 0; j < NP && 16 * j < nr; ++j) {
    const int rows = nr - 16 * j < 16 ? nr - 16 * j : 16;
    const __mmask16 keep = __mmask16((1u << rows) - 1);
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * y_stride + 16 * j, keep, acc[j][t]);
  }
}

// Step s's two high bits of every code, moved to bits 4 and 5 (within 16-bit lanes; the mask drops what crossed
// bytes).
template <int kStep>
inline __m512i q6k_high(__m512i h) {
  const __m512i m = _mm512_set1_epi8(0x30);
  if constexpr (kStep == 0) return _mm512_and_si512(_mm512_slli_epi16(h, 4), m);
  if constexpr (kStep == 1) return _mm512_and_si512(_mm512_slli_epi16(h, 2), m);
  if constexpr (kStep == 2) return _mm512_and_si512(h, m);
  if constexpr (kStep == 3) return _mm512_and_si512(_mm512_srli_epi16(h, 2), m);
}

// One part of a super-block (Q4_K: a 32-element sub-block; Q6_K: a 16-element group) of NP panels (sb) for NT
// tokens (a, from token t0): its exact integer sums times the weights' scales into blk, Q4_K's mins' term into acc.
// Always inlined: left to itself GCC stopped inlining it once the tiles had a second instantiation per CPU family,
// and the blk/acc arrays through memory halved prefill (synth 1B Q6_K pp512 497 -> 223 t/s).
// Sub-block q of super-block b (32 elements) of NP panels whose vector 4q + s at `nibbles` holds step s in its low
// nibbles and step s + 4 in its high ones, for NT tokens: codes(nibbles, j, step) turns panel j's four-bit values of
// a step into its codes; is (started by the caller) += their products with the activations.
template <int NT, int NP, class Codes>
[[gnu::always_inline]] inline void subblock_steps(const uint8_t* const* sb, size_t nibbles, const int8_t* const* a,
                                                  int64_t b, int q, Codes codes, __m512i (&is)[NP][NT]) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  for (int st = 0; st < 4; ++st) {
    __m512i lo[NP], hi[NP];
    for (int j = 0; j < NP; ++j) {
      const __m512i v = _mm512_load_si512(sb[j] + nibbles + (4 * q + st) * 64);
      lo[j] = codes(_mm512_and_si512(v, m4), j, st);
      hi[j] = codes(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), j, st + 4);
    }
    for (int t = 0; t < NT; ++t) {
      int32_t a_lo, a_hi;
      std::memcpy(&a_lo, a[t] + 256 * b + 32 * q + 4 * st, 4);
      std::memcpy(&a_hi, a[t] + 256 * b + 32 * q + 4 * (st + 4), 4);
      for (int j = 0; j < NP; ++j) {
        is[j][t] = _mm512_dpbusd_epi32(is[j][t], lo[j], _mm512_set1_epi32(a_lo));
        is[j][t] = _mm512_dpbusd_epi32(is[j][t], hi[j], _mm512_set1_epi32(a_hi));
      }
    }
  }
}

static_assert(PackedQ5K::kScales == PackedQ4K::kScales && PackedQ5K::kMins == PackedQ4K::kMins &&
              PackedQ5K::kD == PackedQ4K::kD && PackedQ5K::kDmin == PackedQ4K::kDmin);

// Q4_K, and Q5_K (kFifth: its layout is Q4_K's with the fifth bits after it).
template <bool kFifth>
struct KTile4 {
  static constexpr size_t kBytes = kFifth ? PackedQ5K::kBytes : PackedQ4K::kBytes;
  static constexpr int kParts = 8;
  template <int NT, int NP>
  [[gnu::always_inline]] static void part(const Panel& p, const uint8_t* const* sb, const int8_t* const* a, int64_t t0,
                                          int64_t b, int q, __m512 (&blk)[NP][NT], __m512 (&acc)[NP][NT]) {
    __m512i is[NP][NT];
    for (int j = 0; j < NP; ++j)
      for (int t = 0; t < NT; ++t) is[j][t] = _mm512_setzero_si512();
    __m512i fifth[NP];
    if constexpr (kFifth)
      for (int j = 0; j < NP; ++j) fifth[j] = _mm512_load_si512(sb[j] + PackedQ5K::kFifth + 64 * q);
    // step s's fifth bits to bit 4 (16-bit shifts by a constant: each byte keeps its own bits)
    auto with_fifth = [&](__m512i low, int j, int s) __attribute__((always_inline)) {
      if constexpr (!kFifth) return low;
      const __m512i f = s < 4 ? _mm512_slli_epi16(fifth[j], 4 - s) : _mm512_srli_epi16(fifth[j], s - 4);
      return _mm512_ternarylogic_epi32(low, f, _mm512_set1_epi8(0x10), 0xf8);  // low | (f & 0x10)
    };
    subblock_steps<NT, NP>(sb, PackedQ4K::kNibbles, a, b, q, with_fifth, is);
    auto bytes_ps = [](const uint8_t* v) {
      return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(v))));
    };
    for (int j = 0; j < NP; ++j) {
      const __m512 d = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb[j] + PackedQ4K::kD)));
      const __m512 dmin =
          _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb[j] + PackedQ4K::kDmin)));
      const __m512 ws = _mm512_mul_ps(bytes_ps(sb[j] + PackedQ4K::kScales + 16 * q), d);
      const __m512 wm = _mm512_mul_ps(bytes_ps(sb[j] + PackedQ4K::kMins + 16 * q), dmin);
      for (int t = 0; t < NT; ++t) {
        blk[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[j][t]), ws, blk[j][t]);
        acc[j][t] = _mm512_fnmadd_ps(wm, _mm512_set1_ps(p.amin[(t0 + t) * p.n_groups + 8 * b + q]), acc[j][t]);
      }
    }
  }
};
using Q4KTile = KTile4<false>;
using Q5KTile = KTile4<true>;

// Group g of super-block b (16 elements) of NP panels for NT tokens: code(j) with the step as its template argument
// gives panel j's codes of that step; is (started by the caller) += their products with the activations.
template <int NT, int NP, class Code>
[[gnu::always_inline]] inline void group_steps(const int8_t* const* a, int64_t b, int g, Code code,
                                               __m512i (&is)[NP][NT]) {
  auto step = [&]<int kStep>() __attribute__((always_inline)) {
    __m512i c[NP];
    for (int j = 0; j < NP; ++j) c[j] = code.template operator()<kStep>(j);
    for (int t = 0; t < NT; ++t) {
      int32_t a4;
      std::memcpy(&a4, a[t] + 256 * b + 16 * g + 4 * kStep, 4);
      for (int j = 0; j < NP; ++j) is[j][t] = _mm512_dpbusd_epi32(is[j][t], c[j], _mm512_set1_epi32(a4));
    }
  };
  step.template operator()<0>();
  step.template operator()<1>();
  step.template operator()<2>();
  step.template operator()<3>();
}

// blk += is times each row's int8 group scale (16 bytes at `scales`) times its d (16 f16 at `d`), panel by panel.
template <int NT, int NP>
[[gnu::always_inline]] inline void add_int8_scaled(const uint8_t* const* sb, size_t d, size_t scales,
                                                   const __m512i (&is)[NP][NT], __m512 (&blk)[NP][NT]) {
  for (int j = 0; j < NP; ++j) {
    const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb[j] + d)));
    const __m128i sc = _mm_load_si128(reinterpret_cast<const __m128i*>(sb[j] + scales));
    const __m512 ws = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)), dw);
    for (int t = 0; t < NT; ++t) blk[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[j][t]), ws, blk[j][t]);
  }
}

// Q6_K's codes are 0..63; the activation's -32 * sum starts each group's integer sum.
struct Q6KTile {
  static constexpr size_t kBytes = PackedQ6K::kBytes;
  static constexpr int kParts = 16;
  template <int NT, int NP>
  [[gnu::always_inline]] static void part(const Panel& p, const uint8_t* const* sb, const int8_t* const* a, int64_t t0,
                                          int64_t b, int g, __m512 (&blk)[NP][NT], __m512 (&)[NP][NT]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512i is[NP][NT], high[NP];
    for (int j = 0; j < NP; ++j) {
      high[j] = _mm512_load_si512(sb[j] + PackedQ6K::kHigh + 64 * g);
      for (int t = 0; t < NT; ++t) is[j][t] = _mm512_set1_epi32(p.bias[(t0 + t) * p.n_groups + 16 * b + g]);
    }
    group_steps<NT, NP>(a, b, g, [&]<int kStep>(int j) __attribute__((always_inline)) {
      const __m512i v = _mm512_load_si512(sb[j] + PackedQ6K::kLow + (4 * (g / 2) + kStep) * 64);
      const __m512i low = g % 2 ? _mm512_and_si512(_mm512_srli_epi16(v, 4), m4) : _mm512_and_si512(v, m4);
      return _mm512_or_si512(low, q6k_high<kStep>(high[j]));
    }, is);
    add_int8_scaled<NT, NP>(sb, PackedQ6K::kD, PackedQ6K::kScales + 16 * g, is, blk);
  }
};

// Q3_K's codes are 0..7 (q + 4); the activation's -4 * sum starts each group's integer sum, as Q6_K's -32 * sum. A
// part is a pair of groups, whose third bits share a vector.
struct Q3KTile {
  static constexpr size_t kBytes = PackedQ3K::kBytes;
  static constexpr int kParts = 8;
  template <int NT, int NP>
  [[gnu::always_inline]] static void part(const Panel& p, const uint8_t* const* sb, const int8_t* const* a, int64_t t0,
                                          int64_t b, int q, __m512 (&blk)[NP][NT], __m512 (&)[NP][NT]) {
    const __m512i m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(4);
    __m512i high[NP];
    for (int j = 0; j < NP; ++j) high[j] = _mm512_load_si512(sb[j] + PackedQ3K::kHigh + 64 * q);
    auto group = [&]<int kOdd>() __attribute__((always_inline)) {
      const int g = 2 * q + kOdd;
      __m512i is[NP][NT], low[NP];
      for (int j = 0; j < NP; ++j) {
        low[j] = _mm512_load_si512(sb[j] + PackedQ3K::kLow + 64 * g);
        for (int t = 0; t < NT; ++t) is[j][t] = _mm512_set1_epi32(p.bias[(t0 + t) * p.n_groups + 16 * b + g]);
      }
      group_steps<NT, NP>(a, b, g, [&]<int kStep>(int j) __attribute__((always_inline)) {
        constexpr int kShift = 4 * kOdd + kStep - 2;  // the step's third bit to bit 2
        const __m512i lo = _mm512_and_si512(kStep ? _mm512_srli_epi16(low[j], 2 * kStep) : low[j], m3);
        __m512i h = high[j];
        if constexpr (kShift > 0) h = _mm512_srli_epi16(h, kShift);
        if constexpr (kShift < 0) h = _mm512_slli_epi16(h, -kShift);
        return _mm512_ternarylogic_epi32(lo, h, m4, 0xf8);  // lo | (h & m4)
      }, is);
      add_int8_scaled<NT, NP>(sb, PackedQ3K::kD, PackedQ3K::kScales + 16 * g, is, blk);
    };
    group.template operator()<0>();
    group.template operator()<1>();
  }
};

// Q2_K's codes are 0..3 with a 4-bit scale and min per 16-element group: the mins' term into acc, as Q4_K's.
struct Q2KTile {
  static constexpr size_t kBytes = PackedQ2K::kBytes;
  static constexpr int kParts = 16;
  template <int NT, int NP>
  [[gnu::always_inline]] static void part(const Panel& p, const uint8_t* const* sb, const int8_t* const* a, int64_t t0,
                                          int64_t b, int g, __m512 (&blk)[NP][NT], __m512 (&acc)[NP][NT]) {
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i is[NP][NT], codes[NP];
    for (int j = 0; j < NP; ++j) {
      codes[j] = _mm512_load_si512(sb[j] + PackedQ2K::kCodes + 64 * g);
      for (int t = 0; t < NT; ++t) is[j][t] = _mm512_setzero_si512();
    }
    group_steps<NT, NP>(a, b, g, [&]<int kStep>(int j) __attribute__((always_inline)) {
      return _mm512_and_si512(kStep ? _mm512_srli_epi16(codes[j], 2 * kStep) : codes[j], m3);
    }, is);
    for (int j = 0; j < NP; ++j) {
      const __m512i sm =
          _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(sb[j] + PackedQ2K::kScales + 16 * g)));
      const __m512 d = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb[j] + PackedQ2K::kD)));
      const __m512 dmin =
          _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb[j] + PackedQ2K::kDmin)));
      const __m512 ws = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(sm, _mm512_set1_epi32(0xf))), d);
      const __m512 wm = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(sm, 4)), dmin);
      for (int t = 0; t < NT; ++t) {
        blk[j][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[j][t]), ws, blk[j][t]);
        acc[j][t] = _mm512_fnmadd_ps(wm, _mm512_set1_ps(p.amin[(t0 + t) * p.n_groups + 16 * b + g]), acc[j][t]);
      }
    }
  }
};

// IQ4_XS's codes are the grid's values + 128, a vpshufb of each 4-bit index; the activation's -128 * sum starts each
// sub-block's integer sum.
struct IQ4XSTile {
  static constexpr size_t kBytes = PackedIQ4XS::kBytes;
  static constexpr int kParts = 8;
  template <int NT, int NP>
  [[gnu::always_inline]] static void part(const Panel& p, const uint8_t* const* sb, const int8_t* const* a, int64_t t0,
                                          int64_t b, int q, __m512 (&blk)[NP][NT], __m512 (&)[NP][NT]) {
    const __m512i grid = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kIq4Grid.u)));
    __m512i is[NP][NT];
    for (int j = 0; j < NP; ++j)
      for (int t = 0; t < NT; ++t) is[j][t] = _mm512_set1_epi32(p.bias[(t0 + t) * p.n_groups + 8 * b + q]);
    subblock_steps<NT, NP>(sb, PackedIQ4XS::kNibbles, a, b, q,
                           [&](__m512i index, int, int) __attribute__((always_inline)) {
                             return _mm512_shuffle_epi8(grid, index);
                           },
                           is);
    add_int8_scaled<NT, NP>(sb, PackedIQ4XS::kD, PackedIQ4XS::kScales + 16 * q, is, blk);
  }
};

// NT tokens against NP consecutive k-quant panels (Q: one of the k-quant tiles above): per row and token, the parts'
// scaled sums over a super-block, then times the activation's scale; the same operations in the same order for any NT
// and NP, so a token's bits depend on neither. Always inlined: once both CPU families' tables packed Q6_K, GCC
// outlined the 8-token tile and spilled its sums (prefill512 0.86 -> 1.85 ms).
template <class Q, int NT, int NP>
[[gnu::always_inline]] inline void packed_tile_k(const Panel& p, const uint8_t* panels, size_t panel_bytes, int64_t t0,
                                                 int nr, float* y, size_t y_stride) {
  const int64_t nb = p.n / 256;
  const int64_t groups = p.n_groups / nb;  // the activation's groups per super-block, all of one scale
  __m512 acc[NP][NT];
  for (int j = 0; j < NP; ++j)
    for (int t = 0; t < NT; ++t) acc[j][t] = _mm512_setzero_ps();
  const int8_t* a[NT];
  for (int t = 0; t < NT; ++t) a[t] = p.aq + (t0 + t) * p.n;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* sb[NP];
    for (int j = 0; j < NP; ++j) sb[j] = panels + size_t(j) * panel_bytes + size_t(b) * Q::kBytes;
    __m512 blk[NP][NT];
    for (int j = 0; j < NP; ++j)
      for (int t = 0; t < NT; ++t) blk[j][t] = _mm512_setzero_ps();
    for (int part = 0; part < Q::kParts; ++part) {
      prefetch_ahead<Q::kBytes, Q::kParts, NP>(sb, part);
      Q::template part<NT, NP>(p, sb, a, t0, b, part, blk, acc);
    }
    for (int j = 0; j < NP; ++j)
      for (int t = 0; t < NT; ++t)
        acc[j][t] = _mm512_fmadd_ps(blk[j][t], _mm512_set1_ps(p.ascale[(t0 + t) * p.n_groups + groups * b]), acc[j][t]);
  }
  for (int j = 0; j < NP && 16 * j < nr; ++j) {
    const int rows = nr - 16 * j < 16 ? nr - 16 * j : 16;
    const __mmask16 keep = __mmask16((1u << rows) - 1);
    for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * y_stride + 16 * j, keep, acc[j][t]);
  }
}

// The tile of a super-block format's packed panels (void: a 32-element format, packed_tile's).
template <class P>
struct KTileFor {
  using T = void;
};
template <> struct KTileFor<PQ2_K> { using T = Q2KTile; };
template <> struct KTileFor<PQ3_K> { using T = Q3KTile; };
template <> struct KTileFor<PQ4_K> { using T = Q4KTile; };
template <> struct KTileFor<PQ5_K> { using T = Q5KTile; };
template <> struct KTileFor<PQ6_K> { using T = Q6KTile; };
template <> struct KTileFor<PIQ4_XS> { using T = IQ4XSTile; };
template <class P>
using KTileOf = typename KTileFor<P>::T;

constexpr int kGroupPanels = 4;  // panels one few-token tile takes at most

// Panels one token takes at once. Four give Intel independent vpdpbusd chains; on Zen a panel streamed alone reads
// DRAM faster (Zen 5, tg64, interleaved three times: synth 1B Q4_K_M 68.6-70.4 -> 73.2-76.0 t/s, V2-Lite 4L
// 147-149 -> 155-157; one thread over Gemma 3's output shape, prefetched: Q8_0 5.5 -> 4.5 ms, Q4_0 2.9 -> 2.2, Q5_0
// 3.3 -> 3.1), though in cache four k-quant panels are faster (4096 x 8192 Q4_K: 0.23 against 0.26 ms).
template <class P, Uarch kUarch>
constexpr int kOneTokenPanels = kUarch == Uarch::Zen ? 1 : 4;

// Tokens t0 .. t0 + NT - 1 against the n_panels (<= kGroupPanels) panels at `panels`, rows [0, nr).
template <class P, int NT, Uarch kUarch>
void packed_group(const Panel& p, const uint8_t* panels, size_t panel_bytes, int n_panels, int64_t t0, int nr,
                  float* y, size_t y_stride) {
  // The k-quants' tiles hold a second float sum per row and token (the super-block's): fewer panels at once. Zen
  // reads Q8_0 a panel at a time for a few tokens too (one thread over Gemma 3's output shape, 2 / 4 tokens: 6.1 /
  // 6.5 -> 4.4-5.0 / 4.9-5.1 ms; the nibble formats gained nothing, and the k-quants' tiles are left as GCC
  // allocates them well).
  constexpr bool kOnePanel = NT == 1 || (kUarch == Uarch::Zen && std::is_same_v<P, PQ8_0>);
  constexpr int kNP = kOnePanel ? kOneTokenPanels<P, kUarch> : NT <= (P::kBlock == 256 ? 2 : 4) ? 2 : 1;
  auto run = [&]<int NP>(int j) {
    const uint8_t* at = panels + size_t(j) * panel_bytes;
    if constexpr (!std::is_void_v<KTileOf<P>>)
      packed_tile_k<KTileOf<P>, NT, NP>(p, at, panel_bytes, t0, nr - 16 * j, y + 16 * j, y_stride);
    else
      packed_tile<P, NT, NP>(p, at, panel_bytes, t0, nr - 16 * j, y + 16 * j, y_stride);
  };
  int j = 0;
  for (; j + kNP <= n_panels; j += kNP) run.template operator()<kNP>(j);
  for (; j < n_panels; ++j) run.template operator()<1>(j);
}

template <class P, int NT, Uarch kUarch>
void run_packed_group(int nt, const Panel& p, const uint8_t* panels, size_t panel_bytes, int n_panels, int64_t t0,
                      int nr, float* y, size_t y_stride) {
  if constexpr (NT > 1) {
    if (nt < NT)
      return run_packed_group<P, NT - 1, kUarch>(nt, p, panels, panel_bytes, n_panels, t0, nr, y, y_stride);
  }
  packed_group<P, NT, kUarch>(p, panels, panel_bytes, n_panels, t0, nr, y, y_stride);
}

// panel_gemm without the unpacking, for any token count: groups of panels, every token tile over each.
template <class P, Uarch kUarch>
void packed_gemm(int64_t n, const uint8_t* panels, int64_t n_rows, const void* x, size_t x_stride, int64_t n_tokens,
                 float* y, size_t y_stride) {
  Panel p;
  prepare_activations<P>(p, n, x, x_stride, n_tokens);
  // Calls of many tokens take nibble panels as bytes, expanded once per group of panels.
  constexpr int64_t kExpandTokens = 16;
  const bool expand = kNibblePanel<P> && n_tokens >= kExpandTokens;
  const size_t bytes = packed_panel_bytes<P>(n), expanded_bytes = packed_panel_bytes<Bytes<P>>(n);
  uint8_t* expanded = expand ? t_scratch.codes.get<uint8_t>(expanded_bytes * kGroupPanels) : nullptr;
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16 * kGroupPanels) {
    const int nr = int(n_rows - r0 < 16 * kGroupPanels ? n_rows - r0 : 16 * kGroupPanels);
    const int n_panels = (nr + 15) / 16;
    const uint8_t* group = panels + size_t(r0 / 16) * bytes;
    if constexpr (kNibblePanel<P>) {
      if (expand) {
        for (int j = 0; j < n_panels; ++j) {
          const uint8_t* from = group + size_t(j) * bytes;
          uint8_t* to = expanded + size_t(j) * expanded_bytes;
          for (int64_t g = 0; g < n / 32; ++g)
            for (int st = 0; st < 8; ++st) _mm512_store_si512(to + g * 512 + 64 * st, packed_step<P>(from, n, g, st));
          std::memcpy(to + packed_scales_at<PQ8_0>(n), from + packed_scales_at<P>(n), size_t(n / 32) * 32);
          if constexpr (P::kMin)
            std::memcpy(to + packed_mins_at<Bytes<P>>(n), from + packed_mins_at<P>(n), size_t(n / 32) * 32);
        }
        for (int64_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
          const int nt = int(n_tokens - t0 < kTileTokens ? n_tokens - t0 : kTileTokens);
          run_packed_group<Bytes<P>, kTileTokens, kUarch>(nt, p, expanded, expanded_bytes, n_panels, t0, nr,
                                                          y + t0 * y_stride + r0, y_stride);
        }
        continue;
      }
    }
    for (int64_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
      const int nt = int(n_tokens - t0 < kTileTokens ? n_tokens - t0 : kTileTokens);
      run_packed_group<P, kTileTokens, kUarch>(nt, p, group, bytes, n_panels, t0, nr, y + t0 * y_stride + r0,
                                               y_stride);
    }
  }
}

template <class P>
void set_packed(CpuKernels& k) {
  k.pack[uint32_t(P::kType)] = pack<P>;
  k.packed_gemm[uint32_t(P::kType)] = k.uarch == Uarch::Zen ? packed_gemm<P, Uarch::Zen> : packed_gemm<P, Uarch::Intel>;
}

}  // namespace

void fill_panel_gemm(CpuKernels& k) {
  if (k.uarch == Uarch::Zen)
    fill_panels<Uarch::Zen>(k);
  else
    fill_panels<Uarch::Intel>(k);
}

// Panels in about the file's bytes, for the formats whose row kernels fall short of memory speed or scale badly
// with a few tokens (BENCHMARKS.md: "Where a 4-token step goes", "Intel Xeon without AMX", "AMD EPYC Zen 5").
void fill_packed(CpuKernels& k) {
  set_packed<PQ8_0>(k);
  set_packed<PQ4_K>(k);
  set_packed<PQ5_0>(k);
  set_packed<PQ4_0>(k);
  set_packed<PQ6_K>(k);
  set_packed<PQ3_K>(k);
  set_packed<PQ2_K>(k);
  set_packed<PIQ4_XS>(k);
  set_packed<PQ5_K>(k);
  set_packed<PIQ4_NL>(k);
  set_packed<PQ4_1>(k);
  set_packed<PQ5_1>(k);
}

}  // namespace tandem::cpu::avx512
