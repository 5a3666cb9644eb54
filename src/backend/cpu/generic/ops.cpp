// Generic (baseline flags) CPU ops: the reference semantics of every entry of CpuOps, and the path
// for KV caches the ISA levels don't take (F32, quantized). Numerics follow ggml's CPU ops: double
// accumulation in RMSNorm, f16 rounding of Q and of the softmax probabilities in attention.
#include <cmath>

#include "backend/cpu/ops.h"
#include "quant/fp16.h"

namespace tandem::cpu::generic {
namespace {

void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double sum = 0;  // ggml accumulates the float squares in double
    for (int64_t i = 0; i < n; ++i) sum += double(xr[i] * xr[i]);
    const float s = 1.0f / std::sqrt(float(sum / double(n)) + eps);
    if (w) {
      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * s) * w[i];
    } else {
      for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * s;
    }
  }
}

void rope(float* x, int n_head, int head_dim, int n_dims, bool neox, const float* cs) {
  const int half = n_dims / 2;
  for (int h = 0; h < n_head; ++h) {
    float* v = x + int64_t(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float c = neox ? cs[i] : cs[2 * i], s = neox ? cs[half + i] : cs[2 * i + 1];
      const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

// One KV head's n elements of cache row `row` (stride elements per row, the head at `offset`; for
// quantized types both are block multiples) to f32.
void load_row(const AttnTask& t, WeightType type, const void* base, int64_t row, int64_t stride, int64_t offset,
              int64_t n, float* out) {
  const uint8_t* src = static_cast<const uint8_t*>(base) + size_t(row) * row_bytes(type, stride) + row_bytes(type, offset);
  (t.to_f32 ? t.to_f32 : ops_for(Isa::Generic).kv_to_f32)(type, src, out, n);
}

void attention(const AttnTask& t) {
  const int64_t n = t.n_cells;
  float* qh = t.scratch;                           // n_q * dk
  float* scores = qh + int64_t(t.n_q) * t.dk;      // n_q * n
  float* krow = scores + int64_t(t.n_q) * n;       // dk
  float* vrow = krow + t.dk;                       // dv
  // ggml's plain path: q meets K as the matmul activation of K's type; the probabilities meet V as
  // f16 for an f16 V (bf16 for bf16; a quantized V has no plain path in ggml: kept in f32).
  for (int h = 0; h < t.n_q; ++h)
    round_like_activation(ops_for(Isa::Generic), t.k_type, t.q + int64_t(h) * t.dk, qh + int64_t(h) * t.dk, t.dk);
  const bool round_p = t.v_type == WeightType::F16 || t.v_type == WeightType::BF16;
  for (int64_t j = 0; j < n; ++j) {
    load_row(t, t.k_type, t.k, t.cells[j], t.k_stride, t.k_offset, t.dk, krow);
    for (int h = 0; h < t.n_q; ++h) {
      const float* q = qh + int64_t(h) * t.dk;
      float dot = 0;
      for (int i = 0; i < t.dk; ++i) dot += q[i] * krow[i];
      float sc = dot * t.scale;
      if (t.softcap > 0) sc = t.softcap * std::tanh(sc / t.softcap);
      scores[h * n + j] = sc;
    }
  }
  for (int h = 0; h < t.n_q; ++h) {
    float* sh = scores + h * n;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; ++j) mx = sh[j] > mx ? sh[j] : mx;
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      sh[j] = std::exp(sh[j] - mx);
      sum += sh[j];
    }
    const float inv = sum > 0 ? float(1.0 / sum) : 0.0f;
    for (int64_t j = 0; j < n; ++j) sh[j] *= inv;
    if (round_p) {
      for (int64_t j = 0; j < n; ++j)
        sh[j] = t.v_type == WeightType::F16 ? quant::fp16_to_f32(quant::f32_to_fp16(sh[j])) : quant::bf16_to_f32(quant::f32_to_bf16(sh[j]));
    }
    float* o = t.out + int64_t(h) * t.dv;
    for (int i = 0; i < t.dv; ++i) o[i] = 0.0f;
  }
  for (int64_t j = 0; j < n; ++j) {
    load_row(t, t.v_type, t.v, t.cells[j], t.v_stride, t.v_offset, t.dv, vrow);
    for (int h = 0; h < t.n_q; ++h) {
      const float w = scores[h * n + j];
      float* o = t.out + int64_t(h) * t.dv;
      for (int i = 0; i < t.dv; ++i) o[i] += w * vrow[i];
    }
  }
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void geglu(const float* gate, const float* up, int64_t n, float* out, const uint16_t* table) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    float g;
    if (x <= -10.0f) g = 0.0f;
    else if (x >= 10.0f) g = x;
    else g = quant::fp16_to_f32(table[quant::f32_to_fp16(x)]);
    out[i] = g * up[i];
  }
}

void add(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = quant::f32_to_fp16(x[i]);
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

}  // namespace tandem::cpu::generic
