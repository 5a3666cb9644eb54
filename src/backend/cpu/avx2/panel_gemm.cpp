// AVX2 prefill GEMM (AMD Zen 2/3, Intel before AVX-512) from the file's layout: the AVX-512 level's 16-row panels
// (x86/panel_x86.inc), unpacked once per call, through the token tiles of avx2/tiles_avx2.inc. The panels kept
// from load are avx2/packed_gemm.cpp's.
#include <immintrin.h>

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

void q6k_unpack_panel(const uint8_t* w, size_t w_stride, int nr, int64_t n, int8_t* codes, int32_t* sc, float* d,
                      int32_t* corr, uint8_t* rows) {
  for (int64_t b = 0; b < n / 256; ++b) {
    for (int r = 0; r < 16; ++r) {
      uint8_t* u = rows + r * 256;
      int32_t c = 0;
      if (r < nr) {
        const BlockQ6_K& blk = reinterpret_cast<const BlockQ6_K*>(w + r * w_stride)[b];
        float unused[16];
        PQ6_K::unpack(blk, u, unused, nullptr);  // u = q + 32
        for (int g = 0; g < 16; ++g) {
          int sum = 0;
          for (int l = 0; l < 16; ++l) sum += u[16 * g + l] - 32;
          c += blk.scales[g] * sum;
          sc[(b * 16 + g) * 16 + r] = int32_t(uint32_t(uint16_t(int16_t(blk.scales[g]))) * 0x10001u);
        }
        for (int e = 0; e < 256; ++e) u[e] = uint8_t(u[e] - 32);
        d[b * 16 + r] = h2f(blk.d);
      } else {
        std::memset(u, 0, 256);
        for (int g = 0; g < 16; ++g) sc[(b * 16 + g) * 16 + r] = 0;
        d[b * 16 + r] = 0;
      }
      corr[b * 16 + r] = -128 * c;
    }
    uint32_t* out = reinterpret_cast<uint32_t*>(codes + b * 256 * 16);
    for (int s = 0; s < 64; ++s)
      for (int r = 0; r < 16; ++r) std::memcpy(&out[s * 16 + r], rows + r * 256 + 4 * s, 4);
  }
}

template <Uarch kUarch>
void q6k_panel_gemm(int64_t n, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
                    int64_t n_tokens, float* y, size_t y_stride) {
  const uint32_t id = uint32_t(WeightType::Q6_K);
  if (n_tokens < kMinTokens)
    return g_small[int(kUarch)][id](n, w, w_stride, n_rows, x, x_stride, n_tokens, y, y_stride);
  const Q6Panel p = q6k_prepare(n, x, x_stride, n_tokens);
  uint8_t* rows = t_scratch.rows.get<uint8_t>(16 * 256);
  const auto* wb = static_cast<const uint8_t*>(w);
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    const int nr = int(n_rows - r0 < 16 ? n_rows - r0 : 16);
    q6k_unpack_panel(wb + r0 * w_stride, w_stride, nr, n, p.codes, p.sc, p.d, p.corr, rows);
    q6k_panel_tiles(p, nr, n_tokens, y + r0, y_stride);
  }
}

// A Q4_K or Q5_K panel's integer scales and mins from its rows' blocks B (rows nr.. zero).
template <class B>
void k_int_scales(const uint8_t* w, size_t w_stride, int nr, int64_t n, const Q4KScales& k) {
  for (int64_t b = 0; b < n / 256; ++b)
    for (int r = 0; r < 16; ++r) {
      const B* blk = r < nr ? &reinterpret_cast<const B*>(w + r * w_stride)[b] : nullptr;
      for (int j = 0; j < 8; ++j) {  // ggml's get_scale_min_k4
        const uint8_t* q = blk ? blk->scales : nullptr;
        const int v = !q ? 0 : j < 4 ? q[j] & 63 : (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        const int m = !q ? 0 : j < 4 ? q[j + 4] & 63 : (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        k.sc[(b * 8 + j) * 16 + r] = int32_t(uint32_t(v) * 0x10001u);
        int32_t& pair = k.mins[(b * 4 + j / 2) * 16 + r];
        pair = j % 2 ? pair | m << 16 : m;
      }
      k.d[b * 16 + r] = blk ? h2f(blk->d) : 0.0f;
      k.dmin[b * 16 + r] = blk ? h2f(blk->dmin) : 0.0f;
    }
}

// Q4_K and Q5_K (P): the shared panel's codes and activations, the integer scales and mins from the blocks.
template <Uarch kUarch, class P>
void q4k_panel_gemm(int64_t n, const void* w, size_t w_stride, int64_t n_rows, const void* x, size_t x_stride,
                    int64_t n_tokens, float* y, size_t y_stride) {
  const uint32_t id = uint32_t(P::kType);
  if (n_tokens < kMinTokens)
    return g_small[int(kUarch)][id](n, w, w_stride, n_rows, x, x_stride, n_tokens, y, y_stride);
  Scratch& s = t_scratch;
  Panel p;
  prepare_activations<P>(p, n, x, x_stride, n_tokens);
  uint8_t* codes = s.codes.get<uint8_t>(size_t(n) * 16);
  const Q4KScales k = q4k_scales(n, x, x_stride, n_tokens);
  p.codes = codes;
  uint8_t* rows = s.rows.get<uint8_t>(16 * 256);
  const auto* wb = static_cast<const uint8_t*>(w);
  for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
    const int nr = int(n_rows - r0 < 16 ? n_rows - r0 : 16);
    unpack_panel<P>(wb + r0 * w_stride, w_stride, nr, n, codes, nullptr, nullptr, rows);
    k_int_scales<typename P::W>(wb + r0 * w_stride, w_stride, nr, n, k);
    q4k_panel_tiles(p, k, nr, n_tokens, y + r0, y_stride);
  }
}

template <Uarch kUarch>
void fill(CpuKernels& k) {
  fill_panels<kUarch>(k);
  auto set = [&](WeightType t, GemmFn f) {
    g_small[int(kUarch)][uint32_t(t)] = k.gemm[uint32_t(t)];
    k.gemm[uint32_t(t)] = f;
    k.gemm_isa[uint32_t(t)] = kIsa;
    k.panel[uint32_t(t)] = true;
  };
  set(WeightType::Q6_K, q6k_panel_gemm<kUarch>);
  set(WeightType::Q4_K, q4k_panel_gemm<kUarch, PQ4_K>);
  set(WeightType::Q5_K, q4k_panel_gemm<kUarch, PQ5_K>);
}

}  // namespace

void fill_panel_gemm(CpuKernels& k) {
  if (k.uarch == Uarch::Zen)
    fill<Uarch::Zen>(k);
  else
    fill<Uarch::Intel>(k);
}


}  // namespace tandem::cpu::avx2
