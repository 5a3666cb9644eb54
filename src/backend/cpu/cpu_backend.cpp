// CpuBackend ops. Numerics follow ggml's CPU ops where that decides results (double accumulation in
// RMSNorm, the iterated theta of RoPE, tanh-GELU), so logits track llama.cpp's closely.
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "backend/cpu/cpu_matmul.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::cpu {

CpuBackend::CpuBackend(int n_threads, std::string name) : name_(std::move(name)), pool_(n_threads) {}
CpuBackend::~CpuBackend() = default;

Result<void*> CpuBackend::alloc(size_t bytes) {
  auto* p = new (std::nothrow) uint8_t[bytes ? bytes : 1];
  if (!p) return out_of_memory("%s: cannot allocate %zu bytes", name_.c_str(), bytes);
  allocations_.emplace_back(p);
  return static_cast<void*>(p);
}

void CpuBackend::matmul(const Weight& w, const float* x, int64_t n_tokens, float* y, const Weight* bias) {
  cpu_matmul(pool_, w, x, n_tokens, y, act_buffer_);
  if (bias) {
    const float* b = static_cast<const float*>(bias->data);
    const int64_t n = w.n_rows();
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t i = 0; i < n; ++i) y[t * n + i] += b[i];
  }
}

void CpuBackend::get_rows(const Weight& table, std::span<const int32_t> ids, float* out) {
  const int64_t n = table.row_length();
  pool_.parallel_for(int64_t(ids.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      quant::dequantize_row(table.type, static_cast<const uint8_t*>(table.data) + size_t(ids[i]) * table.row_stride,
                            out + i * n, n);
  });
}

void CpuBackend::rms_norm(const float* x, const Weight* weight, int64_t n_rows, int64_t n, float eps, float* y) {
  const float* w = weight ? static_cast<const float*>(weight->data) : nullptr;
  pool_.parallel_for(n_rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      double sum = 0;  // ggml accumulates squares in double
      for (int64_t i = 0; i < n; ++i) sum += double(xr[i] * xr[i]);
      const float s = 1.0f / std::sqrt(float(sum / double(n)) + eps);
      if (w) {
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * s) * w[i];
      } else {
        for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * s;
      }
    }
  });
}

namespace {

// YaRN's correction range, as ggml_rope_yarn_corr_dims.
void yarn_corr_dims(int n_dims, int n_ctx_orig, float freq_base, float beta_fast, float beta_slow, float dims[2]) {
  auto corr_dim = [&](float n_rot) {
    return float(n_dims) * std::log(float(n_ctx_orig) / (n_rot * 2 * float(M_PI))) / (2 * std::log(freq_base));
  };
  dims[0] = std::max(0.0f, std::floor(corr_dim(beta_fast)));
  dims[1] = std::min(float(n_dims - 1), std::ceil(corr_dim(beta_slow)));
}

float yarn_ramp(float low, float high, int i0) {
  const float y = (float(i0 / 2) - low) / std::max(0.001f, high - low);
  return 1 - std::min(1.0f, std::max(0.0f, y));
}

}  // namespace

