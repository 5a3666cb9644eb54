// AVX2 CPU ops (FMA, F16C). Compiled with -mavx2 -mfma -mf16c and reached only through ops_for()
// after dispatch has checked the CPU. No STL and no shared inline functions here (CONVENTIONS.md,
// per-ISA translation units): libm's expf and tanhf are plain C calls.
#include <immintrin.h>
#include <math.h>

#include <cstdint>

#include "backend/cpu/ops.h"

namespace tandem::cpu::avx2 {
namespace {

// ggml_v_expf (AVX2): max error 1.45 ulp + 0.5; above 88.38 gives inf, below -103.97 zero.
inline __m256 v_expf(__m256 x) {
  const __m256 r = _mm256_set1_ps(0x1.8p23f);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
  const __m256 n = _mm256_sub_ps(z, r);
  const __m256 b =
      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
  const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
  const __m256i c =
      _mm256_castps_si256(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(126), _CMP_GT_OQ));
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                      _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
      u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
  if (!_mm256_movemask_ps(_mm256_castsi256_ps(c))) return _mm256_fmadd_ps(j, k, k);
  const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                     _mm256_set1_epi32(int(0x82000000u)));
  const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
  const __m256i d =
      _mm256_castps_si256(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(192), _CMP_GT_OQ));
  return _mm256_or_ps(
      _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
      _mm256_andnot_ps(_mm256_castsi256_ps(d),
                       _mm256_or_ps(_mm256_and_ps(_mm256_castsi256_ps(c), _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                                    _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)))));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float f16_round(float x) { return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)); }
inline __m256 f16_round(__m256 x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)); }
inline __m256 load_h(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    // Float squares summed in double, as ggml (the order of the double sum does not reach the float).
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(xr + i);
      const __m256 sq = _mm256_mul_ps(v, v);
      s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
      s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
    }
    const __m256d s = _mm256_add_pd(s0, s1);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    double sum = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < n; ++i) sum += double(xr[i] * xr[i]);
    const float sc = 1.0f / sqrtf(float(sum / double(n)) + eps);
    const __m256 vs = _mm256_set1_ps(sc);
    i = 0;
    if (w) {
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), vs), _mm256_loadu_ps(w + i)));
      for (; i < n; ++i) yr[i] = (xr[i] * sc) * w[i];
    } else {
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_loadu_ps(xr + i), vs));
      for (; i < n; ++i) yr[i] = xr[i] * sc;
    }
  }
}

void rope(float* x, int n_head, int head_dim, int n_dims, bool neox, const float* cs) {
  const int half = n_dims / 2;
  for (int h = 0; h < n_head; ++h) {
    float* v = x + int64_t(h) * head_dim;
    int i = 0;
    if (neox) {
      for (; i + 8 <= half; i += 8) {
        const __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(cs + half + i);
        const __m256 x0 = _mm256_loadu_ps(v + i), x1 = _mm256_loadu_ps(v + half + i);
        _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
        _mm256_storeu_ps(v + half + i, _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
      }
      for (; i < half; ++i) {
        const float c = cs[i], s = cs[half + i], x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x0 * s + x1 * c;
      }
    } else {
      const __m256 sign = _mm256_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1);
      for (; 2 * i + 8 <= n_dims; i += 4) {
        const __m256 t = _mm256_loadu_ps(cs + 2 * i);
        const __m256 c = _mm256_moveldup_ps(t), s = _mm256_mul_ps(_mm256_movehdup_ps(t), sign);
        const __m256 xv = _mm256_loadu_ps(v + 2 * i);
        const __m256 xs = _mm256_permute_ps(xv, 0xB1);
        _mm256_storeu_ps(v + 2 * i, _mm256_add_ps(_mm256_mul_ps(xv, c), _mm256_mul_ps(xs, s)));
      }
      for (; i < half; ++i) {
        const float c = cs[2 * i], s = cs[2 * i + 1], x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * c - x1 * s;
        v[2 * i + 1] = x0 * s + x1 * c;
      }
    }
  }
}

template <int NQ>
void scores_f16(const float* qh, int dk, const uint16_t* k, int64_t k_stride, const int32_t* cells, int64_t n,
                float* scores) {
  const int d8 = dk & ~7;
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* kr = k + int64_t(cells[j]) * k_stride;
    __m256 acc[NQ];
    for (int h = 0; h < NQ; ++h) acc[h] = _mm256_setzero_ps();
    for (int i = 0; i < d8; i += 8) {
      const __m256 kv = load_h(kr + i);
      for (int h = 0; h < NQ; ++h) acc[h] = _mm256_fmadd_ps(kv, _mm256_loadu_ps(qh + h * dk + i), acc[h]);
    }
    for (int h = 0; h < NQ; ++h) {
      float dot = hsum(acc[h]);
      for (int i = d8; i < dk; ++i) dot += qh[h * dk + i] * _cvtsh_ss(kr[i]);
      scores[h * n + j] = dot;
    }
  }
}

struct V {
  using T = __m256;
  static constexpr int kLanes = 8, kRegisters = 16;
  static T zero() { return _mm256_setzero_ps(); }
  static T set1(float x) { return _mm256_set1_ps(x); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T x) { _mm256_storeu_ps(p, x); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static float reduce_add(T x) { return hsum(x); }
  static float reduce_max(T x) { return hmax(x); }
};

#include "backend/cpu/x86/attention_x86.inc"

inline __m256 v_silu(__m256 x) {
  const __m256 e = v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(v_silu(_mm256_loadu_ps(gate + i)), _mm256_loadu_ps(up + i)));
  if (i == n) return;
  // The tail through the same vector code (zero-padded): an element's bits must not depend on where the
  // thread pool cut the array, i.e. on the batch (issue 11).
  float g[8] = {}, u[8] = {}, o[8];
  __builtin_memcpy(g, gate + i, size_t(n - i) * 4);
  __builtin_memcpy(u, up + i, size_t(n - i) * 4);
  _mm256_storeu_ps(o, _mm256_mul_ps(v_silu(_mm256_loadu_ps(g)), _mm256_loadu_ps(u)));
  __builtin_memcpy(out + i, o, size_t(n - i) * 4);
}

void geglu(const float* gate, const float* up, int64_t n, float* out, const uint16_t* table) {
  int64_t i = 0;
  const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
  const __m256i mask16 = _mm256_set1_epi32(0xffff);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(gate + i);
    const __m256i idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    // 32-bit gathers at 2-byte steps: the low half of each is the table entry (table padded by one).
    const __m256i raw = _mm256_and_si256(_mm256_i32gather_epi32(reinterpret_cast<const int*>(table), idx, 2), mask16);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(raw), _mm256_extracti128_si256(raw, 1));
    __m256 g = _mm256_cvtph_ps(packed);
    g = _mm256_blendv_ps(g, x, _mm256_cmp_ps(x, hi, _CMP_GE_OQ));
    g = _mm256_and_ps(g, _mm256_cmp_ps(x, lo, _CMP_GT_OQ));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(g, _mm256_loadu_ps(up + i)));
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
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  for (; i < n; ++i) out[i] = a[i] + b[i];
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

}  // namespace

void fill_ops(CpuOps& o) {
  o.rms_norm = rms_norm;
  o.rope = rope;
  o.attention = attention;
  o.swiglu = swiglu;
  o.geglu = geglu;
  o.add = add;
  o.f32_to_f16 = f32_to_f16;
}

}  // namespace tandem::cpu::avx2
