// AVX-512 CPU ops (F BW DQ VL; F16C conversions for the f16 KV cache and the GELU table). Compiled
// with the AVX-512 flags and reached only through ops_for() after dispatch has checked the CPU. No
// STL and no shared inline functions here (CONVENTIONS.md, per-ISA translation units): libm's expf
// and tanhf are plain C calls.
#include <immintrin.h>
#include <math.h>

#include <cstdint>

#include "backend/cpu/ops.h"
#include "gguf/types.h"

// GCC 12 flags the _mm512_undefined_* inside the conversion intrinsics of its own headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::cpu::avx512 {
namespace {

// ggml_v_expf (AVX-512): max error 1.45 ulp + 0.5; above 88.38 gives inf, below -103.97 zero.
inline __m512 v_expf(__m512 x) {
  const __m512 r = _mm512_set1_ps(0x1.8p23f);
  const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
  const __m512 n = _mm512_sub_ps(z, r);
  const __m512 b =
      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
  const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
  const __m512 u = _mm512_mul_ps(b, b);
  const __m512 j = _mm512_fmadd_ps(
      _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
                      _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
      u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
  const __m512 res = _mm512_scalef_ps(j, n);
  if (_mm512_kortestz(d, d)) return res;
  const __m512 zero = _mm512_setzero_ps();
  const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, zero, _CMP_LE_OQ), _mm512_set1_ps(INFINITY), zero);
  return _mm512_mask_blend_ps(d, res, alt);
}

inline float f16_round(float x) { return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)); }
inline __m512 f16_round(__m512 x) { return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)); }
inline __m512 load_h(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }

void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    // Float squares summed in double, as ggml (the order of the double sum does not reach the float).
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m512 v = _mm512_loadu_ps(xr + i);
      const __m512 sq = _mm512_mul_ps(v, v);
      s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(sq)));
      s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(sq, 1)));
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; i < n; ++i) sum += double(xr[i] * xr[i]);
    const float s = 1.0f / sqrtf(float(sum / double(n)) + eps);
    const __m512 vs = _mm512_set1_ps(s);
    i = 0;
    if (w) {
      for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(yr + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(xr + i), vs), _mm512_loadu_ps(w + i)));
      for (; i < n; ++i) yr[i] = (xr[i] * s) * w[i];
    } else {
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(yr + i, _mm512_mul_ps(_mm512_loadu_ps(xr + i), vs));
      for (; i < n; ++i) yr[i] = xr[i] * s;
    }
  }
}

void rope(float* x, int n_head, int head_dim, int n_dims, bool neox, const float* cs) {
  const int half = n_dims / 2;
  for (int h = 0; h < n_head; ++h) {
    float* v = x + int64_t(h) * head_dim;
    int i = 0;
    if (neox) {
      for (; i + 16 <= half; i += 16) {
        const __m512 c = _mm512_loadu_ps(cs + i), s = _mm512_loadu_ps(cs + half + i);
        const __m512 x0 = _mm512_loadu_ps(v + i), x1 = _mm512_loadu_ps(v + half + i);
        _mm512_storeu_ps(v + i, _mm512_sub_ps(_mm512_mul_ps(x0, c), _mm512_mul_ps(x1, s)));
        _mm512_storeu_ps(v + half + i, _mm512_add_ps(_mm512_mul_ps(x0, s), _mm512_mul_ps(x1, c)));
      }
      for (; i < half; ++i) {
        const float c = cs[i], s = cs[half + i], x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x0 * s + x1 * c;
      }
    } else {
      // 8 pairs a vector: even lanes x0*c - x1*s, odd lanes x1*c + x0*s.
      const __m512 sign = _mm512_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1);
      for (; 2 * i + 16 <= n_dims; i += 8) {
        const __m512 t = _mm512_loadu_ps(cs + 2 * i);
        const __m512 c = _mm512_moveldup_ps(t), s = _mm512_mul_ps(_mm512_movehdup_ps(t), sign);
        const __m512 xv = _mm512_loadu_ps(v + 2 * i);
        const __m512 xs = _mm512_permute_ps(xv, 0xB1);  // swap within pairs
        _mm512_storeu_ps(v + 2 * i, _mm512_add_ps(_mm512_mul_ps(xv, c), _mm512_mul_ps(xs, s)));
      }
      for (; i < half; ++i) {
        const float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * c - x1 * s;
        v[2 * i + 1] = x0 * s + x1 * c;
      }
    }
  }
}