void CpuBackend::rope(float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos, const RopeParams& p) {
  const int n_dims = p.n_rot;
  const float theta_scale = std::pow(p.freq_base, -2.0f / float(n_dims));
  float corr[2] = {0, 0};
  if (p.ext_factor != 0) yarn_corr_dims(n_dims, p.n_ctx_orig, p.freq_base, p.beta_fast, p.beta_slow, corr);
  pool_.parallel_for(n_tokens, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> cos_sin(static_cast<size_t>(n_dims));
    for (int64_t t = begin; t < end; ++t) {
      // Iterated like ggml's rope cache: theta *= theta_scale in float, pair by pair.
      float theta_extrap = float(pos[t]);
      for (int i0 = 0; i0 < n_dims; i0 += 2) {
        const float ff = p.freq_factors ? p.freq_factors[i0 / 2] : 1.0f;
        const float te = theta_extrap / ff;
        float theta = p.freq_scale * te;
        float mscale = p.attn_factor;
        if (p.ext_factor != 0) {
          const float mix = yarn_ramp(corr[0], corr[1], i0) * p.ext_factor;
          theta = theta * (1 - mix) + te * mix;
          mscale *= 1.0f + 0.1f * std::log(1.0f / p.freq_scale);
        }
        cos_sin[i0] = std::cos(theta) * mscale;
        cos_sin[i0 + 1] = std::sin(theta) * mscale;
        theta_extrap *= theta_scale;
      }
      for (int h = 0; h < n_head; ++h) {
        float* v = x + (t * n_head + h) * head_dim;
        for (int i0 = 0; i0 < n_dims; i0 += 2) {
          const float c = cos_sin[i0], s = cos_sin[i0 + 1];
          const int a = p.kind == RopeKind::Normal ? i0 : i0 / 2;
          const int b = p.kind == RopeKind::Normal ? i0 + 1 : i0 / 2 + n_dims / 2;
          const float x0 = v[a], x1 = v[b];
          v[a] = x0 * c - x1 * s;
          v[b] = x0 * s + x1 * c;
        }
      }
    }
  });
}

namespace {

void load_kv_row(WeightType type, const void* base, int64_t row, int64_t n, float* out) {
  if (type == WeightType::F32) {
    std::memcpy(out, static_cast<const float*>(base) + row * n, size_t(n) * 4);
  } else if (type == WeightType::F16) {
    const uint16_t* h = static_cast<const uint16_t*>(base) + row * n;
    for (int64_t i = 0; i < n; ++i) out[i] = quant::fp16_to_f32(h[i]);
  } else {
    quant::dequantize_row(type, static_cast<const uint8_t*>(base) + size_t(row) * row_bytes(type, n), out, n);
  }
}

}  // namespace

void CpuBackend::attention(const AttentionArgs& a) {
  const int group = a.n_head / a.n_head_kv;
  const int64_t row_k = int64_t(a.n_head_kv) * a.head_dim_k, row_v = int64_t(a.n_head_kv) * a.head_dim_v;
  // One task per (token, kv head): the K/V rows are converted once for the query heads sharing them.
  pool_.parallel_for(a.n_tokens * a.n_head_kv, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> cells;
    std::vector<float> scores, qh, krow(static_cast<size_t>(row_k)), vrow(static_cast<size_t>(row_v));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / a.n_head_kv;
      const int g = int(task % a.n_head_kv);
      const int32_t p = a.token_pos[t], s = a.token_seq[t];
      cells.clear();
      for (int64_t c = 0; c < a.n_cells; ++c) {
        const int32_t cp = a.cell_pos[c];
        if (cp < 0 || a.cell_seq[c] != s || cp > p) continue;
        if (a.sliding_window > 0 && p - cp >= a.sliding_window) continue;
        cells.push_back(int32_t(c));
      }
      const size_t n_valid = cells.size();
      scores.assign(n_valid * size_t(group), 0.0f);
      // ggml's non-flash attention multiplies f16 K by Q converted to f16, and f16 V by the softmax
      // converted to f16; rounding the same values keeps logits within float noise of llama.cpp.
      qh.resize(size_t(group) * size_t(a.head_dim_k));
      for (int h = 0; h < group; ++h)
        for (int i = 0; i < a.head_dim_k; ++i)
          qh[size_t(h) * size_t(a.head_dim_k) + size_t(i)] = quant::fp16_to_f32(
              quant::f32_to_fp16(a.q[(t * a.n_head + g * group + h) * a.head_dim_k + i]));
      for (size_t j = 0; j < n_valid; ++j) {
        load_kv_row(a.kv_type, a.k, cells[j], row_k, krow.data());
        const float* k = krow.data() + int64_t(g) * a.head_dim_k;
        for (int h = 0; h < group; ++h) {
          const float* q = qh.data() + size_t(h) * size_t(a.head_dim_k);
          float dot = 0;
          for (int i = 0; i < a.head_dim_k; ++i) dot += q[i] * k[i];
          float sc = dot * a.scale;
          if (a.softcap > 0) sc = a.softcap * std::tanh(sc / a.softcap);
          scores[size_t(h) * n_valid + j] = sc;
        }
      }
      for (int h = 0; h < group; ++h) {
        float* sh = scores.data() + size_t(h) * n_valid;
        float mx = -INFINITY;
        for (size_t j = 0; j < n_valid; ++j) mx = std::max(mx, sh[j]);
        double sum = 0;
        for (size_t j = 0; j < n_valid; ++j) {
          sh[j] = std::exp(sh[j] - mx);
          sum += sh[j];
        }
        const float inv = sum > 0 ? float(1.0 / sum) : 0.0f;
        for (size_t j = 0; j < n_valid; ++j) sh[j] = quant::fp16_to_f32(quant::f32_to_fp16(sh[j] * inv));
        float* o = a.out + (t * a.n_head + g * group + h) * a.head_dim_v;
        std::fill(o, o + a.head_dim_v, 0.0f);
      }
      for (size_t j = 0; j < n_valid; ++j) {
        load_kv_row(a.kv_type, a.v, cells[j], row_v, vrow.data());
        const float* v = vrow.data() + int64_t(g) * a.head_dim_v;
        for (int h = 0; h < group; ++h) {
          const float w = scores[size_t(h) * n_valid + j];
          float* o = a.out + (t * a.n_head + g * group + h) * a.head_dim_v;
          for (int i = 0; i < a.head_dim_v; ++i) o[i] += w * v[i];
        }
      }
    }
  });
}

