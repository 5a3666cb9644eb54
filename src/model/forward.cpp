// The decoder stack for llama, qwen2, qwen3 and gemma3, reading like their model cards:
//   llama/qwen:  x += attn(norm(x));             x += ffn_swiglu(norm(x))
//   gemma3:      x += post_norm(attn(norm(x)));  x += post_norm(ffn_geglu(norm(x)))
// with qwen2's QKV biases, qwen3/gemma3's per-head QK norms, gemma3's embedding scale, sliding
// layers and query scale. Shapes are [n_tokens, ...], outermost first.
#include <cmath>

#include "model/model.h"

namespace tandem::model {

Status Model::forward(const Batch& batch, const std::vector<int32_t>& cells, KvCache& kv, ForwardScratch& s,
                      std::vector<float>& logits, bool flash_attn) const {
  const int64_t n = batch.size();
  const int64_t e = hp_.n_embd, hd = hp_.head_dim_k, hdv = hp_.head_dim_v;
  const int n_head = int(hp_.n_head), n_head_kv = int(hp_.n_head_kv);
  const int64_t n_q = n_head * hd, n_k = n_head_kv * hd, n_v = n_head_kv * hdv, ff = hp_.n_ff;

  Backend& be = *tok_embd_->backend;
  auto& x = s.x;
  auto& cur = s.cur;
  auto& q = s.q;
  auto& k = s.k;
  auto& v = s.v;
  auto& attn = s.attn;
  auto& gate = s.gate;
  auto& up = s.up;
  x.resize(size_t(n * e));
  cur.resize(size_t(n * e));
  q.resize(size_t(n * n_q));
  k.resize(size_t(n * n_k));
  v.resize(size_t(n * n_v));
  attn.resize(size_t(n * n_head * hdv));
  gate.resize(size_t(n * ff));
  up.resize(size_t(n * ff));

  const int k_rot = kv_rotation_block(kv.type_k(), hd, false), v_rot = kv_rotation_block(kv.type_v(), hdv, true);

  be.get_rows(*tok_embd_, batch.tokens, x.data());  // [n, e]
  if (embd_scale_ != 1) be.scale(x.data(), n * e, embd_scale_);

  for (size_t il = 0; il < layers_.size(); ++il) {
    const LayerWeights& l = layers_[il];
    Backend& b = *l.backend;
    // Attention.
    b.rms_norm(x.data(), l.attn_norm, n, e, float(hp_.norm_eps), cur.data());
    b.matmul(*l.wq, cur.data(), n, q.data(), l.bq);  // [n, n_head, hd]
    b.matmul(*l.wk, cur.data(), n, k.data(), l.bk);  // [n, n_head_kv, hd]
    b.matmul(*l.wv, cur.data(), n, v.data(), l.bv);  // [n, n_head_kv, hdv]
    if (l.q_norm) b.rms_norm(q.data(), l.q_norm, n * n_head, hd, float(hp_.norm_eps), q.data());
    if (l.k_norm) b.rms_norm(k.data(), l.k_norm, n * n_head_kv, hd, float(hp_.norm_eps), k.data());
    b.rope(q.data(), n, n_head, int(hd), batch.pos.data(), l.rope);
    b.rope(k.data(), n, n_head_kv, int(hd), batch.pos.data(), l.rope);
    if (k_rot) {
      b.hadamard(q.data(), n * n_head, hd, k_rot);
      b.hadamard(k.data(), n * n_head_kv, hd, k_rot);
    }
    if (v_rot) b.hadamard(v.data(), n * n_head_kv, hdv, v_rot);
    const KvCache::Layer& cache = kv.layer(il);
    b.kv_store(k.data(), v.data(), n, n_k, n_v, cells.data(), kv.type_k(), kv.type_v(), cache.k, cache.v);
    AttentionArgs a;
    a.q = q.data();
    a.out = attn.data();
    a.n_tokens = n;
    a.n_head = n_head;
    a.n_head_kv = n_head_kv;
    a.head_dim_k = int(hd);
    a.head_dim_v = int(hdv);
    a.scale = attn_scale_;
    a.sliding_window = l.sliding ? int(hp_.sliding_window) : 0;
    a.token_pos = batch.pos.data();
    a.token_seq = batch.seq.data();
    a.k_type = kv.type_k();
    a.v_type = kv.type_v();
    a.flash = flash_attn;
    a.k = cache.k;
    a.v = cache.v;
    a.n_cells = kv.active_cells();
    a.cell_pos = kv.cell_pos();
    a.cell_seq = kv.cell_seq();
    b.attention(a);  // [n, n_head, hdv]
    if (v_rot) b.hadamard(attn.data(), n * n_head, hdv, v_rot);
    b.matmul(*l.wo, attn.data(), n, cur.data());  // [n, e]
    if (l.post_attn_norm) b.rms_norm(cur.data(), l.post_attn_norm, n, e, float(hp_.norm_eps), cur.data());
    b.add(x.data(), cur.data(), n * e, x.data());

    // Feed-forward.
    b.rms_norm(x.data(), l.ffn_norm, n, e, float(hp_.norm_eps), cur.data());
    b.matmul(*l.gate, cur.data(), n, gate.data());  // [n, ff]
    b.matmul(*l.up, cur.data(), n, up.data());
    if (gemma()) b.geglu(gate.data(), up.data(), n * ff, gate.data());
    else b.swiglu(gate.data(), up.data(), n * ff, gate.data());
    b.matmul(*l.down, gate.data(), n, cur.data());  // [n, e]
    if (l.post_ffn_norm) b.rms_norm(cur.data(), l.post_ffn_norm, n, e, float(hp_.norm_eps), cur.data());
    b.add(x.data(), cur.data(), n * e, x.data());
  }

  // Only the rows whose logits are wanted go through the output matmul (the largest one).
  auto& out_rows = s.out_rows;
  out_rows.clear();
  int64_t n_out = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (!batch.want_logits[size_t(t)]) continue;
    out_rows.insert(out_rows.end(), x.begin() + t * e, x.begin() + (t + 1) * e);
    ++n_out;
  }
  Backend& ob = *output_->backend;
  ob.rms_norm(out_rows.data(), output_norm_, n_out, e, float(hp_.norm_eps), out_rows.data());
  const int64_t n_vocab = output_->n_rows();
  logits.resize(size_t(n_out * n_vocab));
  ob.matmul(*output_, out_rows.data(), n_out, logits.data());
  if (final_softcap_ > 0) ob.softcap(logits.data(), n_out * n_vocab, final_softcap_);
  return Status::ok();
}

}  // namespace tandem::model