// Sums of 8 vectors at once: a transpose-and-add tree shares the shuffles of 8 reductions.
inline __m256 hsum8(const __m512* a) {
  __m256 b[8];
  for (int i = 0; i < 8; ++i) b[i] = _mm256_add_ps(_mm512_castps512_ps256(a[i]), _mm512_extractf32x8_ps(a[i], 1));
  const __m256 c0 = _mm256_hadd_ps(b[0], b[1]), c1 = _mm256_hadd_ps(b[2], b[3]);
  const __m256 c2 = _mm256_hadd_ps(b[4], b[5]), c3 = _mm256_hadd_ps(b[6], b[7]);
  const __m256 d0 = _mm256_hadd_ps(c0, c1), d1 = _mm256_hadd_ps(c2, c3);
  // d0 = [s0 s1 s2 s3 | s0' s1' s2' s3'], d1 likewise for 4..7: add the 128-bit halves.
  const __m256 lo = _mm256_permute2f128_ps(d0, d1, 0x20), hi = _mm256_permute2f128_ps(d0, d1, 0x31);
  return _mm256_add_ps(lo, hi);
}

// The sum of one vector by hsum8's tree: a score's bits must not depend on whether its cell was reduced
// beside others (how many heads a task holds varies with the batch; issue 11).
inline float hsum1(__m512 a) {
  const __m256 b = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 h = _mm256_hadd_ps(b, b);
  const __m256 q = _mm256_hadd_ps(h, h);
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)));
}

// Scores of NQ query heads (rounded q, dk floats each) against the listed f16 K rows; 8/NQ cells per
// step when NQ divides 8, so their reductions share one tree.
template <int NQ>
void scores_f16(const float* qh, int dk, const uint16_t* k, int64_t k_stride, const int32_t* cells, int64_t n,
                float* scores) {
  const int d16 = dk & ~15;
  int64_t j = 0;
  if constexpr (8 % NQ == 0) {
    constexpr int kCells = 8 / NQ;
    if (d16 == dk) {
      for (; j + kCells <= n; j += kCells) {
        const uint16_t* kr[kCells];
        for (int c = 0; c < kCells; ++c) kr[c] = k + int64_t(cells[j + c]) * k_stride;
        __m512 acc[8];
        for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_ps();
        for (int i = 0; i < dk; i += 16) {
          __m512 kv[kCells];
          for (int c = 0; c < kCells; ++c) kv[c] = load_h(kr[c] + i);
          for (int h = 0; h < NQ; ++h) {
            const __m512 q = _mm512_loadu_ps(qh + h * dk + i);
            for (int c = 0; c < kCells; ++c) acc[h * kCells + c] = _mm512_fmadd_ps(kv[c], q, acc[h * kCells + c]);
          }
        }
        alignas(32) float sums[8];
        _mm256_store_ps(sums, hsum8(acc));
        for (int h = 0; h < NQ; ++h)
          for (int c = 0; c < kCells; ++c) scores[h * n + j + c] = sums[h * kCells + c];
      }
    }
  }
  for (; j < n; ++j) {
    const uint16_t* kr = k + int64_t(cells[j]) * k_stride;
    __m512 acc[NQ];
    for (int h = 0; h < NQ; ++h) acc[h] = _mm512_setzero_ps();
    for (int i = 0; i < d16; i += 16) {
      const __m512 kv = load_h(kr + i);
      for (int h = 0; h < NQ; ++h) acc[h] = _mm512_fmadd_ps(kv, _mm512_loadu_ps(qh + h * dk + i), acc[h]);
    }
    for (int h = 0; h < NQ; ++h) {
      float dot = hsum1(acc[h]);
      for (int i = d16; i < dk; ++i) dot += qh[h * dk + i] * _cvtsh_ss(kr[i]);
      scores[h * n + j] = dot;
    }
  }
}

