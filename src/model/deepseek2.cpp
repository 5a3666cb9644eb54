// deepseek2 (DeepSeek-V2/V2-Lite/V3/R1, Kimi-K2): multi-head latent attention (MLA) and a
// Mixture-of-Experts FFN after n_dense_lead dense layers,
//   x += attn_mla(norm(x));  x += (moe(norm(x)) + shared_experts(norm(x)))   (dense: ffn_swiglu)
// as llama.cpp's src/models/deepseek2.cpp computes it. MLA runs absorbed, as there: queries are taken
// into the latent space (W_k_b), attention is MQA over cached rows of [rope key, normed latent], and
// W_v_b expands each head's result. Files of older conversions, with one attn_kv_b per layer and no
// *_mla keys, run expanded as llama.cpp runs them: attn_kv_b gives every head its K and V, cached per head.
#include <cmath>

#include "model/blocks.h"
#include "model/registry.h"

namespace tandem::model {
namespace {

// deepseek2's own keys, checked against each other (errors name the key).
struct Deepseek2Params {
  int64_t q_lora_rank = 0;  // 0: a direct attn_q (V2-Lite)
  int64_t kv_lora_rank = 0, qk_nope = 0, qk_rope = 0, v_head_dim = 0;
  bool combined_kv_b = false;  // attn_kv_b (older conversions), run expanded; else attn_k_b/attn_v_b, absorbed
  int64_t n_dense_lead = 0, n_ff_exp = 0, n_expert_shared = 0;
  int64_t n_group = 0, n_group_used = 0;
  bool sigmoid_gating = false, norm_weights = false;
  float weights_scale = 0;
  float yarn_log_mul = 0;
};

Result<Deepseek2Params> read_params(const HParams& hp, const gguf::Metadata& meta, const std::string& source) {
  const std::string a = hp.arch + ".";
  const char* src = source.c_str();
  auto get = [&](const char* key) { return meta.get_u64(a + key); };
  auto need = [&](const char* key, int64_t* out) -> Status {
    const auto v = get(key);
    if (!v) return corrupt("%s: missing %s%s", src, a.c_str(), key);
    *out = int64_t(*v);
    return Status::ok();
  };
  Deepseek2Params d;
  d.q_lora_rank = int64_t(get("attention.q_lora_rank").value_or(0));
  TANDEM_TRY(need("attention.kv_lora_rank", &d.kv_lora_rank));
  int64_t k_mla = 0;
  d.qk_rope = hp.n_rot;
  d.combined_kv_b = !get("attention.key_length_mla") && !get("attention.value_length_mla");
  if (d.combined_kv_b) {
    // key_length / value_length are the expanded heads' (llama.cpp's is_mla() false).
    if (hp.n_head_kv != hp.n_head)
      return corrupt("%s: %sattention.head_count_kv %lld differs from head_count %lld in a file without "
                     "key_length_mla (the attn_kv_b form expands every head)", src, a.c_str(),
                     (long long)hp.n_head_kv, (long long)hp.n_head);
    k_mla = hp.head_dim_k;
    d.v_head_dim = hp.head_dim_v;
    d.qk_nope = k_mla - d.qk_rope;
    if (d.kv_lora_rank < 1 || d.qk_nope < 1 || d.v_head_dim < 1)
      return corrupt("%s: %sattention.key_length %lld must exceed rope.dimension_count %lld, and kv_lora_rank and "
                     "value_length be positive", src, a.c_str(), (long long)k_mla, (long long)d.qk_rope);
  } else {
    TANDEM_TRY(need("attention.key_length_mla", &k_mla));
    TANDEM_TRY(need("attention.value_length_mla", &d.v_head_dim));
    d.qk_nope = k_mla - d.qk_rope;
    if (d.kv_lora_rank < 1 || d.qk_nope < 1 || d.v_head_dim < 1)
      return corrupt("%s: %sattention.key_length_mla %lld must exceed rope.dimension_count %lld, and kv_lora_rank and "
                     "value_length_mla be positive", src, a.c_str(), (long long)k_mla, (long long)d.qk_rope);
    // The latent MQA the converter describes: one KV head of kv_lora + rope keys and kv_lora values.
    if (hp.n_head_kv != 1 || hp.head_dim_k != d.kv_lora_rank + d.qk_rope || hp.head_dim_v != d.kv_lora_rank)
      return corrupt("%s: %sattention.head_count_kv %lld, key_length %lld, value_length %lld disagree with "
                     "kv_lora_rank %lld and rope.dimension_count %lld (expected 1, %lld, %lld)", src, a.c_str(),
                     (long long)hp.n_head_kv, (long long)hp.head_dim_k, (long long)hp.head_dim_v,
                     (long long)d.kv_lora_rank, (long long)d.qk_rope, (long long)(d.kv_lora_rank + d.qk_rope),
                     (long long)d.kv_lora_rank);
  }
  d.n_dense_lead = int64_t(get("leading_dense_block_count").value_or(0));
  if (d.n_dense_lead > hp.n_layer)
    return corrupt("%s: %sleading_dense_block_count %lld exceeds block_count %lld", src, a.c_str(),
                   (long long)d.n_dense_lead, (long long)hp.n_layer);
  if (d.n_dense_lead < hp.n_layer) {
    if (hp.n_expert < 1) return corrupt("%s: missing or zero %sexpert_count", src, a.c_str());
    if (hp.n_expert_used < 1 || hp.n_expert_used > hp.n_expert)
      return corrupt("%s: %sexpert_used_count %lld must be 1..expert_count (%lld)", src, a.c_str(),
                     (long long)hp.n_expert_used, (long long)hp.n_expert);
    TANDEM_TRY(need("expert_feed_forward_length", &d.n_ff_exp));
    d.n_expert_shared = int64_t(get("expert_shared_count").value_or(0));
    d.n_group = int64_t(get("expert_group_count").value_or(0));
    d.n_group_used = int64_t(get("expert_group_used_count").value_or(0));
    if (d.n_group > 1) {
      if (hp.n_expert % d.n_group != 0)
        return corrupt("%s: %sexpert_group_count %lld does not divide expert_count %lld", src, a.c_str(),
                       (long long)d.n_group, (long long)hp.n_expert);
      if (d.n_group_used < 1 || d.n_group_used >= d.n_group)
        return corrupt("%s: %sexpert_group_used_count %lld must be 1..expert_group_count - 1 (%lld)", src, a.c_str(),
                       (long long)d.n_group_used, (long long)d.n_group - 1);
      if (d.n_group_used * (hp.n_expert / d.n_group) < hp.n_expert_used)
        return corrupt("%s: %sexpert_used_count %lld exceeds the %lld experts of the %lld groups used", src, a.c_str(),
                       (long long)hp.n_expert_used, (long long)(d.n_group_used * (hp.n_expert / d.n_group)),
                       (long long)d.n_group_used);
    }
  }
  // expert_gating_func: 1 softmax (V2; also when absent, as llama.cpp reads older files), 2 sigmoid (V3).
  const uint64_t gating = get("expert_gating_func").value_or(1);
  if (gating != 1 && gating != 2)
    return unsupported("%s: %sexpert_gating_func %llu is not supported (1 softmax, 2 sigmoid)", src, a.c_str(),
                       (unsigned long long)gating);
  d.sigmoid_gating = gating == 2;
  d.norm_weights = meta.get_bool(a + "expert_weights_norm").value_or(false);
  d.weights_scale = float(meta.get_f64(a + "expert_weights_scale").value_or(0));
  // The converter stores 0.1 * mscale_all_dim; llama.cpp divides the 0.1 back out.
  if (auto m = meta.get_f64(a + "rope.scaling.yarn_log_multiplier")) d.yarn_log_mul = float(*m) / 0.1f;
  return d;
}

Result<std::vector<TensorSpec>> deepseek2_tensors(const HParams& hp, const gguf::Metadata& meta,
                                                  const std::string& source) {
  TANDEM_ASSIGN(const Deepseek2Params d, read_params(hp, meta, source));
  const int64_t e = hp.n_embd, h = hp.n_head, k_mla = d.qk_nope + d.qk_rope;
  std::vector<TensorSpec> out = {
      {"token_embd.weight", {hp.n_vocab, e}},
      {"output_norm.weight", {e}},
      {"output.weight", {hp.n_vocab, e}, true},  // tied to token_embd when absent
  };
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    out.push_back({b + "attn_norm.weight", {e}});
    if (d.q_lora_rank > 0) {
      out.push_back({b + "attn_q_a.weight", {d.q_lora_rank, e}});
      out.push_back({b + "attn_q_a_norm.weight", {d.q_lora_rank}});
      out.push_back({b + "attn_q_b.weight", {h * k_mla, d.q_lora_rank}});
    } else {
      out.push_back({b + "attn_q.weight", {h * k_mla, e}});
    }
    out.push_back({b + "attn_kv_a_mqa.weight", {d.kv_lora_rank + d.qk_rope, e}});
    out.push_back({b + "attn_kv_a_norm.weight", {d.kv_lora_rank}});
    if (d.combined_kv_b) {
      out.push_back({b + "attn_kv_b.weight", {h * (d.qk_nope + d.v_head_dim), d.kv_lora_rank}});
    } else {
      out.push_back({b + "attn_k_b.weight", {h, d.kv_lora_rank, d.qk_nope}});
      out.push_back({b + "attn_v_b.weight", {h, d.v_head_dim, d.kv_lora_rank}});
    }
    out.push_back({b + "attn_output.weight", {e, h * d.v_head_dim}});
    out.push_back({b + "ffn_norm.weight", {e}});
    if (i < d.n_dense_lead) {
      out.push_back({b + "ffn_gate.weight", {hp.n_ff, e}});
      out.push_back({b + "ffn_up.weight", {hp.n_ff, e}});
      out.push_back({b + "ffn_down.weight", {e, hp.n_ff}});
      continue;
    }
    const int64_t ff = d.n_ff_exp, sh = d.n_ff_exp * d.n_expert_shared;
    out.push_back({b + "ffn_gate_inp.weight", {hp.n_expert, e}});
    out.push_back({b + "exp_probs_b.bias", {hp.n_expert}, true});
    // Split gate and up experts, or (current conversions with --fuse-gate-up-exps) one fused tensor.
    out.push_back({b + "ffn_gate_up_exps.weight", {hp.n_expert, 2 * ff, e}, true});
    out.push_back({b + "ffn_gate_exps.weight", {hp.n_expert, ff, e}, false, b + "ffn_gate_up_exps.weight"});
    out.push_back({b + "ffn_up_exps.weight", {hp.n_expert, ff, e}, false, b + "ffn_gate_up_exps.weight"});
    out.push_back({b + "ffn_down_exps.weight", {hp.n_expert, e, ff}});
    if (sh > 0) {
      out.push_back({b + "ffn_gate_shexp.weight", {sh, e}});
      out.push_back({b + "ffn_up_shexp.weight", {sh, e}});
      out.push_back({b + "ffn_down_shexp.weight", {e, sh}});
    }
  }
  return out;
}

class Deepseek2Model final : public Model {
 public:
  Status forward(const Batch& batch, const std::vector<int32_t>& cells, KvCache& kv, ForwardScratch& s,
                 std::vector<float>& logits, bool flash_attn) const override {
    const int64_t n = batch.size(), e = hp_.n_embd, h = hp_.n_head;
    const float eps = float(hp_.norm_eps);
    const PassInputs in{*this, batch, kv, flash_attn};
    s.begin_pass(batch, cells, kv);
    // Head j of token t is "expert" j of W_k_b / W_v_b ([n_head, rows, cols]): one matmul_id each.
    std::vector<int32_t>& head_ids = s.host_i32(Slot::kHeadIds);
    head_ids.resize(size_t(n * h));
    for (int64_t i = 0; i < n * h; ++i) head_ids[size_t(i)] = int32_t(i % h);
    Backend* xb = tok_embd().backend;  // where the residual stream x is
    TANDEM_ASSIGN(float* x, s.get(*xb, Slot::kX, n * e));
    TANDEM_ASSIGN(const DeviceInputs ei, s.inputs(*xb));
    xb->get_rows(tok_embd(), {ei.tokens, size_t(n)}, x);  // [n, e]
    for (size_t il = 0; il < layers_.size(); ++il) {
      const Layer& l = layers_[il];
      Backend& ab = *l.wkv_a->backend;
      TANDEM_ASSIGN(x, s.move(*xb, x, ab, Slot::kX, n * e));
      TANDEM_ASSIGN(float* cur, s.get(ab, Slot::kCur, n * e));
      ab.rms_norm(x, &on(*l.attn_norm, ab), n, e, eps, cur);
      if (d_.combined_kv_b) {
        TANDEM_TRY(attention_expanded(l, in, il, cur, cur, s));  // [n, e]
      } else {
        TANDEM_TRY(attention_mla(l, in, il, cur, cur, s));  // [n, e]
      }
      ab.add(x, cur, n * e, x);
      Backend& fb = l.moe.gate_inp ? *l.moe.gate_inp->backend : *l.gate->backend;
      TANDEM_ASSIGN(x, s.move(ab, x, fb, Slot::kX, n * e));
      TANDEM_ASSIGN(cur, s.get(fb, Slot::kCur, n * e));
      fb.rms_norm(x, &on(*l.ffn_norm, fb), n, e, eps, cur);
      if (l.moe.gate_inp) {
        TANDEM_ASSIGN(cur, moe_ffn(l.moe, moe_, n, cur, s));  // [n, e]
      } else {
        TANDEM_TRY(ffn_glu(*l.gate, *l.up, *l.down, GluKind::Silu, n, cur, cur, s));  // [n, e]
      }
      fb.add(x, cur, n * e, x);
      xb = &fb;
    }
    return output_logits(in, output_norm(), output(), eps, 0, *xb, x, s, logits);  // [n_out, n_vocab]
  }

