// CpuBackend ops. Numerics follow ggml's CPU ops where that decides results (double accumulation in
// RMSNorm, the iterated theta of RoPE, tanh-GELU), so logits track llama.cpp's closely.
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <iterator>
#include <new>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/ops.h"
#include "core/trace.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::cpu {

CpuBackend::CpuBackend(int n_threads, std::string name, const ThreadPoolOptions& pool_options)
    : name_(std::move(name)), pool_(n_threads, pool_options), ops_(ops()) {}
CpuBackend::~CpuBackend() = default;

Result<void*> CpuBackend::alloc(size_t bytes) {
  auto* p = new (std::nothrow) uint8_t[bytes ? bytes : 1];
  if (!p) return out_of_memory("%s: cannot allocate %zu bytes", name_.c_str(), bytes);
  allocations_.emplace(p, p);
  return static_cast<void*>(p);
}

void CpuBackend::free(void* p) { allocations_.erase(p); }

void CpuBackend::copy_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

std::shared_ptr<Event> CpuBackend::record() {
  auto e = std::make_shared<Event>();
  e->signal();
  return e;
}

Result<size_t> CpuBackend::repack(const Weight& w) {
  // The table's choice is the same in both tables of a level (kernels.h).
  const CpuKernels& k = kernels();
  const PackFn pack = k.pack[uint32_t(w.type)];
  if (!pack || w.shape.size() < 2 || packed_.count(w.data)) return size_t(0);
  TANDEM_ASSIGN(PackedWeight p, pack_weight(pool_, w, pack, k.packed_gemm[uint32_t(w.type)]));
  const size_t bytes = p.bytes;
  packed_.emplace(w.data, std::move(p));
  return bytes;
}

const PackedWeight* CpuBackend::packed(const Weight& w) const {
  const auto it = packed_.find(w.data);
  return it != packed_.end() && it->second.packs(w) ? &it->second : nullptr;
}

void CpuBackend::matmul(const Weight& w, const float* x, int64_t n_tokens, float* y, const Weight* bias) {
  const TraceScope trace("matmul", name_);
  if (const PackedWeight* p = packed(w))
    cpu_matmul_packed(pool_, w, *p, x, n_tokens, y, act_buffer_);
  else
    cpu_matmul(pool_, w, x, n_tokens, y, act_buffer_, batch_invariant_);
  if (bias) {
    const float* b = static_cast<const float*>(bias->data);
    const int64_t n = w.n_rows();
    for (int64_t t = 0; t < n_tokens; ++t)
      for (int64_t i = 0; i < n; ++i) y[t * n + i] += b[i];
  }
}

void CpuBackend::matmul_id(const Weight& w, const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens,
                           int n_used, float* y) {
  const TraceScope trace("matmul_id", name_);
  cpu_matmul_id(pool_, w, packed(w), nullptr, x, x_per_slot, ids, n_tokens, n_used, y, matmul_id_scratch_,
                batch_invariant_);
}

void CpuBackend::matmul_id_ptrs(const Weight& w, const void* const* expert_data, const float* x, bool x_per_slot,
                                const int32_t* ids, int64_t n_tokens, int n_used, float* y) {
  const TraceScope trace("matmul_id", name_);
  cpu_matmul_id(pool_, w, nullptr, expert_data, x, x_per_slot, ids, n_tokens, n_used, y, matmul_id_scratch_,
                batch_invariant_);
}

void CpuBackend::matmul_id_swiglu(const Weight& gate, const Weight* up, const float* x, const int32_t* ids,
                                  int64_t n_tokens, int n_used, float* y) {
  const TraceScope trace("matmul_id_swiglu", name_);
  cpu_matmul_id_swiglu(pool_, gate, packed(gate), nullptr, up, up ? packed(*up) : nullptr, nullptr, x, ids, n_tokens,
                       n_used, y, ops_.swiglu, matmul_id_scratch_, batch_invariant_);
}

void CpuBackend::matmul_id_swiglu_ptrs(const Weight& gate, const void* const* gate_data, const Weight* up,
                                       const void* const* up_data, const float* x, const int32_t* ids,
                                       int64_t n_tokens, int n_used, float* y) {
  const TraceScope trace("matmul_id_swiglu", name_);
  cpu_matmul_id_swiglu(pool_, gate, nullptr, gate_data, up, nullptr, up_data, x, ids, n_tokens, n_used, y,
                       ops_.swiglu, matmul_id_scratch_, batch_invariant_);
}