struct V {
  using T = __m512;
  static constexpr int kLanes = 16, kRegisters = 32;
  static T zero() { return _mm512_setzero_ps(); }
  static T set1(float x) { return _mm512_set1_ps(x); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T x) { _mm512_storeu_ps(p, x); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static float reduce_add(T x) { return _mm512_reduce_add_ps(x); }
  static float reduce_max(T x) { return _mm512_reduce_max_ps(x); }
};

#include "backend/cpu/x86/attention_x86.inc"

inline __m512 v_silu(__m512 x) {
  const __m512 e = v_expf(_mm512_sub_ps(_mm512_setzero_ps(), x));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(out + i, _mm512_mul_ps(v_silu(_mm512_loadu_ps(gate + i)), _mm512_loadu_ps(up + i)));
  if (i == n) return;
  // The tail through the same vector code: an element's bits must not depend on where the thread pool
  // cut the array, i.e. on the batch (issue 11).
  const __mmask16 m = __mmask16((1u << (n - i)) - 1);
  _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v_silu(_mm512_maskz_loadu_ps(m, gate + i)), _mm512_maskz_loadu_ps(m, up + i)));
}

void geglu(const float* gate, const float* up, int64_t n, float* out, const uint16_t* table) {
  int64_t i = 0;
  const __m512 lo = _mm512_set1_ps(-10.0f), hi = _mm512_set1_ps(10.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 x = _mm512_loadu_ps(gate + i);
    const __m512i idx = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    // 32-bit gathers at 2-byte steps: the low half of each is the table entry (table padded by one).
    const __m512i raw = _mm512_i32gather_epi32(idx, reinterpret_cast<const int*>(table), 2);
    __m512 g = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw));
    g = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GE_OQ), g, x);
    g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GT_OQ), g);
    _mm512_storeu_ps(out + i, _mm512_mul_ps(g, _mm512_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    const float x = gate[i];
    float g;
    if (x <= -10.0f) g = 0.0f;
    else if (x >= 10.0f) g = x;
    else g = _cvtsh_ss(table[_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)]);
    out[i] = g * up[i];
  }
}

void add(const float* a, const float* b, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  for (; i < n; ++i) out[i] = a[i] + b[i];
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}


// ---- Flash attention: KV rows to f32, and one tile of the online softmax ----

inline float half_at(const uint8_t* p) {
  uint16_t h;
  __builtin_memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Every block of 32 elements becomes two vectors of int32 lanes (elements 0-15, 16-31) times scales.
void kv_to_f32(WeightType type, const void* src, float* dst, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i low4 = _mm512_set1_epi32(15), one = _mm512_set1_epi32(1);
  auto store2 = [&](float* y, __m512i a, __m512i b, float d, float m, bool has_m) {
    const __m512 vd = _mm512_set1_ps(d);
    __m512 ya = _mm512_mul_ps(_mm512_cvtepi32_ps(a), vd), yb = _mm512_mul_ps(_mm512_cvtepi32_ps(b), vd);
    if (has_m) {
      const __m512 vm = _mm512_set1_ps(m);
      ya = _mm512_add_ps(ya, vm);
      yb = _mm512_add_ps(yb, vm);
    }
    _mm512_storeu_ps(y, ya);
    _mm512_storeu_ps(y + 16, yb);
  };
  auto nibbles = [&](const uint8_t* qs, __m512i* lo, __m512i* hi) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
    *lo = _mm512_and_si512(b, low4);
    *hi = _mm512_srli_epi32(b, 4);
  };
  auto fifth_bits = [&](const uint8_t* qh, __m512i* lo, __m512i* hi) {
    uint32_t h;
    __builtin_memcpy(&h, qh, 4);
    *lo = _mm512_or_si512(*lo, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int(h)), iota), one), 4));
    *hi = _mm512_or_si512(*hi, _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int(h >> 16)), iota), one), 4));
  };
  int64_t i = 0;
  switch (type) {
    case WeightType::F32:
      __builtin_memcpy(dst, src, size_t(n) * 4);
      return;
    case WeightType::F16: {
      const uint16_t* h = static_cast<const uint16_t*>(src);
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load_h(h + i));
      for (; i < n; ++i) dst[i] = _cvtsh_ss(h[i]);
      return;
    }
    case WeightType::BF16: {
      const uint16_t* h = static_cast<const uint16_t*>(src);
      for (; i + 16 <= n; i += 16) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i)));
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
      }
      for (; i < n; ++i) {
        const uint32_t w = uint32_t(h[i]) << 16;
        __builtin_memcpy(dst + i, &w, 4);
      }
      return;
    }
    case WeightType::Q8_0:
      for (; i < n; i += 32, p += 34) {
        const __m512i a = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2)));
        const __m512i b = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 18)));
        store2(dst + i, a, b, half_at(p), 0, false);
      }
      return;
    case WeightType::Q4_0:
      for (; i < n; i += 32, p += 18) {
        __m512i a, b;
        nibbles(p + 2, &a, &b);
        const __m512i eight = _mm512_set1_epi32(8);
        store2(dst + i, _mm512_sub_epi32(a, eight), _mm512_sub_epi32(b, eight), half_at(p), 0, false);
      }
      return;
    case WeightType::Q4_1:
      for (; i < n; i += 32, p += 20) {
        __m512i a, b;
        nibbles(p + 4, &a, &b);
        store2(dst + i, a, b, half_at(p), half_at(p + 2), true);
      }
      return;
    case WeightType::Q5_0:
      for (; i < n; i += 32, p += 22) {
        __m512i a, b;
        nibbles(p + 6, &a, &b);
        fifth_bits(p + 2, &a, &b);
        const __m512i sixteen = _mm512_set1_epi32(16);
        store2(dst + i, _mm512_sub_epi32(a, sixteen), _mm512_sub_epi32(b, sixteen), half_at(p), 0, false);
      }
      return;
    case WeightType::Q5_1:
      for (; i < n; i += 32, p += 24) {
        __m512i a, b;
        nibbles(p + 8, &a, &b);
        fifth_bits(p + 4, &a, &b);
        store2(dst + i, a, b, half_at(p), half_at(p + 2), true);
      }
      return;
    case WeightType::IQ4_NL: {
      const __m512 grid = _mm512_setr_ps(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
      for (; i < n; i += 32, p += 18) {
        __m512i a, b;
        nibbles(p + 2, &a, &b);
        const __m512 d = _mm512_set1_ps(half_at(p));
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(d, _mm512_permutexvar_ps(a, grid)));
        _mm512_storeu_ps(dst + i + 16, _mm512_mul_ps(d, _mm512_permutexvar_ps(b, grid)));
      }
      return;
    }
    default:
      break;
  }
  __builtin_trap();  // the backend checks KV types before any attention runs
}