 private:
  using Slot = ForwardScratch::Slot;

  struct Layer {
    const Weight* attn_norm = nullptr;
    const Weight *wq_a = nullptr, *q_a_norm = nullptr, *wq_b = nullptr, *wq = nullptr;
    const Weight *wkv_a = nullptr, *kv_a_norm = nullptr, *wk_b = nullptr, *wv_b = nullptr, *wo = nullptr;
    const Weight* wkv_b = nullptr;  // the older combined form instead of wk_b, wv_b
    const Weight* ffn_norm = nullptr;
    const Weight *gate = nullptr, *up = nullptr, *down = nullptr;  // leading dense layers
    MoeWeights moe;                                                // MoE layers (moe.gate_inp set)
  };

  // out = W_o MLA(x) on the attention matrices' device; x, out: [n, e] there, may alias. Cached per
  // token, on the cache's device: K = [rope key, normed latent] (qk_rope + kv_lora values; V is its
  // latent part, so -ctv does not apply: V has K's type).
  Status attention_mla(const Layer& l, const PassInputs& in, size_t il, const float* x, float* out,
                       ForwardScratch& s) const {
    Backend& b = *l.wkv_a->backend;
    Backend& kb = *kv_layers()[il].backend;
    const int64_t n = in.batch.size(), h = hp_.n_head, lat = d_.kv_lora_rank, rope = d_.qk_rope,
                  nope = d_.qk_nope, k_mla = nope + rope, hd_k = rope + lat;
    const float eps = float(hp_.norm_eps);
    TANDEM_ASSIGN(const DeviceInputs bi, s.inputs(b));
    TANDEM_ASSIGN(float* q, s.get(b, Slot::kQ, n * h * k_mla));
    if (l.wq_a) {
      TANDEM_ASSIGN(float* qa, s.get(b, Slot::kQAbs, n * d_.q_lora_rank));
      b.matmul(*l.wq_a, x, n, qa);                                        // [n, q_lora]
      b.rms_norm(qa, &on(*l.q_a_norm, b), n, d_.q_lora_rank, eps, qa);
      b.matmul(*l.wq_b, qa, n, q);                                        // [n, h, nope + rope]
    } else {
      b.matmul(*l.wq, x, n, q);                                           // [n, h, nope + rope]
    }
    TANDEM_ASSIGN(float* kv_pe, s.get(b, Slot::kKvPe, n * (lat + rope)));
    b.matmul(*l.wkv_a, x, n, kv_pe);                                      // [n, lat + rope]
    TANDEM_ASSIGN(float* v, s.get(b, Slot::kV, n * lat));
    b.copy_2d(kv_pe, lat + rope, v, lat, n, lat);
    b.rms_norm(v, &on(*l.kv_a_norm, b), n, lat, eps, v);                  // V: [n, lat]
    TANDEM_ASSIGN(float* k, s.get(b, Slot::kK, n * hd_k));
    b.copy_2d(kv_pe + lat, lat + rope, k, hd_k, n, rope);
    b.copy_2d(v, lat, k + rope, hd_k, n, lat);
    b.rope(k, n, 1, int(hd_k), bi.pos, rope_);                            // K: [n, 1, rope + lat]

    // Queries taken into the latent space: q_abs[t, j] = W_k_b[j] q_nope[t, j].
    TANDEM_ASSIGN(int32_t* head_ids, s.get_i32(b, Slot::kHeadIds, n * h));
    b.copy_from_host(head_ids, s.host_i32(Slot::kHeadIds).data(), size_t(n * h) * sizeof(int32_t));
    TANDEM_ASSIGN(float* q_nope, s.get(b, Slot::kQNope, n * h * nope));
    b.copy_2d(q, k_mla, q_nope, nope, n * h, nope);
    TANDEM_ASSIGN(float* q_abs, s.get(b, Slot::kQAbs, n * h * lat));
    b.matmul_id(*l.wk_b, q_nope, true, head_ids, n, int(h), q_abs);     // [n, h, lat]
    TANDEM_ASSIGN(float* qq, s.get(b, Slot::kAttn, n * h * hd_k));
    b.copy_2d(q + nope, k_mla, qq, hd_k, n * h, rope);
    b.copy_2d(q_abs, lat, qq + rope, hd_k, n * h, lat);
    b.rope(qq, n, int(h), int(hd_k), bi.pos, rope_);                     // Q: [n, h, rope + lat]
    // A quantized cache rotates K (and Q) in Hadamard blocks that must not straddle the rope key and
    // the latent, so that the latent read back as V is rotated blockwise too and the output can be
    // rotated back.
    const KvCache& kv = in.kv;
    int rot = kv_rotation_block(kv.type_k(), hd_k, false);
    while (rot > 1 && (rope % rot || lat % rot)) rot /= 2;
    if (rot > 1) {
      b.hadamard(qq, n * h, hd_k, rot);
      b.hadamard(k, n, hd_k, rot);
    }

    // Store and attend where the cache lives: MQA, one latent head for all query heads, V read from
    // the latent part of the K rows (the latent cache keeps no V of its own).
    TANDEM_ASSIGN(qq, s.move(b, qq, kb, Slot::kAttn, n * h * hd_k));
    TANDEM_ASSIGN(k, s.move(b, k, kb, Slot::kK, n * hd_k));
    TANDEM_ASSIGN(float* attn, s.get(kb, Slot::kAttnV, n * h * lat));
    TANDEM_ASSIGN(const DeviceInputs ki, s.inputs(kb));
    const KvCache::Layer& cache = kv.layer(il);
    kb.kv_store(k, nullptr, n, hd_k, 0, ki.cells, kv.type_k(), kv.type_k(), cache.k, nullptr);
    AttentionArgs a;
    a.q = qq;
    a.out = attn;
    a.n_tokens = n;
    a.n_head = int(h);
    a.n_head_kv = 1;
    a.head_dim_k = int(hd_k);
    a.head_dim_v = int(lat);
    a.scale = kq_scale_;
    a.token_pos = ki.pos;
    a.token_seq = ki.seq;
    a.k_type = a.v_type = kv.type_k();
    a.flash = in.flash_attn;
    a.k = cache.k;
    a.v = static_cast<const uint8_t*>(cache.k) + row_bytes(kv.type_k(), rope);
    a.k_stride = a.v_stride = hd_k;
    a.n_cells = kv.active_cells();
    a.cell_pos = ki.cell_pos;
    a.cell_seq = ki.cell_seq;
    kb.attention(a);  // [n, h, lat]
    if (rot > 1) kb.hadamard(attn, n * h, lat, rot);
    TANDEM_ASSIGN(attn, s.move(kb, attn, b, Slot::kAttnV, n * h * lat));

    TANDEM_ASSIGN(float* heads, s.get(b, Slot::kQNope, n * h * d_.v_head_dim));
    b.matmul_id(*l.wv_b, attn, true, head_ids, n, int(h), heads);      // [n, h, v_head]
    b.matmul(*l.wo, heads, n, out);                                       // [n, e]
    return Status::ok();
  }

