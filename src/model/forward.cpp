// The blocks of blocks.h. Op order and roundings are the ones every architecture's logits fixture
// was recorded against: keep them.
#include "model/blocks.h"

namespace tandem::model {

void attention_block(Backend& b, const AttentionWeights& w, const AttentionConfig& c, const PassInputs& in,
                     size_t il, const float* x, float* out, ForwardScratch& s) {
  const int64_t n = in.batch.size();
  const int64_t hd = c.head_dim_k, hdv = c.head_dim_v;
  const int64_t n_k = c.n_head_kv * hd, n_v = c.n_head_kv * hdv;
  s.q.resize(size_t(n * c.n_head * hd));
  s.k.resize(size_t(n * n_k));
  s.v.resize(size_t(n * n_v));
  s.attn.resize(size_t(n * c.n_head * hdv));
  float *q = s.q.data(), *k = s.k.data(), *v = s.v.data();
  const KvCache& kv = in.kv;
  const int k_rot = kv_rotation_block(kv.type_k(), hd, false), v_rot = kv_rotation_block(kv.type_v(), hdv, true);

  b.matmul(*w.wq, x, n, q, w.bq);  // [n, n_head, hd]
  b.matmul(*w.wk, x, n, k, w.bk);  // [n, n_head_kv, hd]
  b.matmul(*w.wv, x, n, v, w.bv);  // [n, n_head_kv, hdv]
  if (w.q_norm) b.rms_norm(q, w.q_norm, n * c.n_head, hd, c.norm_eps, q);
  if (w.k_norm) b.rms_norm(k, w.k_norm, n * c.n_head_kv, hd, c.norm_eps, k);
  b.rope(q, n, c.n_head, int(hd), in.batch.pos.data(), c.rope);
  b.rope(k, n, c.n_head_kv, int(hd), in.batch.pos.data(), c.rope);
  if (k_rot) {
    b.hadamard(q, n * c.n_head, hd, k_rot);
    b.hadamard(k, n * c.n_head_kv, hd, k_rot);
  }
  if (v_rot) b.hadamard(v, n * c.n_head_kv, hdv, v_rot);
  const KvCache::Layer& cache = kv.layer(il);
  b.kv_store(k, v, n, n_k, n_v, in.cells.data(), kv.type_k(), kv.type_v(), cache.k, cache.v);
  AttentionArgs a;
  a.q = q;
  a.out = s.attn.data();
  a.n_tokens = n;
  a.n_head = c.n_head;
  a.n_head_kv = c.n_head_kv;
  a.head_dim_k = int(hd);
  a.head_dim_v = int(hdv);
  a.scale = c.scale;
  a.sliding_window = c.sliding_window;
  a.token_pos = in.batch.pos.data();
  a.token_seq = in.batch.seq.data();
  a.k_type = kv.type_k();
  a.v_type = kv.type_v();
  a.flash = in.flash_attn;
  a.k = cache.k;
  a.v = cache.v;
  a.n_cells = kv.active_cells();
  a.cell_pos = kv.cell_pos();
  a.cell_seq = kv.cell_seq();
  b.attention(a);  // [n, n_head, hdv]
  if (v_rot) b.hadamard(s.attn.data(), n * c.n_head, hdv, v_rot);
  b.matmul(*w.wo, s.attn.data(), n, out);  // [n, n_embd]
}

void ffn_glu(Backend& b, const Weight& gate, const Weight& up, const Weight& down, GluKind act, int64_t n,
             const float* x, float* out, ForwardScratch& s) {
  const int64_t ff = gate.n_rows();
  s.gate.resize(size_t(n * ff));
  s.up.resize(size_t(n * ff));
  b.matmul(gate, x, n, s.gate.data());  // [n, ff]
  b.matmul(up, x, n, s.up.data());      // [n, ff]
  if (act == GluKind::GeluTanh) b.geglu(s.gate.data(), s.up.data(), n * ff, s.gate.data());
  else b.swiglu(s.gate.data(), s.up.data(), n * ff, s.gate.data());
  b.matmul(down, s.gate.data(), n, out);  // [n, n_embd]
}

void output_logits(const Weight& norm, const Weight& output, float eps, const Batch& batch, const float* x,
                   int64_t e, ForwardScratch& s, std::vector<float>& logits) {
  // Only the rows whose logits are wanted go through the output matmul (the largest one).
  auto& rows = s.out_rows;
  rows.clear();
  int64_t n_out = 0;
  for (int64_t t = 0; t < batch.size(); ++t) {
    if (!batch.want_logits[size_t(t)]) continue;
    rows.insert(rows.end(), x + t * e, x + (t + 1) * e);
    ++n_out;
  }
  Backend& b = *output.backend;
  b.rms_norm(rows.data(), &norm, n_out, e, eps, rows.data());  // [n_out, e]
  const int64_t n_vocab = output.n_rows();
  logits.resize(size_t(n_out * n_vocab));
  b.matmul(output, rows.data(), n_out, logits.data());  // [n_out, n_vocab]
}

}  // namespace tandem::model