// Rows of one KV head are short runs at a large stride (all heads share a row), which the hardware
// prefetcher follows poorly: fetch kAhead rows ahead by hand.
void kv_gather_f32(WeightType type, const void* base, size_t row_stride, const int32_t* cells, int n_cells, int64_t n,
                   float* dst) {
  constexpr int kAhead = 8;
  const uint8_t* b = static_cast<const uint8_t*>(base);
  const size_t bytes = row_bytes(type, n);
  auto prefetch = [&](int i) {
    const char* p = reinterpret_cast<const char*>(b + size_t(cells[i]) * row_stride);
    for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
  };
  for (int i = 0; i < n_cells && i < kAhead; ++i) prefetch(i);
  if (type == WeightType::F16) {
    // The common cache type converted here, not through kv_to_f32's call and switch per cell: a head of 64 is four
    // conversions, and the call cost as much (Llama-shape decode over 4096 cells: 40% of flash attention's time).
    const __mmask16 tail = __mmask16((1u << (n % 16)) - 1);
    for (int i = 0; i < n_cells; ++i) {
      if (i + kAhead < n_cells) prefetch(i + kAhead);
      const auto* h = reinterpret_cast<const uint16_t*>(b + size_t(cells[i]) * row_stride);
      float* out = dst + int64_t(i) * n;
      int64_t j = 0;
      for (; j + 16 <= n; j += 16) _mm512_storeu_ps(out + j, load_h(h + j));
      if (j < n) _mm512_mask_storeu_ps(out + j, tail, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, h + j)));
    }
    return;
  }
  for (int i = 0; i < n_cells; ++i) {
    if (i + kAhead < n_cells) prefetch(i + kAhead);
    kv_to_f32(type, b + size_t(cells[i]) * row_stride, dst + int64_t(i) * n, n);
  }
}