  // out = W_o MHA(x) for the combined attn_kv_b form, expanded as llama.cpp runs it: the normed latent
  // through attn_kv_b gives every head its K (after the shared rope key) and V, cached per head.
  // x, out: [n, e] on the attention matrices' device, may alias.
  Status attention_expanded(const Layer& l, const PassInputs& in, size_t il, const float* x, float* out,
                            ForwardScratch& s) const {
    Backend& b = *l.wkv_a->backend;
    Backend& kb = *kv_layers()[il].backend;
    const int64_t n = in.batch.size(), h = hp_.n_head, lat = d_.kv_lora_rank, rope = d_.qk_rope,
                  nope = d_.qk_nope, vd = d_.v_head_dim, k_mla = nope + rope, hd_k = rope + nope;
    const float eps = float(hp_.norm_eps);
    TANDEM_ASSIGN(const DeviceInputs bi, s.inputs(b));
    TANDEM_ASSIGN(float* q, s.get(b, Slot::kQ, n * h * k_mla));
    if (l.wq_a) {
      TANDEM_ASSIGN(float* qa, s.get(b, Slot::kQAbs, n * d_.q_lora_rank));
      b.matmul(*l.wq_a, x, n, qa);                                        // [n, q_lora]
      b.rms_norm(qa, &on(*l.q_a_norm, b), n, d_.q_lora_rank, eps, qa);
      b.matmul(*l.wq_b, qa, n, q);                                        // [n, h, nope + rope]
    } else {
      b.matmul(*l.wq, x, n, q);                                           // [n, h, nope + rope]
    }
    TANDEM_ASSIGN(float* kv_pe, s.get(b, Slot::kKvPe, n * (lat + rope)));
    b.matmul(*l.wkv_a, x, n, kv_pe);                                      // [n, lat + rope]
    TANDEM_ASSIGN(float* latent, s.get(b, Slot::kQAbs, n * lat));
    b.copy_2d(kv_pe, lat + rope, latent, lat, n, lat);
    b.rms_norm(latent, &on(*l.kv_a_norm, b), n, lat, eps, latent);        // [n, lat]
    TANDEM_ASSIGN(float* kvx, s.get(b, Slot::kQNope, n * h * (nope + vd)));
    b.matmul(*l.wkv_b, latent, n, kvx);                                   // [n, h, nope + v]
    // K: [n, h, rope + nope], the rope key repeated for every head; V: [n, h, v]; Q: [n, h, rope + nope].
    TANDEM_ASSIGN(float* k, s.get(b, Slot::kK, n * h * hd_k));
    for (int64_t j = 0; j < h; ++j) b.copy_2d(kv_pe + lat, lat + rope, k + j * hd_k, h * hd_k, n, rope);
    b.copy_2d(kvx, nope + vd, k + rope, hd_k, n * h, nope);
    TANDEM_ASSIGN(float* v, s.get(b, Slot::kV, n * h * vd));
    b.copy_2d(kvx + nope, nope + vd, v, vd, n * h, vd);
    TANDEM_ASSIGN(float* qq, s.get(b, Slot::kAttn, n * h * hd_k));
    b.copy_2d(q + nope, k_mla, qq, hd_k, n * h, rope);
    b.copy_2d(q, k_mla, qq + rope, hd_k, n * h, nope);
    b.rope(qq, n, int(h), int(hd_k), bi.pos, rope_);
    b.rope(k, n, int(h), int(hd_k), bi.pos, rope_);
    const KvCache& kv = in.kv;
    const int k_rot = kv_rotation_block(kv.type_k(), hd_k, false), v_rot = kv_rotation_block(kv.type_v(), vd, true);
    if (k_rot) {
      b.hadamard(qq, n * h, hd_k, k_rot);
      b.hadamard(k, n * h, hd_k, k_rot);
    }
    if (v_rot) b.hadamard(v, n * h, vd, v_rot);

    TANDEM_ASSIGN(qq, s.move(b, qq, kb, Slot::kAttn, n * h * hd_k));
    TANDEM_ASSIGN(k, s.move(b, k, kb, Slot::kK, n * h * hd_k));
    TANDEM_ASSIGN(v, s.move(b, v, kb, Slot::kV, n * h * vd));
    TANDEM_ASSIGN(float* attn, s.get(kb, Slot::kAttnV, n * h * vd));
    TANDEM_ASSIGN(const DeviceInputs ki, s.inputs(kb));
    const KvCache::Layer& cache = kv.layer(il);
    kb.kv_store(k, v, n, h * hd_k, h * vd, ki.cells, kv.type_k(), kv.type_v(), cache.k, cache.v);
    AttentionArgs a;
    a.q = qq;
    a.out = attn;
    a.n_tokens = n;
    a.n_head = a.n_head_kv = int(h);
    a.head_dim_k = int(hd_k);
    a.head_dim_v = int(vd);
    a.scale = kq_scale_;
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
    kb.attention(a);  // [n, h, v]
    if (v_rot) kb.hadamard(attn, n * h, vd, v_rot);
    TANDEM_ASSIGN(attn, s.move(kb, attn, b, Slot::kAttnV, n * h * vd));
    b.matmul(*l.wo, attn, n, out);  // [n, e]
    return Status::ok();
  }

