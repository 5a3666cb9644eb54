// llama, qwen2, qwen3 and qwen3moe: the same pre-norm decoder layer,
//   x += attn(norm(x));  x += ffn_swiglu(norm(x))   (qwen3moe: x += moe(norm(x)))
// differing only in switches (qwen2's QKV biases, qwen3's per-head QK norms, NeoX RoPE for the Qwens,
// qwen3moe's experts), so one file serves them, as llama.cpp's llama model file serves its close relatives.
#include "model/blocks.h"
#include "model/registry.h"

namespace tandem::model {
namespace {

struct Variant {
  RopeKind rope;
  bool qkv_bias;  // attn_q/k/v.bias
  bool qk_norm;   // attn_q_norm / attn_k_norm, per head
  bool moe;       // experts in every layer's FFN: top-k of a softmax, weights normalized (qwen3moe)
};

constexpr Variant kLlamaVariant{RopeKind::Normal, false, false, false};
constexpr Variant kQwen2Variant{RopeKind::Neox, true, false, false};
constexpr Variant kQwen3Variant{RopeKind::Neox, false, true, false};
constexpr Variant kQwen3MoeVariant{RopeKind::Neox, false, true, true};

// Experts per token and the experts' FFN width (expert_feed_forward_length, else n_ff / n_expert_used
// as llama.cpp reads older qwen3moe files); errors name the key.
Result<int64_t> expert_ff(const HParams& hp, const gguf::Metadata& meta, const std::string& source) {
  const std::string a = hp.arch + ".";
  if (hp.n_expert < 1) return corrupt("%s: missing or zero %sexpert_count", source.c_str(), a.c_str());
  if (hp.n_expert_used < 1 || hp.n_expert_used > hp.n_expert)
    return corrupt("%s: %sexpert_used_count %lld must be 1..expert_count (%lld)", source.c_str(), a.c_str(),
                   (long long)hp.n_expert_used, (long long)hp.n_expert);
  const int64_t ff = int64_t(meta.get_u64(a + "expert_feed_forward_length").value_or(0));
  return ff > 0 ? ff : hp.n_ff / hp.n_expert_used;
}

Result<std::vector<TensorSpec>> tensors(const Variant& v, const HParams& hp, const gguf::Metadata& meta,
                                        const std::string& source) {
  int64_t ff_exp = 0;
  if (v.moe) {
    TANDEM_ASSIGN(ff_exp, expert_ff(hp, meta, source));
  }
  const int64_t e = hp.n_embd, q = hp.n_head * hp.head_dim_k, k = hp.n_head_kv * hp.head_dim_k,
                vv = hp.n_head_kv * hp.head_dim_v, ff = hp.n_ff;
  std::vector<TensorSpec> out = {
      {"token_embd.weight", {hp.n_vocab, e}},
      {"output_norm.weight", {e}},
      {"output.weight", {hp.n_vocab, e}, true},  // tied to token_embd when absent
  };
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    out.push_back({b + "attn_norm.weight", {e}});
    out.push_back({b + "attn_q.weight", {q, e}});
    out.push_back({b + "attn_k.weight", {k, e}});
    out.push_back({b + "attn_v.weight", {vv, e}});
    out.push_back({b + "attn_output.weight", {e, hp.n_head * hp.head_dim_v}});
    if (v.qkv_bias) {
      out.push_back({b + "attn_q.bias", {q}});
      out.push_back({b + "attn_k.bias", {k}});
      out.push_back({b + "attn_v.bias", {vv}});
    }
    if (v.qk_norm) {
      out.push_back({b + "attn_q_norm.weight", {hp.head_dim_k}});
      out.push_back({b + "attn_k_norm.weight", {hp.head_dim_k}});
    }
    out.push_back({b + "ffn_norm.weight", {e}});
    if (v.moe) {
      out.push_back({b + "ffn_gate_inp.weight", {hp.n_expert, e}});
      out.push_back({b + "ffn_gate_exps.weight", {hp.n_expert, ff_exp, e}});
      out.push_back({b + "ffn_up_exps.weight", {hp.n_expert, ff_exp, e}});
      out.push_back({b + "ffn_down_exps.weight", {hp.n_expert, e, ff_exp}});
      continue;
    }
    out.push_back({b + "ffn_gate.weight", {ff, e}});
    out.push_back({b + "ffn_up.weight", {ff, e}});
    out.push_back({b + "ffn_down.weight", {e, ff}});
  }
  return out;
}

class LlamaModel final : public Model {
 public:
  explicit LlamaModel(const Variant& v) : variant_(v) {}

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
    for (size_t il = 0; il < layers_.size(); ++il) {
      const Layer& l = layers_[il];
      Backend& ab = *l.attn.wq->backend;
      TANDEM_ASSIGN(x, s.move(*xb, x, ab, Slot::kX, n * e));
      TANDEM_ASSIGN(float* cur, s.get(ab, Slot::kCur, n * e));
      ab.rms_norm(x, &on(*l.attn_norm, ab), n, e, eps, cur);
      TANDEM_TRY(attention_block(l.attn, attn_, in, il, cur, cur, s));  // [n, e]
      ab.add(x, cur, n * e, x);
      Backend& fb = variant_.moe ? *l.moe.gate_inp->backend : *l.gate->backend;
      TANDEM_ASSIGN(x, s.move(ab, x, fb, Slot::kX, n * e));
      TANDEM_ASSIGN(cur, s.get(fb, Slot::kCur, n * e));
      fb.rms_norm(x, &on(*l.ffn_norm, fb), n, e, eps, cur);
      if (variant_.moe) {
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
  struct Layer {
    const Weight* attn_norm = nullptr;
    AttentionWeights attn;
    const Weight *ffn_norm = nullptr, *gate = nullptr, *up = nullptr, *down = nullptr;
    MoeWeights moe;  // qwen3moe
  };

  Status bind_layers() override {
    attn_ = {.n_head = int(hp_.n_head), .n_head_kv = int(hp_.n_head_kv), .head_dim_k = int(hp_.head_dim_k),
             .head_dim_v = int(hp_.head_dim_v), .scale = attention_scale(), .norm_eps = float(hp_.norm_eps), .rope = {}};
    TANDEM_ASSIGN(attn_.rope, rope_params(variant_.rope));
    TANDEM_ASSIGN(attn_.rope_freqs, rope_freqs());
    // qwen3moe's routing, as llama.cpp's graph fixes it: softmax, weights normalized, never scaled.
    moe_ = {.n_expert = hp_.n_expert, .n_expert_used = hp_.n_expert_used, .norm_weights = true};
    layers_.resize(size_t(hp_.n_layer));
    for (int64_t i = 0; i < hp_.n_layer; ++i) {
      const std::string b = "blk." + std::to_string(i) + ".";
      Layer& l = layers_[size_t(i)];
      l.attn_norm = find(b + "attn_norm.weight");
      l.attn = {.wq = find(b + "attn_q.weight"), .wk = find(b + "attn_k.weight"), .wv = find(b + "attn_v.weight"),
                .wo = find(b + "attn_output.weight"), .bq = find(b + "attn_q.bias"), .bk = find(b + "attn_k.bias"),
                .bv = find(b + "attn_v.bias"), .q_norm = find(b + "attn_q_norm.weight"),
                .k_norm = find(b + "attn_k_norm.weight")};
      l.ffn_norm = find(b + "ffn_norm.weight");
      l.gate = find(b + "ffn_gate.weight");
      l.up = find(b + "ffn_up.weight");
      l.down = find(b + "ffn_down.weight");
      l.moe = {.gate_inp = find(b + "ffn_gate_inp.weight"), .gate_exps = find(b + "ffn_gate_exps.weight"),
               .up_exps = find(b + "ffn_up_exps.weight"), .down_exps = find(b + "ffn_down_exps.weight"), .layer = i};
      TANDEM_TRY(require_f32({l.attn_norm, l.ffn_norm, l.attn.bq, l.attn.bk, l.attn.bv, l.attn.q_norm, l.attn.k_norm}));
      kv_layers_.push_back({nullptr, hp_.n_head_kv * hp_.head_dim_k, hp_.n_head_kv * hp_.head_dim_v});
    }
    link_expert_cache(layers_);
    return Status::ok();
  }

  std::vector<std::vector<const Weight*>> blocks() const override {
    std::vector<std::vector<const Weight*>> out;
    for (const Layer& l : layers_) {
      out.push_back({l.attn.wq, l.attn.wk, l.attn.wv, l.attn.wo});  // FFN and experts' matrices may part
    }
    return out;
  }

  Variant variant_;
  AttentionConfig attn_;
  MoeConfig moe_;
  std::vector<Layer> layers_;
};

template <const Variant& V>
Result<std::vector<TensorSpec>> tensors_of(const HParams& hp, const gguf::Metadata& meta, const std::string& source) {
  return tensors(V, hp, meta, source);
}

template <const Variant& V>
std::unique_ptr<Model> create() {
  return std::make_unique<LlamaModel>(V);
}

}  // namespace

const Architecture kLlama{"llama", tensors_of<kLlamaVariant>, create<kLlamaVariant>};
const Architecture kQwen2{"qwen2", tensors_of<kQwen2Variant>, create<kQwen2Variant>};
const Architecture kQwen3{"qwen3", tensors_of<kQwen3Variant>, create<kQwen3Variant>};
const Architecture kQwen3Moe{"qwen3moe", tensors_of<kQwen3MoeVariant>, create<kQwen3MoeVariant>};

}  // namespace tandem::model
