// gemma3: a sandwich-norm decoder layer with GeGLU,
//   x += post_norm(attn(norm(x)));  x += post_norm(ffn_geglu(norm(x)))
// with per-head QK norms, embeddings scaled by sqrt(n_embd), and five sliding-window layers (local
// RoPE base) for every global one.
#include <cmath>

#include "model/blocks.h"
#include "model/registry.h"

namespace tandem::model {
namespace {

Result<std::vector<TensorSpec>> gemma3_tensors(const HParams& hp, const gguf::Metadata&, const std::string&) {
  const int64_t e = hp.n_embd, q = hp.n_head * hp.head_dim_k, k = hp.n_head_kv * hp.head_dim_k,
                v = hp.n_head_kv * hp.head_dim_v, ff = hp.n_ff;
  std::vector<TensorSpec> out = {
      {"token_embd.weight", {hp.n_vocab, e}},
      {"output_norm.weight", {e}},
      {"output.weight", {hp.n_vocab, e}, true},  // Gemma ties it to token_embd
  };
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    out.push_back({b + "attn_norm.weight", {e}});
    out.push_back({b + "attn_q.weight", {q, e}});
    out.push_back({b + "attn_k.weight", {k, e}});
    out.push_back({b + "attn_v.weight", {v, e}});
    out.push_back({b + "attn_output.weight", {e, hp.n_head * hp.head_dim_v}});
    out.push_back({b + "attn_q_norm.weight", {hp.head_dim_k}});
    out.push_back({b + "attn_k_norm.weight", {hp.head_dim_k}});
    out.push_back({b + "post_attention_norm.weight", {e}});
    out.push_back({b + "ffn_norm.weight", {e}});
    out.push_back({b + "ffn_gate.weight", {ff, e}});
    out.push_back({b + "ffn_up.weight", {ff, e}});
    out.push_back({b + "ffn_down.weight", {e, ff}});
    out.push_back({b + "post_ffw_norm.weight", {e}});
  }
  return out;
}

class Gemma3Model final : public Model {
 public:
  Status forward(const Batch& batch, const std::vector<int32_t>& cells, KvCache& kv, ForwardScratch& s,
                 std::vector<float>& logits, bool flash_attn) const override {
    using Slot = ForwardScratch::Slot;
    const int64_t n = batch.size(), e = hp_.n_embd;
    const float eps = float(hp_.norm_eps);
    const PassInputs in{*this, batch, kv, flash_attn};
    s.begin_pass(batch, cells, kv);
    Backend* xb = tok_embd().backend;  // where the residual stream x is
    TANDEM_ASSIGN(float* x, s.get(*xb, Slot::kX, n * e));
    TANDEM_ASSIGN(const DeviceInputs ei, s.inputs(*xb));
    xb->get_rows(tok_embd(), {ei.tokens, size_t(n)}, x);  // [n, e]
    xb->scale(x, n * e, embd_scale_);
    for (size_t il = 0; il < layers_.size(); ++il) {
      const Layer& l = layers_[il];
      Backend& ab = *l.attn.wq->backend;
      TANDEM_ASSIGN(x, s.move(*xb, x, ab, Slot::kX, n * e));
      TANDEM_ASSIGN(float* cur, s.get(ab, Slot::kCur, n * e));
      ab.rms_norm(x, &on(*l.attn_norm, ab), n, e, eps, cur);
      TANDEM_TRY(attention_block(l.attn, l.config, in, il, cur, cur, s));  // [n, e]
      ab.rms_norm(cur, &on(*l.post_attn_norm, ab), n, e, eps, cur);
      ab.add(x, cur, n * e, x);
      Backend& fb = *l.gate->backend;
      TANDEM_ASSIGN(x, s.move(ab, x, fb, Slot::kX, n * e));
      TANDEM_ASSIGN(cur, s.get(fb, Slot::kCur, n * e));
      fb.rms_norm(x, &on(*l.ffn_norm, fb), n, e, eps, cur);
      TANDEM_TRY(ffn_glu(*l.gate, *l.up, *l.down, GluKind::GeluTanh, n, cur, cur, s));  // [n, e]
      fb.rms_norm(cur, &on(*l.post_ffn_norm, fb), n, e, eps, cur);
      fb.add(x, cur, n * e, x);
      xb = &fb;
    }
    return output_logits(in, output_norm(), output(), eps, final_softcap_, *xb, x, s, logits);  // [n_out, n_vocab]
  }