void CpuBackend::get_rows(const Weight& table, std::span<const int32_t> ids, float* out) {
  const TraceScope trace("get_rows", name_);
  const int64_t n = table.row_length();
  pool_.parallel_for(int64_t(ids.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      quant::dequantize_row(table.type, static_cast<const uint8_t*>(table.data) + size_t(ids[i]) * table.row_stride,
                            out + i * n, n);
  });
}

void CpuBackend::rms_norm(const float* x, const Weight* weight, int64_t n_rows, int64_t n, float eps, float* y) {
  const TraceScope trace("rms_norm", name_);
  const float* w = weight ? static_cast<const float*>(weight->data) : nullptr;
  const auto fn = ops_.rms_norm;
  // Rows of a few hundred floats: a decode step's single row runs inline, no fork-join.
  const int64_t grain = std::max<int64_t>(1, kMinElemsPerTask / std::max<int64_t>(n, 1));
  pool_.parallel_for(n_rows, grain, [&](int64_t begin, int64_t end) {
    fn(x + begin * n, w, end - begin, n, eps, y + begin * n);
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

bool same_rope(const RopeParams& a, const RopeParams& b) {
  return a.kind == b.kind && a.n_rot == b.n_rot && a.freq_base == b.freq_base && a.freq_scale == b.freq_scale &&
         a.freq_factors == b.freq_factors && a.ext_factor == b.ext_factor && a.attn_factor == b.attn_factor &&
         a.beta_fast == b.beta_fast && a.beta_slow == b.beta_slow && a.n_ctx_orig == b.n_ctx_orig;
}

}  // namespace

const float* CpuBackend::rope_table(int64_t n_tokens, const int32_t* pos, const RopeParams& p) {
  // The Q and K calls of a layer, and every layer sharing its parameters, reuse one table.
  for (RopeCache& c : rope_cache_)
    if (c.valid && same_rope(c.params, p) && int64_t(c.pos.size()) == n_tokens &&
        std::equal(c.pos.begin(), c.pos.end(), pos))
      return c.table.data();
  RopeCache& c = rope_cache_[rope_cache_next_];
  rope_cache_next_ = (rope_cache_next_ + 1) % int(std::size(rope_cache_));
  c.valid = true;
  c.params = p;
  c.pos.assign(pos, pos + n_tokens);
  const int n_dims = p.n_rot, half = n_dims / 2;
  c.table.resize(size_t(n_tokens) * size_t(n_dims));
  const float theta_scale = std::pow(p.freq_base, -2.0f / float(n_dims));
  float corr[2] = {0, 0};
  if (p.ext_factor != 0) yarn_corr_dims(n_dims, p.n_ctx_orig, p.freq_base, p.beta_fast, p.beta_slow, corr);
  const bool neox = p.kind == RopeKind::Neox;
  float* table = c.table.data();
  pool_.parallel_for(n_tokens, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* cs = table + t * n_dims;
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
        const float cv = std::cos(theta) * mscale, sv = std::sin(theta) * mscale;
        if (neox) {
          cs[i0 / 2] = cv;
          cs[half + i0 / 2] = sv;
        } else {
          cs[i0] = cv;
          cs[i0 + 1] = sv;
        }
        theta_extrap *= theta_scale;
      }
    }
  });
  return table;
}

void CpuBackend::rope(float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos, const RopeParams& p) {
  const TraceScope trace("rope", name_);
  const float* table = rope_table(n_tokens, pos, p);
  const int n_dims = p.n_rot;
  const bool neox = p.kind == RopeKind::Neox;
  const auto fn = ops_.rope;
  // Work items are (token, head); a decode step's few heads stay on one thread.
  const int64_t per_head = head_dim;
  const int64_t grain = std::max<int64_t>(1, kMinElemsPerTask / per_head);
  pool_.parallel_for(n_tokens * n_head, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t t = i / n_head;
      const int h0 = int(i % n_head);
      const int nh = int(std::min<int64_t>(n_head - h0, end - i));
      fn(x + i * head_dim, nh, head_dim, n_dims, neox, table + t * n_dims);
      i += nh;
    }
  });
}

void CpuBackend::order_by_position(int32_t* cells, int64_t n, const int32_t* cell_pos) {
  auto before = [&](int32_t x, int32_t y) { return cell_pos[x] < cell_pos[y] || (cell_pos[x] == cell_pos[y] && x < y); };
  if (!std::is_sorted(cells, cells + n, before)) std::sort(cells, cells + n, before);
}

void CpuBackend::attention(const AttentionArgs& a) {
  const TraceScope trace("attention", name_);
  if (a.flash) flash_attention(a);
  else plain_attention(a);
}