  Status bind_layers() override {
    TANDEM_ASSIGN(d_, read_params(hp_, file().metadata(), file().path()));
    moe_ = {.n_expert = hp_.n_expert, .n_expert_used = hp_.n_expert_used, .n_group = d_.n_group,
            .n_group_used = d_.n_group_used, .sigmoid_gating = d_.sigmoid_gating, .norm_weights = d_.norm_weights,
            .weights_scale = d_.weights_scale};
    TANDEM_ASSIGN(rope_, rope_params(RopeKind::Normal));
    // YaRN as llama.cpp sets it up for deepseek2 (llama-context.cpp, src/models/deepseek2.cpp): the rope's
    // attn_factor cancels the magnitude correction its kernel applies, and the correction goes into the
    // softmax scale instead, as mscale^2 with DeepSeek's log multiplier.
    const float rope_attn_factor = float(file().metadata().get_f64(hp_.arch + ".rope.scaling.attn_factor").value_or(1.0));
    float attn_factor = rope_attn_factor;
    if (rope_.ext_factor != 0) {
      rope_.attn_factor = 1.0f / (1.0f + 0.1f * std::log(1.0f / rope_.freq_scale)) * rope_attn_factor;
      attn_factor = rope_.attn_factor;
    }
    const float attn_factor_org = attn_factor * (1.0f + 0.1f * std::log(1.0f / rope_.freq_scale));
    const float mscale = attn_factor_org * (1.0f + 0.1f * d_.yarn_log_mul * std::log(1.0f / rope_.freq_scale));
    kq_scale_ = 1.0f * mscale * mscale / std::sqrt(float(d_.qk_nope + d_.qk_rope));

    layers_.resize(size_t(hp_.n_layer));
    for (int64_t i = 0; i < hp_.n_layer; ++i) {
      const std::string b = "blk." + std::to_string(i) + ".";
      Layer& l = layers_[size_t(i)];
      l.attn_norm = find(b + "attn_norm.weight");
      l.wq_a = find(b + "attn_q_a.weight");
      l.q_a_norm = find(b + "attn_q_a_norm.weight");
      l.wq_b = find(b + "attn_q_b.weight");
      l.wq = find(b + "attn_q.weight");
      l.wkv_a = find(b + "attn_kv_a_mqa.weight");
      l.kv_a_norm = find(b + "attn_kv_a_norm.weight");
      l.wk_b = find(b + "attn_k_b.weight");
      l.wv_b = find(b + "attn_v_b.weight");
      l.wkv_b = find(b + "attn_kv_b.weight");
      l.wo = find(b + "attn_output.weight");
      l.ffn_norm = find(b + "ffn_norm.weight");
      const Weight* probs_b = nullptr;
      if (i < d_.n_dense_lead) {
        l.gate = find(b + "ffn_gate.weight");
        l.up = find(b + "ffn_up.weight");
        l.down = find(b + "ffn_down.weight");
      } else {
        l.moe.layer = i;
        l.moe.gate_inp = find(b + "ffn_gate_inp.weight");
        probs_b = find(b + "exp_probs_b.bias");
        // The fused form where the file has it, as llama.cpp's loader prefers it (create_tensor_gate_up_exps).
        l.moe.gate_up_exps = find(b + "ffn_gate_up_exps.weight");
        if (!l.moe.gate_up_exps) {
          l.moe.gate_exps = find(b + "ffn_gate_exps.weight");
          l.moe.up_exps = find(b + "ffn_up_exps.weight");
        }
        l.moe.down_exps = find(b + "ffn_down_exps.weight");
        l.moe.gate_shexp = find(b + "ffn_gate_shexp.weight");
        l.moe.up_shexp = find(b + "ffn_up_shexp.weight");
        l.moe.down_shexp = find(b + "ffn_down_shexp.weight");
      }
      TANDEM_TRY(require_f32({l.attn_norm, l.q_a_norm, l.kv_a_norm, l.ffn_norm, probs_b}));
      if (probs_b) l.moe.exp_probs_b = static_cast<const float*>(host_data(probs_b->name));
      if (d_.combined_kv_b)  // expanded: every head's K (rope + nope) and V
        kv_layers_.push_back({nullptr, hp_.n_head * (d_.qk_rope + d_.qk_nope), hp_.n_head * d_.v_head_dim});
      else  // latent: V is a view of K
        kv_layers_.push_back({nullptr, d_.qk_rope + d_.kv_lora_rank, 0});
    }
    link_expert_cache(layers_);
    return Status::ok();
  }

  std::vector<std::vector<const Weight*>> blocks() const override {
    std::vector<std::vector<const Weight*>> out;
    for (const Layer& l : layers_) {
      out.push_back({l.wkv_a, l.wo});
      out.back().insert(out.back().end(), l.wkv_b ? std::initializer_list<const Weight*>{l.wkv_b}
                                                  : std::initializer_list<const Weight*>{l.wk_b, l.wv_b});
      out.back().insert(out.back().end(), l.wq ? std::initializer_list<const Weight*>{l.wq}
                                               : std::initializer_list<const Weight*>{l.wq_a, l.wq_b});
      // The router, each expert matrix and the FFNs' matrices may each go their own way (moe_ffn, ffn_glu).
    }
    return out;
  }

  Deepseek2Params d_;
  MoeConfig moe_;
  RopeParams rope_;
  float kq_scale_ = 1;
  std::vector<Layer> layers_;
};

std::unique_ptr<Model> create_deepseek2() { return std::make_unique<Deepseek2Model>(); }

}  // namespace

const Architecture kDeepseek2{"deepseek2", deepseek2_tensors, create_deepseek2};

}  // namespace tandem::model