 private:
  struct Layer {
    const Weight *attn_norm = nullptr, *post_attn_norm = nullptr;
    AttentionWeights attn;
    AttentionConfig config;      // sliding layers differ in window and RoPE
    const Weight *ffn_norm = nullptr, *gate = nullptr, *up = nullptr, *down = nullptr, *post_ffn_norm = nullptr;
  };

  Status bind_layers() override {
    const auto& meta = file().metadata();
    const std::string a = hp_.arch + ".";
    embd_scale_ = std::sqrt(float(hp_.n_embd));
    final_softcap_ = float(meta.get_f64(a + "final_logit_softcapping").value_or(0));
    // Five sliding-window layers, then one global layer (pattern 6); local RoPE base 10000, unscaled.
    const int64_t swa_pattern = int64_t(meta.get_u64(a + "attention.sliding_window_pattern").value_or(6));
    const float rope_base_swa = float(meta.get_f64(a + "rope.freq_base_swa").value_or(10000.0));
    AttentionConfig global{.n_head = int(hp_.n_head), .n_head_kv = int(hp_.n_head_kv),
                           .head_dim_k = int(hp_.head_dim_k), .head_dim_v = int(hp_.head_dim_v),
                           .scale = attention_scale(), .norm_eps = float(hp_.norm_eps), .rope = {}};
    TANDEM_ASSIGN(global.rope, rope_params(RopeKind::Neox));
    TANDEM_ASSIGN(global.rope_freqs, rope_freqs());
    layers_.resize(size_t(hp_.n_layer));
    for (int64_t i = 0; i < hp_.n_layer; ++i) {
      const std::string b = "blk." + std::to_string(i) + ".";
      Layer& l = layers_[size_t(i)];
      l.attn_norm = find(b + "attn_norm.weight");
      l.attn = {.wq = find(b + "attn_q.weight"), .wk = find(b + "attn_k.weight"), .wv = find(b + "attn_v.weight"),
                .wo = find(b + "attn_output.weight"), .q_norm = find(b + "attn_q_norm.weight"),
                .k_norm = find(b + "attn_k_norm.weight")};
      l.post_attn_norm = find(b + "post_attention_norm.weight");
      l.ffn_norm = find(b + "ffn_norm.weight");
      l.gate = find(b + "ffn_gate.weight");
      l.up = find(b + "ffn_up.weight");
      l.down = find(b + "ffn_down.weight");
      l.post_ffn_norm = find(b + "post_ffw_norm.weight");
      l.config = global;
      if (hp_.sliding_window > 0 && (swa_pattern == 0 || (i % swa_pattern) < swa_pattern - 1)) {
        l.config.sliding_window = int(hp_.sliding_window);
        l.config.rope.freq_base = rope_base_swa;
        l.config.rope.freq_scale = 1;
      }
      TANDEM_TRY(require_f32({l.attn_norm, l.attn.q_norm, l.attn.k_norm, l.post_attn_norm, l.ffn_norm, l.post_ffn_norm}));
      kv_layers_.push_back({nullptr, hp_.n_head_kv * hp_.head_dim_k, hp_.n_head_kv * hp_.head_dim_v});
    }
    return Status::ok();
  }

  std::vector<std::vector<const Weight*>> blocks() const override {
    std::vector<std::vector<const Weight*>> out;
    for (const Layer& l : layers_) {
      out.push_back({l.attn.wq, l.attn.wk, l.attn.wv, l.attn.wo});  // the FFN's matrices may part (ffn_glu)
    }
    return out;
  }

  float embd_scale_ = 1, final_softcap_ = 0;
  std::vector<Layer> layers_;
};

std::unique_ptr<Model> create_gemma3() { return std::make_unique<Gemma3Model>(); }

}  // namespace

const Architecture kGemma3{"gemma3", gemma3_tensors, create_gemma3, /*ffn_gelu=*/true};

}  // namespace tandem::model