void CpuBackend::kv_store(const float* k, const float* v, int64_t n_tokens, int64_t row_k, int64_t row_v,
                          const int32_t* cells, WeightType kv_type, void* cache_k, void* cache_v) {
  auto store = [&](const float* src, int64_t n, void* base, int64_t cell) {
    if (kv_type == WeightType::F32) {
      std::memcpy(static_cast<float*>(base) + cell * n, src, size_t(n) * 4);
    } else if (kv_type == WeightType::F16) {
      uint16_t* h = static_cast<uint16_t*>(base) + cell * n;
      for (int64_t i = 0; i < n; ++i) h[i] = quant::f32_to_fp16(src[i]);
    } else {
      quant::quantize_row(kv_type, src, static_cast<uint8_t*>(base) + size_t(cell) * row_bytes(kv_type, n), n);
    }
  };
  for (int64_t t = 0; t < n_tokens; ++t) {
    store(k + t * row_k, row_k, cache_k, cells[t]);
    store(v + t * row_v, row_v, cache_v, cells[t]);
  }
}

void CpuBackend::swiglu(const float* gate, const float* up, int64_t n, float* out) {
  pool_.parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  });
}

namespace {

// tanh-approximated GELU of every f16 value, rounded to f16: ggml's GELU is this table lookup.
const std::vector<uint16_t>& gelu_f16_table() {
  static const std::vector<uint16_t> table = [] {
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f, kCoefA = 0.044715f;
    std::vector<uint16_t> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) {
      const float x = quant::fp16_to_f32(uint16_t(i));
      t[i] = quant::f32_to_fp16(0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + kCoefA * x * x))));
    }
    return t;
  }();
  return table;
}

}  // namespace

void CpuBackend::geglu(const float* gate, const float* up, int64_t n, float* out) {
  const uint16_t* table = gelu_f16_table().data();
  pool_.parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float x = gate[i];
      float g;
      if (x <= -10.0f) g = 0.0f;
      else if (x >= 10.0f) g = x;
      else g = quant::fp16_to_f32(table[quant::f32_to_fp16(x)]);
      out[i] = g * up[i];
    }
  });
}

void CpuBackend::add(const float* a, const float* b, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void CpuBackend::scale(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void CpuBackend::softcap(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

}  // namespace tandem::cpu