inline __mmask16 tail_mask(int left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

// Lane j of the result: the sum of a_j (eight reductions sharing one shuffle tree; by value so the
// accumulators stay in registers).
inline __m256 hsum8v(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 a4, __m512 a5, __m512 a6, __m512 a7) {
  auto half = [](__m512 x) { return _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1)); };
  const __m256 c0 = _mm256_hadd_ps(half(a0), half(a1)), c1 = _mm256_hadd_ps(half(a2), half(a3));
  const __m256 c2 = _mm256_hadd_ps(half(a4), half(a5)), c3 = _mm256_hadd_ps(half(a6), half(a7));
  const __m256 d0 = _mm256_hadd_ps(c0, c1), d1 = _mm256_hadd_ps(c2, c3);
  return _mm256_add_ps(_mm256_permute2f128_ps(d0, d1, 0x20), _mm256_permute2f128_ps(d0, d1, 0x31));
}

// s[r][c] = q_r . k_c for R rows and C cells (R * C <= 16 accumulators in registers).
template <int R, int C>
inline void tile_dots(const float* q, const float* k, int dk, float* s, int s_stride) {
  __m512 acc[R * C];
#pragma GCC unroll 16
  for (int i = 0; i < R * C; ++i) acc[i] = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= dk; i += 16) {
    __m512 kv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) kv[c] = _mm512_loadu_ps(k + int64_t(c) * dk + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 qv = _mm512_loadu_ps(q + int64_t(r) * dk + i);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r * C + c] = _mm512_fmadd_ps(qv, kv[c], acc[r * C + c]);
    }
  }
  if (i < dk) {
    const __mmask16 m = tail_mask(dk - i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 qv = _mm512_maskz_loadu_ps(m, q + int64_t(r) * dk + i);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c)
        acc[r * C + c] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k + int64_t(c) * dk + i), acc[r * C + c]);
    }
  }
  if constexpr (R * C == 16 || R * C == 8) {
    alignas(32) float sums[16];
    _mm256_store_ps(sums, hsum8v(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]));
    if constexpr (R * C == 16)
      _mm256_store_ps(sums + 8, hsum8v(acc[8], acc[9], acc[10], acc[11], acc[12], acc[13], acc[14], acc[15]));
#pragma GCC unroll 16
    for (int j = 0; j < R * C; ++j) s[int64_t(j / C) * s_stride + j % C] = sums[j];
  } else {
#pragma GCC unroll 16
    for (int j = 0; j < R * C; ++j) s[int64_t(j / C) * s_stride + j % C] = hsum1(acc[j]);  // hsum8v's tree
  }
}

template <int R>
void rows_dots(const float* q, const FlashTile& t, float* s) {
  int c = 0;
  for (; c + 4 <= t.n_cells; c += 4) tile_dots<R, 4>(q, t.k + int64_t(c) * t.dk, t.dk, s + c, t.n_cells);
  for (; c < t.n_cells; ++c) tile_dots<R, 1>(q, t.k + int64_t(c) * t.dk, t.dk, s + c, t.n_cells);
}

