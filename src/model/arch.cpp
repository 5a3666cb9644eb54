// Hyperparameter keys and per-architecture tensor lists (names as llama.cpp's convert script writes them).
#include "model/arch.h"

namespace tandem::model {
namespace {

const char* const kArchitectures[] = {"llama", "qwen2", "qwen3", "gemma3"};

}  // namespace

std::string supported_architectures() {
  std::string out;
  for (const char* a : kArchitectures) out += (out.empty() ? "" : ", ") + std::string(a);
  return out;
}

bool is_supported_architecture(const std::string& arch) {
  for (const char* a : kArchitectures)
    if (arch == a) return true;
  return false;
}

Result<HParams> read_hparams(const gguf::Metadata& meta, const std::string& source) {
  HParams hp;
  const auto arch = meta.get_string("general.architecture");
  if (!arch) return corrupt("%s: no general.architecture key", source.c_str());
  hp.arch = *arch;
  const std::string p = hp.arch + ".";
  auto need = [&](const char* key, int64_t* out) -> Status {
    const gguf::Value* v = meta.find(p + key);
    // Some models store per-layer arrays (e.g. feed_forward_length); the first entry is representative.
    std::optional<int64_t> n = v ? (v->is_array() ? v->array_i64(0) : v->as_i64()) : std::nullopt;
    if (!n || *n < 0) return corrupt("%s: missing or invalid %s%s", source.c_str(), p.c_str(), key);
    *out = *n;
    return Status::ok();
  };
  auto maybe = [&](const char* key, int64_t* out) {
    const gguf::Value* v = meta.find(p + key);
    if (!v) return;
    std::optional<int64_t> n = v->is_array() ? v->array_i64(0) : v->as_i64();
    if (n && *n >= 0) *out = *n;
  };
  TANDEM_TRY(need("embedding_length", &hp.n_embd));
  TANDEM_TRY(need("block_count", &hp.n_layer));
  TANDEM_TRY(need("attention.head_count", &hp.n_head));
  maybe("context_length", &hp.n_ctx_train);
  maybe("feed_forward_length", &hp.n_ff);
  hp.n_head_kv = hp.n_head;
  maybe("attention.head_count_kv", &hp.n_head_kv);
  if (hp.n_head == 0 || (hp.n_embd % hp.n_head != 0 && !meta.find(p + "attention.key_length")))
    return corrupt("%s: %sembedding_length %lld is not divisible by head_count %lld", source.c_str(), p.c_str(),
                   (long long)hp.n_embd, (long long)hp.n_head);
  hp.head_dim_k = hp.n_head ? hp.n_embd / hp.n_head : 0;
  maybe("attention.key_length", &hp.head_dim_k);
  hp.head_dim_v = hp.head_dim_k;
  maybe("attention.value_length", &hp.head_dim_v);
  hp.n_rot = hp.head_dim_k;
  maybe("rope.dimension_count", &hp.n_rot);
  maybe("attention.sliding_window", &hp.sliding_window);
  maybe("expert_count", &hp.n_expert);
  maybe("expert_used_count", &hp.n_expert_used);
  if (auto v = meta.get_f64(p + "rope.freq_base")) hp.rope_freq_base = *v;
  if (auto v = meta.get_f64(p + "attention.layer_norm_rms_epsilon")) hp.norm_eps = *v;
  if (auto v = meta.find(p + "vocab_size"); v && v->as_i64()) hp.n_vocab = *v->as_i64();
  else if (auto t = meta.find("tokenizer.ggml.tokens"); t && t->as_array()) hp.n_vocab = int64_t(t->as_array()->count);
  return hp;
}

Result<std::vector<TensorSpec>> required_tensors(const HParams& hp) {
  if (!is_supported_architecture(hp.arch))
    return unsupported("architecture '%s' is not supported (supported: %s)", hp.arch.c_str(),
                       supported_architectures().c_str());
  const int64_t e = hp.n_embd, q = hp.n_head * hp.head_dim_k, k = hp.n_head_kv * hp.head_dim_k,
                v = hp.n_head_kv * hp.head_dim_v, ff = hp.n_ff;
  const bool gemma = hp.arch == "gemma3";
  std::vector<TensorSpec> out = {
      {"token_embd.weight", {hp.n_vocab, e}},
      {"output_norm.weight", {e}},
      // Tied to token_embd when absent (Gemma always, small Llama/Qwen models often).
      {"output.weight", {hp.n_vocab, e}, true},
  };
  for (int64_t i = 0; i < hp.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    out.push_back({b + "attn_norm.weight", {e}});
    out.push_back({b + "attn_q.weight", {q, e}});
    out.push_back({b + "attn_k.weight", {k, e}});
    out.push_back({b + "attn_v.weight", {v, e}});
    out.push_back({b + "attn_output.weight", {e, hp.n_head * hp.head_dim_v}});
    if (hp.arch == "qwen2") {
      out.push_back({b + "attn_q.bias", {q}});
      out.push_back({b + "attn_k.bias", {k}});
      out.push_back({b + "attn_v.bias", {v}});
    }
    if (hp.arch == "qwen3" || gemma) {
      out.push_back({b + "attn_q_norm.weight", {hp.head_dim_k}});
      out.push_back({b + "attn_k_norm.weight", {hp.head_dim_k}});
    }
    if (gemma) out.push_back({b + "post_attention_norm.weight", {e}});
    out.push_back({b + "ffn_norm.weight", {e}});
    out.push_back({b + "ffn_gate.weight", {ff, e}});
    out.push_back({b + "ffn_up.weight", {ff, e}});
    out.push_back({b + "ffn_down.weight", {e, ff}});
    if (gemma) out.push_back({b + "post_ffw_norm.weight", {e}});
  }
  return out;
}

}  // namespace tandem::model
