// AVX-512 level (F BW DQ VL VNNI BF16): the shared 256-bit kernels with VNNI dot products
// (dpbusd / dpwssd) and 8-token tiles (32 registers), plus 512-bit float kernels (BF16 via dpbf16).
// Compiled with the AVX-512 flags; reached only after dispatch.cpp has checked cpu_features().
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"
#include "quant/iq1_grid.h"
#include "quant/iq_grids.h"

namespace tandem::cpu::avx512 {

#define TANDEM_X86_VNNI 1
constexpr int kMaxTokens = 8;
#include "backend/cpu/x86/gemm_x86.inc"
#undef TANDEM_X86_VNNI

namespace {

// 512-bit float kernels: F32 and F16 widen to f32 and FMA; BF16 multiplies pairs with dpbf16_ps
// (products exact in f32, denormal inputs flushed to zero as the instruction defines).
struct Zmm32 {
  using T = float;
  static constexpr int kStep = 16;
  static __m512 dot(__m512 acc, const T* w, const T* a) {
    return _mm512_fmadd_ps(_mm512_loadu_ps(w), _mm512_loadu_ps(a), acc);
  }
  static float one(T v) { return v; }
};
struct Zmm16 {
  using T = uint16_t;
  static constexpr int kStep = 16;
  static __m512 dot(__m512 acc, const T* w, const T* a) {
    return _mm512_fmadd_ps(_mm512_cvtph_ps(load256(w)), _mm512_cvtph_ps(load256(a)), acc);
  }
  static float one(T v) { return _cvtsh_ss(v); }
};
struct ZmmBf16 {
  using T = uint16_t;
  static constexpr int kStep = 32;
  static __m512 dot(__m512 acc, const T* w, const T* a) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(w), (__m512bh)_mm512_loadu_si512(a));
  }
  static float one(T v) { return FloatBF16::one(v); }
};

template <class F>
struct Float512 {
  static constexpr int kBlock = 1;
  template <int NT>
  static void row(int64_t n, const void* wv, const uint8_t* x, size_t x_stride, float* y, size_t y_stride) {
    using T = typename F::T;
    const T* w = static_cast<const T*>(wv);
    const T* a[NT];
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) {
      a[t] = reinterpret_cast<const T*>(x + t * x_stride);
      acc[t] = _mm512_setzero_ps();
    }
    int64_t i = 0;
    for (; i + F::kStep <= n; i += F::kStep)
      for (int t = 0; t < NT; ++t) acc[t] = F::dot(acc[t], w + i, a[t] + i);
    for (int t = 0; t < NT; ++t) {
      float s = _mm512_reduce_add_ps(acc[t]);
      for (int64_t j = i; j < n; ++j) s += F::one(w[j]) * F::one(a[t][j]);
      y[t * y_stride] = s;
    }
  }
};

}  // namespace

void fill_kernels(CpuKernels& k) {
  fill_x86_kernels(k, Isa::Avx512);
  k.gemm[uint32_t(WeightType::F32)] = gemm<Float512<Zmm32>>;
  k.gemm[uint32_t(WeightType::F16)] = gemm<Float512<Zmm16>>;
  k.gemm[uint32_t(WeightType::BF16)] = gemm<Float512<ZmmBf16>>;
  fill_row_decode(k);
  if (!k.batch_invariant) fill_panel_gemm(k);  // its sums are ordered unlike the decode kernels'
  fill_packed(k);
}

}  // namespace tandem::cpu::avx512
