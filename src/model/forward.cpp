// The blocks of blocks.h. Op order and roundings are the ones every architecture's logits fixture
// was recorded against: keep them.
#include "model/blocks.h"

namespace tandem::model {

using Slot = ForwardScratch::Slot;

Status attention_block(const AttentionWeights& w, const AttentionConfig& c, const PassInputs& in, size_t il,
                       const float* x, float* out, ForwardScratch& s) {
  Backend& b = *w.wq->backend;
  Backend& kb = *in.model.kv_layers()[il].backend;
  const Model& m = in.model;
  const int64_t n = in.batch.size();
  const int64_t hd = c.head_dim_k, hdv = c.head_dim_v;
  const int64_t n_q = c.n_head * hd, n_k = c.n_head_kv * hd, n_v = c.n_head_kv * hdv, n_o = c.n_head * hdv;
  const KvCache& kv = in.kv;
  const int k_rot = kv_rotation_block(kv.type_k(), hd, false), v_rot = kv_rotation_block(kv.type_v(), hdv, true);
  auto on = [&](const Weight* wt) { return wt ? &m.on(*wt, b) : nullptr; };
  TANDEM_ASSIGN(float* q, s.get(b, Slot::kQ, n * n_q));
  TANDEM_ASSIGN(float* k, s.get(b, Slot::kK, n * n_k));
  TANDEM_ASSIGN(float* v, s.get(b, Slot::kV, n * n_v));
  TANDEM_ASSIGN(const DeviceInputs bi, s.inputs(b));
  RopeParams rope = c.rope;
  if (c.rope_freqs) rope.freq_factors = static_cast<const float*>(m.on(*c.rope_freqs, b).data);

  b.matmul(*w.wq, x, n, q, on(w.bq));  // [n, n_head, hd]
  b.matmul(*w.wk, x, n, k, on(w.bk));  // [n, n_head_kv, hd]
  b.matmul(*w.wv, x, n, v, on(w.bv));  // [n, n_head_kv, hdv]
  if (w.q_norm) b.rms_norm(q, on(w.q_norm), n * c.n_head, hd, c.norm_eps, q);
  if (w.k_norm) b.rms_norm(k, on(w.k_norm), n * c.n_head_kv, hd, c.norm_eps, k);
  b.rope(q, n, c.n_head, int(hd), bi.pos, rope);
  b.rope(k, n, c.n_head_kv, int(hd), bi.pos, rope);
  if (k_rot) {
    b.hadamard(q, n * c.n_head, hd, k_rot);
    b.hadamard(k, n * c.n_head_kv, hd, k_rot);
  }
  if (v_rot) b.hadamard(v, n * c.n_head_kv, hdv, v_rot);

  // Store and attend where the cache lives.
  TANDEM_ASSIGN(q, s.move(b, q, kb, Slot::kQ, n * n_q));
  TANDEM_ASSIGN(k, s.move(b, k, kb, Slot::kK, n * n_k));
  TANDEM_ASSIGN(v, s.move(b, v, kb, Slot::kV, n * n_v));
  TANDEM_ASSIGN(float* attn, s.get(kb, Slot::kAttn, n * n_o));
  TANDEM_ASSIGN(const DeviceInputs ki, s.inputs(kb));
  const KvCache::Layer& cache = kv.layer(il);
  kb.kv_store(k, v, n, n_k, n_v, ki.cells, kv.type_k(), kv.type_v(), cache.k, cache.v);
  AttentionArgs a;
  a.q = q;
  a.out = attn;
  a.n_tokens = n;
  a.n_head = c.n_head;
  a.n_head_kv = c.n_head_kv;
  a.head_dim_k = int(hd);
  a.head_dim_v = int(hdv);
  a.scale = c.scale;
  a.sliding_window = c.sliding_window;
  a.token_pos = ki.pos;
  a.token_seq = ki.seq;
  a.k_type = kv.type_k();
  a.v_type = kv.type_v();
  a.flash = in.flash_attn;
  a.k = cache.k;
  a.v = cache.v;
  a.n_cells = kv.active_cells();
  a.cell_pos = ki.cell_pos;
  a.cell_seq = ki.cell_seq;
  kb.attention(a);  // [n, n_head, hdv]
  if (v_rot) kb.hadamard(attn, n * c.n_head, hdv, v_rot);

  TANDEM_ASSIGN(attn, s.move(kb, attn, b, Slot::kAttn, n * n_o));
  b.matmul(*w.wo, attn, n, out);  // [n, n_embd]
  return Status::ok();
}

Status ffn_glu(const Weight& gate, const Weight& up, const Weight& down, GluKind act, int64_t n, const float* x,
               float* out, ForwardScratch& s) {
  Backend& b = *gate.backend;
  const int64_t ff = gate.n_rows();
  TANDEM_ASSIGN(float* g, s.get(b, Slot::kGate, n * ff));
  TANDEM_ASSIGN(float* u, s.get(b, Slot::kUp, n * ff));
  b.matmul(gate, x, n, g);  // [n, ff]
  b.matmul(up, x, n, u);    // [n, ff]
  if (act == GluKind::GeluTanh) b.geglu(g, u, n * ff, g);
  else b.swiglu(g, u, n * ff, g);
  b.matmul(down, g, n, out);  // [n, n_embd]
  return Status::ok();
}

Status output_logits(const PassInputs& in, const Weight& norm, const Weight& output, float eps, float softcap,
                     Backend& x_device, float* x, ForwardScratch& s, std::vector<float>& logits) {
  Backend& b = *output.backend;
  const int64_t n = in.batch.size(), e = output.row_length(), n_out = s.n_out(), n_vocab = output.n_rows();
  TANDEM_ASSIGN(x, s.move(x_device, x, b, Slot::kX, n * e));
  TANDEM_ASSIGN(float* rows, s.get(b, Slot::kRows, n_out * e));
  TANDEM_ASSIGN(const DeviceInputs bi, s.inputs(b));
  // Only the rows whose logits are wanted go through the output matmul (the largest one).
  Weight x_rows;
  x_rows.name = "hidden state";
  x_rows.type = WeightType::F32;
  x_rows.shape = {n, e};
  x_rows.data = x;
  x_rows.row_stride = size_t(e) * sizeof(float);
  x_rows.size_bytes = size_t(n * e) * sizeof(float);
  x_rows.backend = &b;
  b.get_rows(x_rows, {bi.out_rows, size_t(n_out)}, rows);           // [n_out, e]
  b.rms_norm(rows, &in.model.on(norm, b), n_out, e, eps, rows);     // [n_out, e]
  TANDEM_ASSIGN(float* dev_logits, s.get(b, Slot::kLogits, n_out * n_vocab));
  b.matmul(output, rows, n_out, dev_logits);                         // [n_out, n_vocab]
  if (softcap > 0) b.softcap(dev_logits, n_out * n_vocab, softcap);
  logits.resize(size_t(n_out * n_vocab));
  b.copy_to_host(logits.data(), dev_logits, logits.size() * sizeof(float));
  return s.synchronize();
}

}  // namespace tandem::model