void CpuBackend::plain_attention(const AttentionArgs& a) {
  const int group = a.n_head / a.n_head_kv;
  const int64_t row_k = a.k_stride ? a.k_stride : int64_t(a.n_head_kv) * a.head_dim_k;
  const int64_t row_v = a.v_stride ? a.v_stride : int64_t(a.n_head_kv) * a.head_dim_v;
  // ISA kernels read f16 K/V directly; other cache types go through the generic path.
  const bool f16 = a.k_type == WeightType::F16 && a.v_type == WeightType::F16;
  const auto fn = f16 ? ops_.attention : ops_for(Isa::Generic).attention;
  // A task is (token, KV head, up to 4 query heads of its group): K/V rows are read once for those
  // heads. Fewer heads per task when a decode step would otherwise leave threads idle.
  const int64_t n_kv_tasks = a.n_tokens * a.n_head_kv;
  int heads_per_task = std::min(group, 4);
  while (heads_per_task > 1 && n_kv_tasks * ((group + heads_per_task - 1) / heads_per_task) < 2 * pool_.size())
    heads_per_task = (heads_per_task + 1) / 2;
  const int n_sub = (group + heads_per_task - 1) / heads_per_task;
  const int64_t n_tasks = n_kv_tasks * n_sub;

  const int nt = pool_.size();
  const size_t scratch_floats =
      size_t(heads_per_task) * size_t(a.head_dim_k + a.n_cells) + size_t(a.head_dim_k + a.head_dim_v) + 16;
  if (attn_scratch_.size() < size_t(nt)) attn_scratch_.resize(size_t(nt));
  if (attn_cells_.size() < size_t(nt)) attn_cells_.resize(size_t(nt));
  for (int i = 0; i < nt; ++i) {
    if (attn_scratch_[size_t(i)].size() < scratch_floats) attn_scratch_[size_t(i)].resize(scratch_floats);
    if (attn_cells_[size_t(i)].size() < size_t(a.n_cells)) attn_cells_[size_t(i)].resize(size_t(a.n_cells));
  }

  std::atomic<int64_t> next{0};
  auto body = [&](int thread, int) {
    int32_t* cells = attn_cells_[size_t(thread)].data();
    float* scratch = attn_scratch_[size_t(thread)].data();
    int64_t last_t = -1, n_valid = 0;
    for (int64_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) {
      const int64_t t = task / (int64_t(a.n_head_kv) * n_sub);
      const int64_t rest = task % (int64_t(a.n_head_kv) * n_sub);
      const int g = int(rest / n_sub), sub = int(rest % n_sub);
      if (t != last_t) {  // the cells token t sees (same for all its heads)
        const int32_t p = a.token_pos[t], s = a.token_seq[t];
        n_valid = 0;
        for (int64_t c = 0; c < a.n_cells; ++c) {
          const int32_t cp = a.cell_pos[c];
          if (cp < 0 || a.cell_seq[c] != s || cp > p) continue;
          if (a.sliding_window > 0 && p - cp >= a.sliding_window) continue;
          cells[n_valid++] = int32_t(c);
        }
        order_by_position(cells, n_valid, a.cell_pos);
        last_t = t;
      }
      const int h0 = sub * heads_per_task;
      const int nq = std::min(heads_per_task, group - h0);
      const int64_t head = t * a.n_head + int64_t(g) * group + h0;
      AttnTask task_args;
      task_args.q = a.q + head * a.head_dim_k;
      task_args.out = a.out + head * a.head_dim_v;
      task_args.n_q = nq;
      task_args.dk = a.head_dim_k;
      task_args.dv = a.head_dim_v;
      task_args.scale = a.scale;
      task_args.softcap = a.softcap;
      task_args.k_type = a.k_type;
      task_args.v_type = a.v_type;
      task_args.to_f32 = ops_.kv_to_f32;
      task_args.k = a.k;
      task_args.v = a.v;
      task_args.k_stride = row_k;
      task_args.v_stride = row_v;
      task_args.k_offset = int64_t(g) * a.head_dim_k;
      task_args.v_offset = int64_t(g) * a.head_dim_v;
      task_args.cells = cells;
      task_args.n_cells = n_valid;
      task_args.scratch = scratch;
      fn(task_args);
    }
  };
  if (n_tasks == 1 || nt == 1) body(0, 1);
  else pool_.run(body);
}

