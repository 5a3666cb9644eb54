// Generic (baseline flags) flash-attention tile and KV row conversion: the reference semantics the
// ISA levels are tested against. Scores and the online softmax stay in f32; the running sum in f32.
#include <cmath>
#include <cstring>

#include "backend/cpu/ops.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::cpu::generic {
namespace {

void kv_to_f32(WeightType type, const void* src, float* dst, int64_t n) {
  if (type == WeightType::F32) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
  } else if (type == WeightType::F16) {
    const uint16_t* h = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = quant::fp16_to_f32(h[i]);
  } else {
    quant::dequantize_row(type, src, dst, n);
  }
}

void kv_gather_f32(WeightType type, const void* base, size_t row_stride, const int32_t* cells, int n_cells, int64_t n,
                   float* dst) {
  for (int i = 0; i < n_cells; ++i)
    kv_to_f32(type, static_cast<const uint8_t*>(base) + size_t(cells[i]) * row_stride, dst + int64_t(i) * n, n);
}

void flash_tile(const FlashTile& t) {
  const int nc = t.n_cells;
  for (int r = 0; r < t.n_rows; ++r) {
    const float* q = t.q + int64_t(r) * t.dk;
    const float* bias = t.bias + int64_t(r / t.rows_per_bias) * nc;
    float* s = t.s + int64_t(r) * nc;
    float mx = t.m[r];
    for (int c = 0; c < nc; ++c) {
      if (bias[c] == -INFINITY) {
        s[c] = -INFINITY;
        continue;
      }
      const float* k = t.k + int64_t(c) * t.dk;
      float dot = 0;
      for (int i = 0; i < t.dk; ++i) dot += q[i] * k[i];
      float sc = dot * t.scale;
      if (t.softcap > 0) sc = t.softcap * std::tanh(sc / t.softcap);
      s[c] = sc + bias[c];
      mx = s[c] > mx ? s[c] : mx;
    }
    if (mx == -INFINITY) continue;  // nothing visible yet: the row's state stays empty
    const float alpha = std::exp(t.m[r] - mx);
    float sum = 0;
    for (int c = 0; c < nc; ++c) {
      s[c] = s[c] == -INFINITY ? 0.0f : std::exp(s[c] - mx);
      sum += s[c];
    }
    t.m[r] = mx;
    t.l[r] = t.l[r] * alpha + sum;
    float* o = t.o + int64_t(r) * t.dv;
    for (int i = 0; i < t.dv; ++i) o[i] *= alpha;
    for (int c = 0; c < nc; ++c) {
      if (s[c] == 0.0f) continue;
      const float* v = t.v + int64_t(c) * t.dv;
      for (int i = 0; i < t.dv; ++i) o[i] += s[c] * v[i];
    }
  }
}

}  // namespace

void fill_flash_ops(CpuOps& o) {
  o.kv_to_f32 = kv_to_f32;
  o.kv_gather_f32 = kv_gather_f32;
  o.flash_tile = flash_tile;
}

}  // namespace tandem::cpu::generic