// o[r] += sum_c p[r][c] v[c] for R rows, 64 (or 16) output floats at a time.
template <int R>
void rows_pv(const float* p, const FlashTile& t, float* o) {
  const int dv = t.dv, nc = t.n_cells;
  int i = 0;
  for (; i + 64 <= dv; i += 64) {
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_loadu_ps(o + int64_t(r) * dv + i + 16 * j);
    for (int c = 0; c < nc; ++c) {
      const float* v = t.v + int64_t(c) * dv + i;
      const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16), v2 = _mm512_loadu_ps(v + 32),
                   v3 = _mm512_loadu_ps(v + 48);
      for (int r = 0; r < R; ++r) {
        const __m512 pc = _mm512_set1_ps(p[int64_t(r) * nc + c]);
        acc[r][0] = _mm512_fmadd_ps(pc, v0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(pc, v1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(pc, v2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(pc, v3, acc[r][3]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 4; ++j) _mm512_storeu_ps(o + int64_t(r) * dv + i + 16 * j, acc[r][j]);
  }
  for (; i < dv; i += 16) {
    const __mmask16 m = tail_mask(dv - i);
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_maskz_loadu_ps(m, o + int64_t(r) * dv + i);
    for (int c = 0; c < nc; ++c) {
      const __m512 v = _mm512_maskz_loadu_ps(m, t.v + int64_t(c) * dv + i);
      for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(p[int64_t(r) * nc + c]), v, acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(o + int64_t(r) * dv + i, m, acc[r]);
  }
}

void flash_tile(const FlashTile& t) {
  const int nc = t.n_cells;
  int r = 0;
  for (; r + 4 <= t.n_rows; r += 4) rows_dots<4>(t.q + int64_t(r) * t.dk, t, t.s + int64_t(r) * nc);
  switch (t.n_rows - r) {
    case 3: rows_dots<3>(t.q + int64_t(r) * t.dk, t, t.s + int64_t(r) * nc); break;
    case 2: rows_dots<2>(t.q + int64_t(r) * t.dk, t, t.s + int64_t(r) * nc); break;
    case 1: rows_dots<1>(t.q + int64_t(r) * t.dk, t, t.s + int64_t(r) * nc); break;
    default: break;
  }

  // Online softmax per row: masked scores become probability 0; a row with nothing visible yet keeps
  // its empty state (m = -inf, l = 0, o = 0) and contributes nothing below.
  const __m512 vscale = _mm512_set1_ps(t.scale), ninf = _mm512_set1_ps(-INFINITY);
  for (r = 0; r < t.n_rows; ++r) {
    float* s = t.s + int64_t(r) * nc;
    const float* bias = t.bias + int64_t(r / t.rows_per_bias) * nc;
    __m512 vmax = ninf;
    for (int c = 0; c < nc; c += 16) {
      const __mmask16 m = tail_mask(nc - c);
      __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + c), vscale);
      if (t.softcap > 0) {
        alignas(64) float tmp[16];
        _mm512_store_ps(tmp, x);
        for (int j = 0; j < 16; ++j) tmp[j] = t.softcap * tanhf(tmp[j] / t.softcap);
        x = _mm512_load_ps(tmp);
      }
      x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bias + c));
      _mm512_mask_storeu_ps(s + c, m, x);
      vmax = _mm512_mask_max_ps(vmax, m, vmax, x);
    }
    const float mx = fmaxf(t.m[r], _mm512_reduce_max_ps(vmax));
    if (mx == -INFINITY) {
      for (int c = 0; c < nc; ++c) s[c] = 0;
      continue;
    }
    const float alpha = expf(t.m[r] - mx);
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512 vsum = _mm512_setzero_ps();
    for (int c = 0; c < nc; c += 16) {
      const __mmask16 m = tail_mask(nc - c);
      const __m512 x = _mm512_maskz_loadu_ps(m, s + c);
      const __mmask16 live = _mm512_mask_cmp_ps_mask(m, x, ninf, _CMP_NEQ_OQ);
      const __m512 e = _mm512_maskz_mov_ps(live, v_expf(_mm512_sub_ps(x, vmx)));
      _mm512_mask_storeu_ps(s + c, m, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    t.m[r] = mx;
    t.l[r] = t.l[r] * alpha + _mm512_reduce_add_ps(vsum);
    if (alpha != 1.0f) {
      float* o = t.o + int64_t(r) * t.dv;
      const __m512 va = _mm512_set1_ps(alpha);
      for (int i = 0; i < t.dv; i += 16) {
        const __mmask16 m = tail_mask(t.dv - i);
        _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + i), va));
      }
    }
  }

  for (r = 0; r + 4 <= t.n_rows; r += 4) rows_pv<4>(t.s + int64_t(r) * nc, t, t.o + int64_t(r) * t.dv);
  switch (t.n_rows - r) {
    case 3: rows_pv<3>(t.s + int64_t(r) * nc, t, t.o + int64_t(r) * t.dv); break;
    case 2: rows_pv<2>(t.s + int64_t(r) * nc, t, t.o + int64_t(r) * t.dv); break;
    case 1: rows_pv<1>(t.s + int64_t(r) * nc, t, t.o + int64_t(r) * t.dv); break;
    default: break;
  }
}

}  // namespace

void fill_flash_ops(CpuOps& o) {
  o.kv_to_f32 = kv_to_f32;
  o.kv_gather_f32 = kv_gather_f32;
  o.flash_tile = flash_tile;
}

void fill_ops(CpuOps& o) {
  o.rms_norm = rms_norm;
  o.rope = rope;
  o.attention = attention;
  o.swiglu = swiglu;
  o.geglu = geglu;
  o.add = add;
  o.f32_to_f16 = f32_to_f16;
}

}  // namespace tandem::cpu::avx512