void CpuBackend::kv_store(const float* k, const float* v, int64_t n_tokens, int64_t row_k, int64_t row_v,
                          const int32_t* cells, WeightType k_type, WeightType v_type, void* cache_k, void* cache_v) {
  const TraceScope trace("kv_store", name_);
  const auto to_f16 = ops_.f32_to_f16;
  auto store = [&](WeightType kv_type, const float* src, int64_t n, void* base, int64_t cell) {
    if (kv_type == WeightType::F32) {
      std::memcpy(static_cast<float*>(base) + cell * n, src, size_t(n) * 4);
    } else if (kv_type == WeightType::F16) {
      to_f16(src, static_cast<uint16_t*>(base) + cell * n, n);
    } else {
      quant::quantize_row_kv(kv_type, src, static_cast<uint8_t*>(base) + size_t(cell) * row_bytes(kv_type, n), n);
    }
  };
  const int64_t grain = std::max<int64_t>(1, kMinElemsPerTask / std::max<int64_t>(row_k + row_v, 1));
  pool_.parallel_for(n_tokens, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      store(k_type, k + t * row_k, row_k, cache_k, cells[t]);
      if (row_v > 0) store(v_type, v + t * row_v, row_v, cache_v, cells[t]);
    }
  });
}

void CpuBackend::swiglu(const float* gate, const float* up, int64_t n, float* out) {
  const TraceScope trace("swiglu", name_);
  const auto fn = ops_.swiglu;
  pool_.parallel_for(n, kMinElemsPerTask, [&](int64_t begin, int64_t end) {
    fn(gate + begin, up + begin, end - begin, out + begin);
  });
}

namespace {

// tanh-approximated GELU of every f16 value, rounded to f16: ggml's GELU is this table lookup.
// One entry of padding: vector kernels gather 32 bits at entry i.
const std::vector<uint16_t>& gelu_f16_table() {
  static const std::vector<uint16_t> table = [] {
    constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f, kCoefA = 0.044715f;
    std::vector<uint16_t> t(65536 + 1, 0);
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
  const TraceScope trace("geglu", name_);
  const uint16_t* table = gelu_f16_table().data();
  const auto fn = ops_.geglu;
  pool_.parallel_for(n, kMinElemsPerTask, [&](int64_t begin, int64_t end) {
    fn(gate + begin, up + begin, end - begin, out + begin, table);
  });
}

void CpuBackend::add(const float* a, const float* b, int64_t n, float* out) {
  const TraceScope trace("add", name_);
  const auto fn = ops_.add;
  pool_.parallel_for(n, 4 * kMinElemsPerTask, [&](int64_t begin, int64_t end) {
    fn(a + begin, b + begin, end - begin, out + begin);
  });
}

void CpuBackend::copy_2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
                         int64_t width) {
  const TraceScope trace("copy_2d", name_);
  const int64_t grain = std::max<int64_t>(1, kMinElemsPerTask / std::max<int64_t>(width, 1));
  pool_.parallel_for(n_rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      std::memcpy(dst + r * dst_stride, src + r * src_stride, size_t(width) * sizeof(float));
  });
}

void CpuBackend::weighted_sum(const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n, float* out) {
  const TraceScope trace("weighted_sum", name_);
  const int64_t grain = std::max<int64_t>(1, kMinElemsPerTask / std::max<int64_t>(n * n_terms, 1));
  pool_.parallel_for(n_rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * n_terms * n;
      const float* wr = w + r * n_terms;
      float* o = out + r * n;
      for (int64_t i = 0; i < n; ++i) o[i] = xr[i] * wr[0];
      for (int j = 1; j < n_terms; ++j)
        for (int64_t i = 0; i < n; ++i) o[i] += xr[j * n + i] * wr[j];
    }
  });
}

void CpuBackend::hadamard(float* x, int64_t n_rows, int64_t n, int block) {
  const TraceScope trace("hadamard", name_);
  // The fast transform: log2(block) butterfly passes, then the 1/sqrt(block) that makes it orthonormal.
  const float norm = 1.0f / std::sqrt(float(block));
  const int64_t n_blocks = n_rows * (n / block);
  pool_.parallel_for(n_blocks, std::max<int64_t>(1, kMinElemsPerTask / block), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* v = x + b * block;
      for (int h = 1; h < block; h *= 2)
        for (int i = 0; i < block; i += 2 * h)
          for (int j = i; j < i + h; ++j) {
            const float a = v[j], c = v[j + h];
            v[j] = a + c;
            v[j + h] = a - c;
          }
      for (int i = 0; i < block; ++i) v[i] *= norm;
    }
  });
}

void CpuBackend::scale(float* x, int64_t n, float s) {
  const TraceScope trace("scale", name_);
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void CpuBackend::softcap(float* x, int64_t n, float cap) {
  const TraceScope trace("softcap", name_);
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

}  // namespace tandem::cpu
